"""Errors raised while deriving changes from API actions.

Everything here derives from :class:`ProcessingError`, itself a
:class:`~changefeed.errors.ChangefeedError`, so a processor can route any failure of ours
for one action (to the dead-letter topic, say) without catching unrelated exceptions.
"""

from changefeed.errors import ChangefeedError


class ProcessingError(ChangefeedError):
    """An action could not be turned into a change event."""
