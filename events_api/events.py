"""The JSON shape of a change event as the events API serves it.

A ``changes`` record is decoded with the project codec and rendered once, when it is
indexed: payloads and patch values, carried as JSON text in Avro, are parsed back into JSON
values; timestamps become RFC 3339 strings in UTC with microseconds; ``position`` says
where the event sits in the feed (``changes`` partition and offset). The actor's API key
only ever appears as the fingerprint the processors put there.

What is served is always strict JSON (:mod:`schemas.action_contract`): a payload text that
is not strict JSON (a lone surrogate escape, ``1e400``, ``NaN``, nesting beyond the
contract's depth: what another producer's record may carry into ``changes``) is served as
a JSON string holding the text, never as ``Infinity`` or a string no encoder can write.
:func:`event_json` gives the text the index stores and webhooks send: compact, non-ASCII
kept as UTF-8 characters.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.action_contract import ContractViolation, loads_strict

CHANGE_EVENT_SCHEMA = "changefeed.ChangeEvent"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(value: datetime | int) -> str:
    """``2024-05-01T12:00:00.000123Z`` from an aware datetime or epoch microseconds."""
    if isinstance(value, int):
        return rfc3339_micros(value)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339_micros(micros: int) -> str:
    global _last_second
    seconds, rest = divmod(micros, 1_000_000)
    second, text = _last_second
    if seconds != second:  # events in a row mostly share their second
        text = f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}"
        _last_second = (seconds, text)
    return f"{text}.{rest:06d}Z"


_last_second: tuple[int, str] = (-1, "")


def epoch_micros(value: datetime | int) -> int:
    """Epoch microseconds of a decoded ``timestamp-micros`` field."""
    if isinstance(value, int):
        return value
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_json_text(text: str | None) -> Any:
    """The JSON value of ``text``; text that is not strict JSON is kept as a string."""
    if text is None:
        return None
    try:
        return loads_strict(text)
    except ContractViolation:
        return text


def render_event(change: dict[str, Any], partition: int, offset: int) -> dict[str, Any]:
    """The API object of a decoded ``ChangeEvent`` found at ``partition``/``offset``."""
    actor = change.get("actor") or {}
    subject_ref = change.get("subject_ref")
    return {
        "change_id": change["change_id"],
        "event_id": change["event_id"],
        "request_id": change["request_id"],
        "tenant_id": change["tenant_id"],
        "action": change["action"],
        "event_type": change["event_type"],
        "subject_type": change["subject_type"],
        "subject_id": change["subject_id"],
        "subject_ref": (
            {"key": subject_ref["key"], "id": subject_ref["id"]} if subject_ref else None
        ),
        "version": change.get("version"),
        "actor": {
            "user_id": actor.get("user_id"),
            "application_id": actor.get("application_id"),
            "api_version": actor.get("api_version"),
            "api_key_fingerprint": actor.get("api_key_fingerprint"),
        },
        "criticality": change.get("criticality", 0),
        "code": change.get("code", 0),
        "internal": change.get("internal", True),
        "payload_content_type": change.get("payload_content_type", "application/json"),
        "previous_payload": parse_json_text(change.get("previous_payload")),
        "current_payload": parse_json_text(change.get("current_payload")),
        "payload_changes": [_operation(op) for op in change.get("payload_changes") or []],
        "field_changes": {
            pointer: {
                "old": parse_json_text(values.get("old")),
                "new": parse_json_text(values.get("new")),
            }
            for pointer, values in (change.get("field_changes") or {}).items()
        },
        "late": change.get("late", False),
        "subject_sequence": change.get("subject_sequence", 0),
        "subject_changed_at": rfc3339(change["subject_changed_at"]),
        "created_at": rfc3339(change["created_at"]),
        "source": change.get("source", ""),
        "position": {"partition": partition, "offset": offset},
    }


def event_json(change: dict[str, Any], partition: int, offset: int) -> str:
    """:func:`render_event` as compact JSON text (non-ASCII characters kept as they are).

    Raises ``ValueError`` (``UnicodeEncodeError`` included) when the rendering cannot be
    stored as valid Unicode: an id or a non-JSON payload text carrying a lone surrogate.
    """
    rendered = render_event(change, partition, offset)
    try:
        return orjson.dumps(rendered).decode()
    except TypeError:
        # orjson writes neither integers past 64 bits nor lone surrogates: json writes the
        # first, and leaves the second in the text, where the caller's check refuses it.
        return json.dumps(rendered, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _operation(op: dict[str, Any]) -> dict[str, Any]:
    """An RFC 6902 operation: ``from`` and ``value`` only where the operation has them."""
    rendered: dict[str, Any] = {"op": op["op"], "path": op["path"]}
    if op.get("from") is not None:
        rendered["from"] = op["from"]
    if op.get("value") is not None:
        rendered["value"] = parse_json_text(op["value"])
    return rendered
