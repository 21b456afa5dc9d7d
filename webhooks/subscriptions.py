"""Subscriptions: what a tenant asked to be pushed, validated once, matched per change.

A subscription belongs to the tenant of the admin key that created it and only ever matches
that tenant's changes. It selects changes by ``event_types`` (patterns with the same ``*``
wildcard as ``GET /v1/events?event_type=``; ``["*"]`` for every change) and optionally by
``subject_type``, and receives the changes created after it was created.

Signing secrets: the current one first, then previous ones until their overlap expires
(a rotation keeps the old secret valid for ``secret_overlap_s``, so receivers can switch
without losing deliveries). Secrets are held in clear only in memory; the topic record seals
them (:mod:`webhooks.sealing`) and :meth:`Subscription.public` never shows them.

Pausing: ``paused`` subscriptions receive nothing; the changes they would have received
while paused are not delivered later (the events API serves them: ``GET /v1/events`` with
``start`` at the pause). Queued failed jobs wait, and resume with the subscription. A
subscription is paused by its admin, by a receiver answering ``410 Gone``, or automatically
when its endpoint has failed without a success for ``CHANGEFEED_WEBHOOK_PAUSE_AFTER_S``;
``paused_reason`` says which.

Everything here is pure: parse, patch, match, encode.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any

from events_api.events import rfc3339_micros
from webhooks.address_guard import AddressGuard
from webhooks.errors import InvalidSubscription, TargetRefused
from webhooks.sealing import SecretSealer
from webhooks.signing import new_secret, secret_key

MAX_BODY_BYTES = 64 * 1024
MAX_EVENT_TYPES = 50
MAX_TEXT = 256
MAX_DESCRIPTION = 1024
DEFAULT_OVERLAP_S = 24 * 3600
MAX_OVERLAP_S = 7 * 24 * 3600
_ID = re.compile(r"^wh_[0-9a-f]{16}$")
_NEW_FIELDS = ("url", "event_types", "subject_type", "description")
_PATCH_FIELDS = (*_NEW_FIELDS, "paused", "rotate_secret", "secret_overlap_s")


@dataclass(frozen=True)
class SigningSecret:
    secret: str = field(repr=False)
    expires_us: int | None = None  # None: the current secret


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    tenant_id: str
    url: str
    event_types: tuple[str, ...]
    subject_type: str | None
    description: str
    secrets: tuple[SigningSecret, ...] = field(repr=False)
    created_us: int
    updated_us: int
    paused: bool = False
    paused_reason: str | None = None
    paused_us: int | None = None
    failing_since_us: int | None = None

    @cached_property
    def _patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(pattern_regex(p) for p in self.event_types)

    def matches(self, tenant_id: str, event_type: str, subject_type: str, created_us: int) -> bool:
        """Whether a change of these attributes goes to this subscription."""
        if tenant_id != self.tenant_id or created_us < self.created_us:
            return False
        if self.subject_type is not None and subject_type != self.subject_type:
            return False
        return any(p.fullmatch(event_type) for p in self._patterns)

    def signing_keys(self, now_us: int) -> list[bytes]:
        """HMAC keys to sign with now: the current secret and unexpired previous ones."""
        return [
            secret_key(s.secret)
            for s in self.secrets
            if s.expires_us is None or s.expires_us > now_us
        ]

    def public(self) -> dict[str, Any]:
        """The subscription as the API shows it: never a secret."""
        return {
            "id": self.subscription_id,
            "url": self.url,
            "event_types": list(self.event_types),
            "subject_type": self.subject_type,
            "description": self.description,
            "status": "paused" if self.paused else "active",
            "paused_reason": self.paused_reason,
            "paused_at": None if self.paused_us is None else rfc3339_micros(self.paused_us),
            "failing_since": None
            if self.failing_since_us is None
            else rfc3339_micros(self.failing_since_us),
            "previous_secret_expires_at": [
                rfc3339_micros(s.expires_us) for s in self.secrets if s.expires_us is not None
            ],
            "created_at": rfc3339_micros(self.created_us),
            "updated_at": rfc3339_micros(self.updated_us),
        }

    def paused_by(self, reason: str, now_us: int) -> Subscription:
        return replace(self, paused=True, paused_reason=reason, paused_us=now_us, updated_us=now_us)

    # -- the topic record ------------------------------------------------------------------

    def seal(self, sealer: SecretSealer) -> bytes:
        record = asdict(self)
        record["secrets"] = [
            {"sealed": sealer.seal(s.secret, self.subscription_id), "expires_us": s.expires_us}
            for s in self.secrets
        ]
        record["event_types"] = list(self.event_types)
        return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def unseal(cls, data: bytes, sealer: SecretSealer) -> Subscription:
        raw: dict[str, Any] = json.loads(data)
        sub_id = raw["subscription_id"]
        raw["secrets"] = tuple(
            SigningSecret(sealer.open(s["sealed"], sub_id), s.get("expires_us"))
            for s in raw["secrets"]
        )
        raw["event_types"] = tuple(raw["event_types"])
        return cls(**raw)


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """The ``event_type`` pattern as a regex: ``*`` matches any run, nothing else is special."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def is_subscription_id(text: str) -> bool:
    return bool(_ID.match(text))


def new_subscription(
    body: Any, tenant_id: str, guard: AddressGuard, now_us: int
) -> tuple[Subscription, str]:
    """A subscription from a ``POST /v1/webhooks`` body, and its secret (shown once)."""
    fields = _object(body, _NEW_FIELDS)
    if "url" not in fields:
        raise InvalidSubscription("url is required: the https:// (or http://) endpoint to POST to")
    if "event_types" not in fields:
        raise InvalidSubscription(
            'event_types is required: a list of event types or patterns, ["*"] for all'
        )
    secret = new_secret()
    sub = Subscription(
        subscription_id="wh_" + secrets.token_hex(8),
        tenant_id=tenant_id,
        url=_url(fields["url"], guard),
        event_types=_event_types(fields["event_types"]),
        subject_type=_optional_text("subject_type", fields.get("subject_type")),
        description=_description(fields.get("description", "")),
        secrets=(SigningSecret(secret),),
        created_us=now_us,
        updated_us=now_us,
    )
    return sub, secret


def patch_subscription(
    sub: Subscription, body: Any, guard: AddressGuard, now_us: int
) -> tuple[Subscription, str | None]:
    """``sub`` changed as a ``PATCH`` body asks, and the new secret if it was rotated."""
    fields = _object(body, _PATCH_FIELDS)
    if not fields:
        raise InvalidSubscription(f"nothing to change; accepted fields: {', '.join(_PATCH_FIELDS)}")
    changes: dict[str, Any] = {"updated_us": now_us}
    if "url" in fields:
        changes["url"] = _url(fields["url"], guard)
    if "event_types" in fields:
        changes["event_types"] = _event_types(fields["event_types"])
    if "subject_type" in fields:
        changes["subject_type"] = _optional_text("subject_type", fields["subject_type"])
    if "description" in fields:
        changes["description"] = _description(fields["description"])
    if "paused" in fields:
        paused = fields["paused"]
        if not isinstance(paused, bool):
            raise InvalidSubscription("paused must be true or false")
        if paused and not sub.paused:
            changes.update(paused=True, paused_reason="paused by an admin", paused_us=now_us)
        elif not paused:
            changes.update(paused=False, paused_reason=None, paused_us=None, failing_since_us=None)
    new: str | None = None
    overlap = fields.get("secret_overlap_s", DEFAULT_OVERLAP_S)
    if "secret_overlap_s" in fields and fields.get("rotate_secret") is not True:
        raise InvalidSubscription("secret_overlap_s goes with rotate_secret: true")
    if fields.get("rotate_secret") is True:
        if (
            isinstance(overlap, bool)
            or not isinstance(overlap, int)
            or not (0 <= overlap <= MAX_OVERLAP_S)
        ):
            raise InvalidSubscription(
                f"secret_overlap_s must be whole seconds from 0 to {MAX_OVERLAP_S}"
            )
        new = new_secret()
        kept = tuple(
            SigningSecret(
                s.secret, now_us + overlap * 1_000_000 if s.expires_us is None else s.expires_us
            )
            for s in sub.secrets
            if overlap > 0 and (s.expires_us is None or s.expires_us > now_us)
        )
        changes["secrets"] = (SigningSecret(new), *kept)
    elif "rotate_secret" in fields and fields["rotate_secret"] is not False:
        raise InvalidSubscription("rotate_secret must be true or false")
    return replace(sub, **changes), new


def _object(body: Any, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise InvalidSubscription("the request body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InvalidSubscription(f"unknown field {unknown[0]!r}; accepted: {', '.join(allowed)}")
    return body


def _url(value: Any, guard: AddressGuard) -> str:
    if not isinstance(value, str):
        raise InvalidSubscription("url must be a string")
    try:
        guard.check_url(value)
    except TargetRefused as exc:
        raise InvalidSubscription(f"url: {exc}") from exc
    return value


def _event_types(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidSubscription('event_types must be a non-empty list, such as ["invoice:*"]')
    if len(value) > MAX_EVENT_TYPES:
        raise InvalidSubscription(f"event_types takes at most {MAX_EVENT_TYPES} patterns")
    patterns = []
    for item in value:
        text = _text("event_types[]", item)
        while "**" in text:
            text = text.replace("**", "*")
        patterns.append(text)
    return tuple(dict.fromkeys(patterns))


def _optional_text(name: str, value: Any) -> str | None:
    return None if value is None else _text(name, value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidSubscription(f"{name} must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise InvalidSubscription(f"{name} must be at most {MAX_TEXT} characters")
    if any(ord(ch) < 32 or 0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise InvalidSubscription(f"{name} must not contain control characters")
    return value


def _description(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidSubscription("description must be a string")
    if len(value) > MAX_DESCRIPTION:
        raise InvalidSubscription(f"description must be at most {MAX_DESCRIPTION} characters")
    if any(0xD800 <= ord(ch) <= 0xDFFF or (ord(ch) < 32 and ch not in "\n\t") for ch in value):
        raise InvalidSubscription("description must not contain control characters")
    return value
