"""The action contract: one set of rules, the same reason at the publisher and in the DLQ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from changefeed.config import Settings
from processors.dead_letters import RawRecord
from processors.pipeline import ActionPipeline, OutcomeKind
from producers.envelope import ActionEncoder
from producers.errors import InvalidActionError
from schemas.action_contract import (
    MAX_DEPTH,
    MAX_STATE_PAYLOAD_BYTES,
    ContractViolation,
    _loads_checked,
    check_action,
    loads_strict,
    parse_subject_key,
    subject_key,
)
from schemas.codec import default_codec

T0 = 1_700_000_000_000_000


def action(**changes: Any) -> dict[str, Any]:
    return {
        "event_id": "ev-1",
        "request_id": "req-1",
        "tenant_id": "acme",
        "action": "create",
        "event_type": "project:created",
        "subject_type": "project",
        "subject_id": "1",
        "subject_ref": None,
        "version": 1,
        "occurred_at": T0,
        "actor": {
            "user_id": "u1",
            "application_id": None,
            "api_version": "v1",
            "api_key_fingerprint": None,
        },
        "criticality": 0,
        "code": 0,
        "internal": True,
        "payload_content_type": "application/json",
        "payload": '{"name": "P"}',
        "source": "/test",
        **changes,
    }


REFUSED = {
    "lone surrogate": action(payload='{"name": "broken emoji \\ud83d"}'),
    "1e400": action(action="custom", event_type="custom:10001", payload='{"t": 1e400}'),
    "NaN": action(payload='{"t": NaN}'),
    "too deep": action(payload='{"a": ' + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "}"),
    "990 deep": action(payload='{"a": ' + "[" * 990 + "]" * 990 + "}"),
    "NUL in subject id": action(subject_id="a\x00b"),
    "NUL in event id": action(event_id="e\x00"),
    "slash in tenant": action(tenant_id="acme/x"),
    "space in subject type": action(subject_type="a b"),
    "state over budget": action(payload=json.dumps({"n": "x" * MAX_STATE_PAYLOAD_BYTES})),
    "custom over budget": action(
        action="custom", event_type="custom:10001", payload=json.dumps({"n": "x" * 920_000})
    ),
    "update without object": action(action="update", payload="[1]"),
    "negative version": action(version=-1),
}


def dead_letter_reason(record: dict[str, Any], tmp_path: Path) -> str:
    """The reason the processors dead-letter ``record`` with, written by another producer
    (straight Avro, no contract) under the key the contract would give it."""
    settings = Settings(data_dir=tmp_path)
    pipeline = ActionPipeline(
        codec=default_codec(),
        redactor=settings.redactor(),
        retention_ms=settings.retention_ms,
        source="/test",
    )
    value = default_codec().encode("changefeed.ApiAction", record)
    try:
        key = subject_key(record["tenant_id"], record["subject_type"], record["subject_id"])
    except ContractViolation:  # pragma: no cover - every name above still forms a key
        key = "x"
    outcome = pipeline.process(RawRecord("actions", 0, 7, None, key.encode(), value), _NoState())
    assert outcome.kind is OutcomeKind.DEAD_LETTER
    assert outcome.record is not None
    return str(outcome.record["reason"])


class _NoState:
    def get(self, table: str, key: bytes) -> bytes | None:
        return None


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_publisher_refuses_with_the_reason_the_processors_dead_letter_with(
    name: str, tmp_path: Path
) -> None:
    record = REFUSED[name]
    settings = Settings(data_dir=tmp_path)
    encoder = ActionEncoder("actions", default_codec(), "/test", settings.redactor())
    with pytest.raises(InvalidActionError) as refused:
        encoder.encode(record)
    # The dead letter may add that the original was too large to keep; the reason is one.
    assert dead_letter_reason(record, tmp_path).startswith(refused.value.reason)


def test_a_raw_lone_surrogate_is_refused_by_the_contract_not_the_encoder() -> None:
    with pytest.raises(ContractViolation, match="surrogate"):
        check_action(action(payload='{"name": "broken \ud83d"}'), None)


def test_an_accepted_action_becomes_a_change(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    encoder = ActionEncoder("actions", default_codec(), "/test", settings.redactor())
    out = encoder.encode(action(subject_id="a/b%2F", payload='{"name": "ok \\ud83d\\ude00"}'))
    pipeline = ActionPipeline(
        codec=default_codec(), redactor=settings.redactor(), retention_ms=60_000, source="/t"
    )
    outcome = pipeline.process(RawRecord("actions", 0, 1, None, out.key, out.value), _NoState())
    assert outcome.kind is OutcomeKind.CHANGED
    assert out.key == b"acme/project/a%2Fb%252F"


def test_subject_keys_never_collide_across_tenants() -> None:
    # The pair the issue found: tenant acme's project "x"/"project/1" vs tenant "acme/x".
    assert subject_key("acme", "x", "project/1") != "acme/x/project/1"
    assert parse_subject_key(subject_key("acme", "x", "project/1")) == ("acme", "x", "project/1")


@given(
    st.tuples(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1)),
    st.tuples(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1)),
)
@settings(max_examples=300)
def test_subject_keys_are_injective(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    assert parse_subject_key(subject_key(*a)) == a
    if a != b:
        assert subject_key(*a) != subject_key(*b)


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=20,
    )
)
@settings(max_examples=200)
def test_strict_json_accepts_only_what_strict_encoders_write(value: Any) -> None:
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError:
        text = json.dumps(value)  # NaN / Infinity: must be refused
        with pytest.raises(ContractViolation):
            loads_strict(text)
        return
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate somewhere
        with pytest.raises(ContractViolation, match="surrogate"):
            loads_strict(text)
        return
    assert loads_strict(text) == value


def test_masking_reaches_every_shape_and_is_applied_once(tmp_path: Path) -> None:
    redactor = Settings(data_dir=tmp_path).redactor()
    payload = {
        "nested": {"password": "p-nested-1"},
        "list": [{"secret": "s-list-2"}],
        "Password": "p-case-3",
        "integration": {"api_key": "k-integ-4", "apiKey": "k-camel-5"},
        "db_password": "p-suffix-6",
        "name": "kept",
    }
    checked = check_action(action(payload=json.dumps(payload)), redactor)
    for planted in ("p-nested-1", "s-list-2", "p-case-3", "k-integ-4", "k-camel-5", "p-suffix-6"):
        assert planted not in (checked.payload_text or "")
    assert checked.payload["name"] == "kept"
    again = check_action(action(payload=checked.payload_text), redactor)
    assert again.payload_text == checked.payload_text and not again.changed

    text = check_action(
        action(
            action="custom",
            event_type="custom:10001",
            payload_content_type="text/plain",
            payload="login user=bob password=hunter2-text token: t0k3n",
        ),
        redactor,
    )
    assert "hunter2-text" not in (text.payload_text or "")
    assert "t0k3n" not in (text.payload_text or "")
    assert "user=bob" in (text.payload_text or "")


def _typed(value: Any) -> Any:
    """``value`` with every type spelled out (1 and 1.0, 0.0 and -0.0 differ), key order kept."""
    if isinstance(value, dict):
        return ("object", [(key, _typed(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("array", [_typed(item) for item in value])
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


def _reading(parse: Any, text: str) -> Any:
    try:
        return ("value", _typed(parse(text, "payload")))
    except ContractViolation as exc:
        return ("refused", exc.reason)


_JSON_PIECES = [
    *'{}[]",:0123456789.eE+- \t\n\\/tfrueanl',
    "true",
    "false",
    "null",
    "NaN",
    "Infinity",
    "1e400",
    "-1e400",
    "\ufeff",
    "é",
    "\x00",
    "\x1f",
    "\ud800",
    "\udc00",
    '"\\ud83d\\ude00"',
    '"\\ud800"',
    '"\\udc00\\ud800"',
    "\\u00e9",
    "\\u0000",
    "12345678901234567890",
    "-9223372036854775809",
    "9223372036854775807",
    "0.1234567890123456789",
    '{"a":1,"a":2}',
    "[[[[[[[[[[",
    "]]]]]]]]]]",
    "1.7976931348623159e308",
    "4.9e-324",
    "-0",
    "-0.0",
]


@given(st.lists(st.sampled_from(_JSON_PIECES), max_size=30).map("".join))
@settings(max_examples=3000)
def test_strict_json_reads_every_text_as_the_standard_parser_with_the_checks(text: str) -> None:
    # loads_strict reads most texts with orjson and falls back to json with the contract's
    # checks; both must agree on every text: the same value (types, key order, the sign of
    # zero), or the same refusal with the same reason.
    assert _reading(loads_strict, text) == _reading(_loads_checked, text)


@pytest.mark.parametrize(
    "text",
    [
        "123456789012345678901234567890",  # past 64 bits: orjson would read a float
        "-9223372036854775809",
        '{"n": [18446744073709551616, 1e-7, 2.5e+16, -0.0]}',
        '{"n": [18446744073709551615, -9223372036854775808, 1e19, -9.3e18, {"m": [1e300]}]}',
        "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
        "[" * MAX_DEPTH + "]" * MAX_DEPTH,
        '{"x": NaN}',
        '{"x": 1e400}',
        '{"x": "\\ud800"}',
        '{"x": "\ud800"}',
        '{"x": 1,}',
    ],
)
def test_strict_json_edge_cases_read_as_the_standard_parser_reads_them(text: str) -> None:
    assert _reading(loads_strict, text) == _reading(_loads_checked, text)
    if text.startswith("123"):
        assert loads_strict(text) == 123456789012345678901234567890
