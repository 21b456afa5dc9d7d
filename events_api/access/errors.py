"""Errors of API key handling."""

from changefeed.errors import ChangefeedError


class ApiKeyError(ChangefeedError):
    """An API key could not be created, stored, read or revoked."""
