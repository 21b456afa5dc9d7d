"""The root of every error changefeed raises.

Each package has its own ``errors.py`` whose classes derive from :class:`ChangefeedError`,
so a caller can catch everything of ours in one ``except`` and nothing of anyone else's.
Library errors are re-raised as ours with ``raise ... from exc``.
"""


class ChangefeedError(Exception):
    """Base class of all changefeed errors."""


class ConfigError(ChangefeedError):
    """A setting is missing or has a value that cannot be used."""


class BrokerError(ChangefeedError):
    """The local Kafka broker could not be fetched, formatted, started or reached."""


class BrokerUnreachableError(BrokerError):
    """No Kafka broker answered at the bootstrap address in time."""


class TopicError(ChangefeedError):
    """A project topic could not be created or does not match its declaration."""


class TopicMissingError(TopicError):
    """A topic the command needs does not exist (project topics: ``changefeed topics ensure``)."""
