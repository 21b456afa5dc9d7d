"""Errors of the webhooks subsystem, derived from the project's root error."""

from __future__ import annotations

from changefeed.errors import ChangefeedError


class WebhookError(ChangefeedError):
    """Something of the webhooks subsystem failed."""


class InvalidSubscription(WebhookError):
    """A subscription as asked cannot exist; the message says what to send instead."""


class TargetRefused(WebhookError):
    """The address guard refuses to connect to a target URL or address."""


class SignatureError(WebhookError):
    """A delivery's signature headers are missing, malformed, stale or do not match."""


class SealError(WebhookError):
    """A sealed secret cannot be opened (wrong deployment secret, or corrupt bytes)."""
