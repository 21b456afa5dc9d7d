"""Redactor: sensitive values never leave in clear, yet their changes stay visible."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changefeed.errors import ConfigError
from processors.diff import diff_payloads, to_avro_changes
from schemas.masking import Redactor

SECRET = b"0123456789abcdef-test-secret"
MASK = re.compile(r"^\[REDACTED:hmac:[0-9a-f]{16}\]$")
PATHS = ["/password", "/api_key", "/card/number", "/line_items/*/card_number", "/a~1b"]


@pytest.fixture
def redactor() -> Redactor:
    return Redactor(PATHS, SECRET)


def change_event_text(redactor: Redactor, previous: Any, current: Any) -> str:
    """What a processor publishes, reduced to the parts that carry payload values."""
    previous, current = redactor.redact(previous), redactor.redact(current)
    changes = to_avro_changes(diff_payloads(previous, current))
    event = {
        "previous_payload": None if previous is None else json.dumps(previous),
        "current_payload": None if current is None else json.dumps(current),
        "payload_changes": changes.payload_changes,
        "field_changes": changes.field_changes,
    }
    return json.dumps(event, ensure_ascii=False)


def test_configured_fields_are_masked_and_others_kept(redactor: Redactor) -> None:
    document = {
        "id": 7,
        "password": "hunter2",
        "card": {"number": "4111111111111111", "expiry": "12/30"},
        "line_items": [{"sku": "A", "card_number": "5500"}, {"sku": "B"}],
        "a/b": "slash-key",
        "name": "Ada",
    }

    redacted = redactor.redact(document)

    assert MASK.match(redacted["password"])
    assert MASK.match(redacted["card"]["number"])
    assert MASK.match(redacted["line_items"][0]["card_number"])
    assert MASK.match(redacted["a/b"])
    assert redacted["card"]["expiry"] == "12/30"
    assert redacted["line_items"][0]["sku"] == "A"
    assert redacted["line_items"][1] == {"sku": "B"}
    assert (redacted["id"], redacted["name"]) == (7, "Ada")


def test_the_input_is_not_modified_and_untouched_parts_are_shared(redactor: Redactor) -> None:
    document = {"password": "hunter2", "profile": {"bio": "hi"}, "card": {"number": "4111"}}
    original = copy.deepcopy(document)

    redacted = redactor.redact(document)

    assert document == original
    assert redacted is not document
    assert redacted["profile"] is document["profile"]
    assert redacted["card"] is not document["card"]


def test_a_document_without_sensitive_keys_is_returned_as_is(redactor: Redactor) -> None:
    document = {"id": 1, "card": {"expiry": "12/30"}, "line_items": [{"sku": "A"}]}
    assert redactor.redact(document) is document
    assert redactor.redact(None) is None
    assert Redactor([], SECRET).redact({"password": "x"}) == {"password": "x"}


def test_masks_are_equal_exactly_when_values_are_equal(redactor: Redactor) -> None:
    assert redactor.mask("hunter2") == redactor.mask("hunter2")
    assert redactor.mask("hunter2") != redactor.mask("hunter3")
    assert redactor.mask({"b": 1, "a": 2}) == redactor.mask({"a": 2, "b": 1})
    assert redactor.mask(None) != redactor.mask("null")
    assert redactor.mask("1") != redactor.mask(1)


def test_the_mask_depends_on_the_secret(redactor: Redactor) -> None:
    other = Redactor(PATHS, b"another-secret-of-16+bytes")
    assert redactor.mask("hunter2") != other.mask("hunter2")


def test_whole_subtrees_and_nulls_at_a_sensitive_pointer_are_masked() -> None:
    redactor = Redactor(["/card", "/token"], SECRET)
    redacted = redactor.redact({"card": {"number": "4111", "cvc": "123"}, "token": None})
    assert MASK.match(redacted["card"])
    assert MASK.match(redacted["token"])


def test_wildcards_match_object_keys_and_merge_with_named_paths() -> None:
    redactor = Redactor(["/accounts/*/secret", "/accounts/main/pin"], SECRET)
    redacted = redactor.redact(
        {"accounts": {"main": {"secret": "s1", "pin": "1234"}, "spare": {"secret": "s2"}}}
    )
    accounts = redacted["accounts"]
    assert MASK.match(accounts["main"]["secret"])
    assert MASK.match(accounts["main"]["pin"])
    assert MASK.match(accounts["spare"]["secret"])


def test_array_indices_follow_rfc_6901() -> None:
    cards = {"cards": ["first", "second", "third"]}
    redacted = Redactor(["/cards/1"], SECRET).redact(cards)
    assert redacted["cards"][0] == "first"
    assert MASK.match(redacted["cards"][1])
    assert redacted["cards"][2] == "third"
    # A leading zero, "-", or an index past the end names no element of an array.
    for path in ("/cards/01", "/cards/-", "/cards/3", "/cards/\u0661"):
        assert Redactor([path], SECRET).redact(cards) is cards


@pytest.mark.parametrize("path", ["", "password", "/a~2", "/a~", "/~~01"])
def test_bad_pointers_are_refused_at_construction(path: str) -> None:
    with pytest.raises(ConfigError, match="redaction path"):
        Redactor([path], SECRET)


@pytest.mark.parametrize("secret", [b"", b"short", "a string, not bytes" * 2])
def test_weak_or_mistyped_secrets_are_refused(secret: Any) -> None:
    with pytest.raises(ConfigError, match="secret"):
        Redactor(PATHS, secret)


def test_api_key_fingerprints_are_stable_keyed_and_opaque(redactor: Redactor) -> None:
    key = "sk_live_51H8abcdef"
    fingerprint = redactor.fingerprint_api_key(key)
    assert re.fullmatch(r"hmac-sha256:[0-9a-f]{16}", fingerprint)
    assert redactor.fingerprint_api_key(key) == fingerprint
    assert redactor.fingerprint_api_key(key + "x") != fingerprint
    assert Redactor(PATHS, b"another-secret-of-16+bytes").fingerprint_api_key(key) != fingerprint
    assert fingerprint.removeprefix("hmac-sha256:") not in redactor.mask(key)


def test_a_changed_secret_shows_as_a_change_without_its_clear_value(redactor: Redactor) -> None:
    previous = {"id": 1, "password": "correct-horse", "card": {"number": "4111222233334444"}}
    current = {"id": 1, "password": "battery-staple", "card": {"number": "4111222233334444"}}

    diff = diff_payloads(redactor.redact(previous), redactor.redact(current))
    text = change_event_text(redactor, previous, current)

    assert list(diff.fields) == ["/password"]
    change = diff.fields["/password"]
    assert change.op == "replace"
    assert MASK.match(change.old) and MASK.match(change.new) and change.old != change.new
    for clear in ("correct-horse", "battery-staple", "4111222233334444"):
        assert clear not in text
    assert '"/password"' in text


def test_an_unchanged_secret_is_no_change(redactor: Redactor) -> None:
    previous = {"password": "correct-horse", "name": "Ada"}
    current = {"password": "correct-horse", "name": "Ada"}
    assert not diff_payloads(redactor.redact(previous), redactor.redact(current)).changed


def test_created_and_deleted_subjects_carry_no_clear_secret(redactor: Redactor) -> None:
    payload = {"api_key": "sk_live_topsecret", "line_items": [{"card_number": "5500-0000"}]}
    for previous, current in ((None, payload), (payload, None)):
        text = change_event_text(redactor, previous, current)
        assert "sk_live_topsecret" not in text
        assert "5500-0000" not in text
        assert "/api_key" in text


# Secrets are drawn distinctive ("SECRET-..."), so finding one in the output is a leak.
SECRETS = st.text(alphabet="abcdefghij0123456789", min_size=1, max_size=8).map(
    lambda text: f"SECRET-{text}"
)
PLAIN = st.one_of(st.integers(), st.booleans(), st.none(), st.sampled_from(["Ada", "x", ""]))


@st.composite
def sensitive_payloads(draw: st.DrawFn) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": draw(PLAIN)}
    if draw(st.booleans()):
        payload["password"] = draw(SECRETS)
    if draw(st.booleans()):
        payload["card"] = {"number": draw(SECRETS), "brand": draw(PLAIN)}
    payload["line_items"] = [
        {"card_number": draw(SECRETS), "qty": draw(PLAIN)} for _ in range(draw(st.integers(0, 3)))
    ]
    return payload


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.none(), sensitive_payloads()), st.one_of(st.none(), sensitive_payloads()))
def test_no_clear_secret_ever_reaches_a_change(previous: Any, current: Any) -> None:
    redactor = Redactor(PATHS, SECRET)
    text = change_event_text(redactor, previous, current)
    assert "SECRET-" not in text

    diff = diff_payloads(redactor.redact(previous), redactor.redact(current))
    old_password = (previous or {}).get("password")
    new_password = (current or {}).get("password")
    assert ("/password" in diff.fields) is (old_password != new_password)
