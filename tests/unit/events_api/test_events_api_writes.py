"""Generated events and key scopes, without Kafka."""

from __future__ import annotations

import json

import pytest

from events_api.access.errors import ApiKeyError
from events_api.access.keys import ApiKeyRecord, KeyScope, Role, new_key, parse_scopes
from events_api.writes import accepted_event, generated_event, request_idempotency_key
from schemas.identity import change_id
from schemas.schedules import RequestFieldError

ACTOR = {"user_id": None, "application_id": None, "api_version": "v1", "api_key_fingerprint": None}
BODY = {"subject_type": "device", "subject_id": "d-1", "code": 10001, "payload": {"v": 1}}


def generate(body: object = BODY, key: str | None = "k", tenant: str = "acme") -> dict:
    return generated_event(
        body, tenant_id=tenant, actor=ACTOR, idempotency_key=key, source="/t", now_us=5
    )


def test_an_idempotency_key_gives_the_same_ids_in_one_tenant_only() -> None:
    first, again = generate(), generate()
    assert first["event_id"] == again["event_id"]
    assert accepted_event(first)["change_id"] == change_id(first["event_id"])
    assert generate(tenant="globex")["event_id"] != first["event_id"]
    assert generate(key=None)["event_id"] != generate(key=None)["event_id"]


def test_a_generated_event_is_custom_with_the_server_time() -> None:
    action = generate()
    assert action["action"] == "custom" and action["internal"] is False
    assert action["occurred_at"] == 5 and action["event_type"] == "custom:10001"
    assert json.loads(action["payload"]) == {"v": 1}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BODY, "code": 9999}, "code"),
        ({k: v for k, v in BODY.items() if k != "code"}, "code"),
        ({**BODY, "criticality": -1}, "criticality"),
        ({**BODY, "event_type": "changefeed.schedule:create"}, "event_type"),
        ({**BODY, "subject_id": ""}, "subject_id"),
        ([1, 2], "body"),
    ],
)
def test_bad_bodies_name_the_field(body: object, field: str) -> None:
    with pytest.raises(RequestFieldError) as caught:
        generate(body)
    assert caught.value.field == field


def test_idempotency_keys_are_checked() -> None:
    assert request_idempotency_key({}, "abc") == "abc"
    for bad in ("", "a\x00", "\ud800", "x" * 201):
        with pytest.raises(RequestFieldError):
            request_idempotency_key({}, bad)
    with pytest.raises(RequestFieldError):
        request_idempotency_key({"idempotency_key": "a"}, "b")


def test_keys_stored_before_scopes_read_only() -> None:
    _, record = new_key("acme", Role.ADMIN)
    stored = json.loads(record.encode())
    del stored["scopes"]
    old = ApiKeyRecord.decode(json.dumps(stored).encode())
    assert old.allows(KeyScope.READ) and not old.allows(KeyScope.WRITE)
    _, writer = new_key("acme", Role.ADMIN, scopes=parse_scopes("read,write"))
    assert ApiKeyRecord.decode(writer.encode()).allows(KeyScope.WRITE)
    assert writer.public()["scopes"] == ["read", "write"]
    with pytest.raises(ApiKeyError):
        parse_scopes("read,admin")
    with pytest.raises(ApiKeyError):
        parse_scopes(" , ")
