"""Typed errors of the events API client, one class per answer a caller handles differently.

Every error derives from :class:`ClientError` (itself a
:class:`~changefeed.errors.ChangefeedError`). An answer of the API becomes an
:class:`ApiError` subclass chosen by its status; its ``code`` and ``message`` are the
server's. Answers that mean "retry shortly" (503, 502, 504) and connection failures are
retried by the client; :class:`Unavailable` is raised only once the retry budget is spent.
"""

from __future__ import annotations

from datetime import datetime

from changefeed.errors import ChangefeedError


class ClientError(ChangefeedError):
    """Something the events API client could not do."""


class ApiError(ClientError):
    """The API answered with an error; ``status``, ``code`` and ``message`` are its answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class BadParameter(ApiError):
    """400: a parameter was refused; ``parameter`` names it when the server said which."""

    def __init__(self, status: int, code: str, message: str, parameter: str | None) -> None:
        super().__init__(status, code, message)
        self.parameter = parameter


class Unauthorized(ApiError):
    """401: no key, an unknown key or a revoked key."""


class Forbidden(ApiError):
    """403: the key may not read this (e.g. a user key asking for a subject's state)."""


class NotFound(ApiError):
    """404: no such change, request or subject for this key within retention."""


class Gone(ApiError):
    """410: the events asked for are past retention; ``horizon`` is where the feed begins."""

    def __init__(self, status: int, code: str, message: str, horizon: datetime | None) -> None:
        super().__init__(status, code, message)
        self.horizon = horizon


class Unavailable(ClientError):
    """The API kept answering "retry shortly" (or not at all) for the whole retry budget."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class CursorStoreError(ClientError):
    """A saved stream position could not be read or written."""
