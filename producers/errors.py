"""Errors of the publishing side; all derive from :class:`ChangefeedError`.

Two families matter to a caller: :class:`InvalidActionError` means the action itself is wrong
(a bug of the caller; it is never spooled nor retried), :class:`PublishError` means a valid
action could not be handed over (neither delivered to Kafka nor written to the spool).
"""

from changefeed.errors import ChangefeedError


class ProducerError(ChangefeedError):
    """Base class of the errors raised by ``producers``."""


class InvalidActionError(ProducerError, ValueError):
    """The action does not match the ApiAction schema or breaks the action contract.

    ``reason`` is the contract's reason (:class:`schemas.action_contract.ContractViolation`),
    the one the processors' dead letter would carry; empty for an Avro encoding error.
    """

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class PublishError(ProducerError):
    """A valid action was neither delivered to Kafka nor made durable in the spool."""


class PublishTimeoutError(PublishError):
    """No outcome within the caller's timeout; the action may still be delivered or spooled."""


class PublisherClosedError(PublishError):
    """``publish`` was called on a publisher that is closing or closed."""


class TopicMissingError(PublishError):
    """The broker answers but the ``actions`` topic does not exist (run ``topics ensure``)."""


class BrokerUnavailableError(PublishError):
    """No broker answered within the connect timeout."""


class SpoolError(ProducerError):
    """The spool could not be read or written."""


class SpoolCorruptError(SpoolError):
    """A record in the spool fails its checksum somewhere a crash cannot have torn it."""


class SpoolLockedError(SpoolError):
    """Another publisher (this process or another) already owns the spool directory."""
