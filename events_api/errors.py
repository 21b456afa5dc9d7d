"""Errors of the events API, each carrying the HTTP answer it deserves.

The HTTP layer turns an :class:`ApiError` into ``{"error": {"code", "message"}}`` with its
status (plus ``parameter`` on a 400 that is about one query parameter, and ``horizon``, the
RFC 3339 time before which events are gone, on a 410); anything else that escapes a
handler becomes a bare 500 without details. Messages are written for the API's users:
they say what was wrong and what to send instead.
"""

from __future__ import annotations

from changefeed.errors import ChangefeedError


class FeedError(ChangefeedError):
    """Something of the events API's read side failed."""


class FeedIndexError(FeedError):
    """The feed index could not be opened, read or written."""


class ApiError(FeedError):
    """A request cannot be answered as asked; ``status`` and ``code`` say how it failed."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, **details: str) -> None:
        super().__init__(message)
        self.message = message
        # Machine-readable context added to the error object (``parameter`` of a 400,
        # ``horizon`` of a 410), so clients need not parse the message.
        self.details = details


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Gone(ApiError):
    """The events asked for were older than retention and have been purged."""

    status = 410
    code = "gone"


class Unavailable(ApiError):
    """The worker cannot answer yet (starting, rebalancing); the client should retry."""

    status = 503
    code = "unavailable"
