"""API keys: the key format, its digest, and the record stored for it.

Format: ``cf_<key_id>_<secret>``. ``key_id`` (16 hex digits) names the key in listings,
revocations and logs; ``secret`` is 32 random bytes, base64url. The stored record holds
``sha256:<hex>`` of the whole key and never the key: 256 random bits need no slow hash, and
a leaked record gives nothing to authenticate with. Checking a presented key compares
digests in constant time.

Roles: ``admin`` keys read their tenant's whole log; ``user`` keys are bound to one user and
read only the events that user caused.

A key's tenant is a name, as tenant ids of actions are
(:data:`schemas.action_contract.NAME_PATTERN`), so no tenant can be named that another
tenant's subject keys could be confused with.

Scopes (seed 001's separate read and create permissions): ``read`` lets a key read the feed;
``write`` lets it generate events and manage schedules (``POST /v1/events``,
``/v1/schedules``, failed jobs). A record stored before scopes existed has none written
down and reads as ``read`` only, so no existing key gains a permission by an upgrade.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from events_api.access.errors import ApiKeyError
from events_api.events import rfc3339_micros
from events_api.scope import Scope
from schemas.action_contract import MAX_ID_CHARS, is_name

PREFIX = "cf"
_KEY = re.compile(r"^cf_(?P<key_id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")
_TEXT_LIMIT = 256
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


class KeyScope(StrEnum):
    READ = "read"
    WRITE = "write"


DEFAULT_SCOPES: tuple[KeyScope, ...] = (KeyScope.READ,)


def parse_scopes(text: str) -> tuple[KeyScope, ...]:
    """``read,write`` -> the scopes, in a fixed order; unknown or empty ones are refused."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ApiKeyError("a key needs at least one scope: read, write or read,write")
    known = {scope.value for scope in KeyScope}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ApiKeyError(f"unknown scope(s) {', '.join(unknown)}; known: read, write")
    return tuple(scope for scope in KeyScope if scope.value in names)


@dataclass(frozen=True)
class ApiKeyRecord:
    """What is stored for a key: who it is for, and a digest to check it against."""

    key_id: str
    tenant_id: str
    role: Role
    user_id: str | None
    name: str
    created_at: str
    digest: str
    revoked_at: str | None = None
    scopes: tuple[KeyScope, ...] = DEFAULT_SCOPES

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows(self, scope: KeyScope) -> bool:
        return scope in self.scopes

    @property
    def scope(self) -> Scope:
        return Scope(self.tenant_id, self.user_id if self.role is Role.USER else None)

    def matches(self, key: str) -> bool:
        """Whether ``key`` is this record's key (constant time in the digest)."""
        return hmac.compare_digest(digest_of(key), self.digest)

    def revoke(self, at_us: int | None = None) -> ApiKeyRecord:
        return replace(self, revoked_at=rfc3339_micros(at_us or time.time_ns() // 1000))

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> ApiKeyRecord:
        try:
            raw: dict[str, Any] = json.loads(data)
            scopes = tuple(KeyScope(name) for name in raw.get("scopes", DEFAULT_SCOPES))
            return cls(**{**raw, "role": Role(raw["role"]), "scopes": scopes})
        except (ValueError, TypeError, KeyError) as exc:
            raise ApiKeyError(f"not an API key record: {exc}") from exc

    def public(self) -> dict[str, Any]:
        """The record for listings: everything but the digest."""
        out = asdict(self)
        del out["digest"]
        out["role"] = self.role.value
        out["scopes"] = [scope.value for scope in self.scopes]
        return out


def digest_of(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def parse_key_id(key: str) -> str | None:
    """The key id of a well-formed key, None for anything else."""
    match = _KEY.match(key)
    return match.group("key_id") if match else None


def new_key(
    tenant_id: str,
    role: Role,
    *,
    user_id: str | None = None,
    name: str = "",
    scopes: tuple[KeyScope, ...] = DEFAULT_SCOPES,
) -> tuple[str, ApiKeyRecord]:
    """A fresh key and its record. The key is returned once and must not be kept."""
    for label, value in (("tenant", tenant_id), ("user", user_id or ""), ("name", name)):
        if len(value) > _TEXT_LIMIT or any(ord(ch) < 32 for ch in value):
            raise ApiKeyError(f"{label} must be printable and at most {_TEXT_LIMIT} characters")
    if not tenant_id:
        raise ApiKeyError("a key needs a tenant")
    if not is_name(tenant_id):
        raise ApiKeyError(
            f"tenant must be 1-128 characters of letters, digits and . _ : - starting with a "
            f"letter or digit (as tenant ids of actions are), got {tenant_id!r}"
        )
    if user_id and (_SURROGATE.search(user_id) or len(user_id) > MAX_ID_CHARS):
        raise ApiKeyError("user must be valid Unicode of at most 256 characters")
    if role is Role.USER and not user_id:
        raise ApiKeyError("a user key needs --user: it reads that user's events only")
    if role is Role.ADMIN and user_id:
        raise ApiKeyError("an admin key reads the whole tenant; it takes no --user")
    key_id = secrets.token_hex(8)
    key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKeyRecord(
        key_id=key_id,
        tenant_id=tenant_id,
        role=role,
        user_id=user_id if role is Role.USER else None,
        name=name,
        created_at=rfc3339_micros(time.time_ns() // 1000),
        digest=digest_of(key),
        scopes=scopes or DEFAULT_SCOPES,
    )
    return key, record
