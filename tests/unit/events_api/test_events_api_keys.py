"""API keys: format, digest-only storage, roles, and the check of a presented key."""

from __future__ import annotations

import asyncio
import json

import pytest

from events_api.access.errors import ApiKeyError
from events_api.access.keyring import KeyRing
from events_api.access.keys import ApiKeyRecord, Role, digest_of, new_key, parse_key_id
from events_api.errors import Unauthorized, Unavailable
from events_api.scope import Scope


def test_a_key_is_shown_once_and_stored_as_a_digest_only() -> None:
    key, record = new_key("acme", Role.ADMIN, name="ops")
    secret = key.rsplit("_", 1)[1]
    stored = record.encode()
    assert key.encode() not in stored and secret.encode() not in stored
    assert secret[:12].encode() not in stored
    assert json.loads(stored)["digest"] == digest_of(key)
    assert "digest" not in record.public() and key not in json.dumps(record.public())
    assert ApiKeyRecord.decode(stored) == record


def test_key_format() -> None:
    key, record = new_key("acme", Role.ADMIN)
    assert parse_key_id(key) == record.key_id
    assert len(key) == len("cf_") + 16 + 1 + 43
    for bad in ("", "cf_", "cf_xyz_abc", key + "x", key.replace("cf_", "cx_"), key[:-1]):
        assert parse_key_id(bad) is None


def test_keys_are_unique() -> None:
    keys = {new_key("acme", Role.ADMIN)[0] for _ in range(200)}
    assert len(keys) == 200


def test_roles_decide_the_scope() -> None:
    _, admin = new_key("acme", Role.ADMIN)
    _, user = new_key("acme", Role.USER, user_id="u-1")
    assert admin.scope == Scope("acme") and admin.scope.is_admin
    assert user.scope == Scope("acme", "u-1") and not user.scope.is_admin


@pytest.mark.parametrize(
    ("role", "user", "message"),
    [
        (Role.USER, None, "needs --user"),
        (Role.ADMIN, "u-1", "takes no --user"),
    ],
)
def test_role_and_user_must_agree(role: Role, user: str | None, message: str) -> None:
    with pytest.raises(ApiKeyError, match=message):
        new_key("acme", role, user_id=user)


def test_a_tenant_is_required() -> None:
    with pytest.raises(ApiKeyError, match="tenant"):
        new_key("", Role.ADMIN)


async def test_the_ring_accepts_the_key_and_nothing_like_it() -> None:
    key, record = new_key("acme", Role.ADMIN)
    ring = KeyRing([record])
    assert await ring.authenticate(key) == record
    other_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for bad, message in [
        ("nonsense", "malformed"),
        (other_secret, "unknown API key"),
        (new_key("acme", Role.ADMIN)[0], "unknown API key"),
    ]:
        with pytest.raises(Unauthorized, match=message):
            await ring.authenticate(bad)


async def test_a_revoked_key_is_refused() -> None:
    key, record = new_key("acme", Role.ADMIN)
    ring = KeyRing([record])
    ring.apply(record.key_id, record.revoke())
    with pytest.raises(Unauthorized, match="revoked"):
        await ring.authenticate(key)


async def test_a_miss_waits_for_the_topic_once_for_all_concurrent_misses() -> None:
    key, record = new_key("acme", Role.USER, user_id="u")
    ring = KeyRing([])
    calls = 0

    async def catch_up(timeout_s: float) -> bool:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        ring.apply(record.key_id, record)  # the record written a moment ago arrives
        return True

    ring.attach(catch_up)
    results = await asyncio.gather(*(ring.authenticate(key) for _ in range(20)))
    assert all(r == record for r in results)
    assert calls == 1


async def test_while_keys_are_loading_a_miss_is_unavailable_not_unauthorized() -> None:
    key, _ = new_key("acme", Role.ADMIN)
    ring = KeyRing()

    async def never(timeout_s: float) -> bool:
        return False

    ring.attach(never)
    with pytest.raises(Unavailable):
        await ring.authenticate(key)
    ring.loaded = True
    with pytest.raises(Unauthorized):
        await ring.authenticate(key)
