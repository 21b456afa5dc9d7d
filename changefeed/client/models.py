"""Typed results of the events API: what a change event, a page, a poll and a subject are.

Each class is a frozen dataclass built from the API's JSON by ``from_json``; unknown fields
the server may add later are ignored, so an older client keeps working. Payloads
(``previous_payload``, ``current_payload``, patch values, field values) are JSON values
(dict, list, str, number, bool or None). Timestamps are aware UTC datetimes.

:meth:`ChangeEvent.from_record` builds the same object from a ``changes`` record decoded
with the project codec (what the Kafka deserializers hand out), so code written against the
API and code reading the topic see one type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

JsonValue = Any


def parse_time(text: str | None) -> datetime | None:
    """An aware UTC datetime from the API's RFC 3339 text (None stays None)."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Actor:
    user_id: str | None = None
    application_id: str | None = None
    api_version: str | None = None
    api_key_fingerprint: str | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any] | None) -> Actor:
        body = body or {}
        return cls(
            user_id=body.get("user_id"),
            application_id=body.get("application_id"),
            api_version=body.get("api_version"),
            api_key_fingerprint=body.get("api_key_fingerprint"),
        )


@dataclass(frozen=True, slots=True)
class SubjectRef:
    key: str
    id: str


@dataclass(frozen=True, slots=True)
class PatchOperation:
    """One RFC 6902 operation of ``payload_changes``."""

    op: str
    path: str
    value: JsonValue = None
    from_: str | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PatchOperation:
        return cls(
            op=body["op"], path=body["path"], value=body.get("value"), from_=body.get("from")
        )


@dataclass(frozen=True, slots=True)
class FieldChange:
    """A changed leaf: its value before and after."""

    old: JsonValue
    new: JsonValue


@dataclass(frozen=True, slots=True)
class Position:
    """Where the event sits on the ``changes`` topic."""

    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    change_id: str
    event_id: str
    request_id: str
    tenant_id: str
    action: str
    event_type: str
    subject_type: str
    subject_id: str
    subject_changed_at: datetime
    created_at: datetime
    subject_ref: SubjectRef | None = None
    version: int | None = None
    actor: Actor = field(default_factory=Actor)
    criticality: int = 0
    code: int = 0
    internal: bool = True
    payload_content_type: str = "application/json"
    previous_payload: JsonValue = None
    current_payload: JsonValue = None
    payload_changes: tuple[PatchOperation, ...] = ()
    field_changes: dict[str, FieldChange] = field(default_factory=dict)
    late: bool = False
    subject_sequence: int = 0
    source: str = ""
    position: Position | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ChangeEvent:
        """From an event object of the events API."""
        ref = body.get("subject_ref")
        position = body.get("position")
        changed_at = parse_time(body["subject_changed_at"])
        created_at = parse_time(body["created_at"])
        assert changed_at is not None and created_at is not None
        return cls(
            change_id=body["change_id"],
            event_id=body["event_id"],
            request_id=body["request_id"],
            tenant_id=body["tenant_id"],
            action=body["action"],
            event_type=body["event_type"],
            subject_type=body["subject_type"],
            subject_id=body["subject_id"],
            subject_changed_at=changed_at,
            created_at=created_at,
            subject_ref=SubjectRef(ref["key"], ref["id"]) if ref else None,
            version=body.get("version"),
            actor=Actor.from_json(body.get("actor")),
            criticality=body.get("criticality", 0),
            code=body.get("code", 0),
            internal=body.get("internal", True),
            payload_content_type=body.get("payload_content_type", "application/json"),
            previous_payload=body.get("previous_payload"),
            current_payload=body.get("current_payload"),
            payload_changes=tuple(
                PatchOperation.from_json(op) for op in body.get("payload_changes") or ()
            ),
            field_changes={
                pointer: FieldChange(values.get("old"), values.get("new"))
                for pointer, values in (body.get("field_changes") or {}).items()
            },
            late=body.get("late", False),
            subject_sequence=body.get("subject_sequence", 0),
            source=body.get("source", ""),
            position=Position(position["partition"], position["offset"]) if position else None,
        )

    @classmethod
    def from_record(cls, record: dict[str, Any], position: Position | None = None) -> ChangeEvent:
        """From a ``changefeed.ChangeEvent`` record decoded by the project codec."""
        from events_api.events import render_event

        rendered = render_event(record, 0, 0)
        rendered["position"] = (
            None
            if position is None
            else {"partition": position.partition, "offset": position.offset}
        )
        return cls.from_json(rendered)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of ``GET /v1/events``; ``next_cursor`` continues it."""

    events: tuple[ChangeEvent, ...]
    has_more: bool
    next_cursor: str | None
    remaining: int | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Page:
        return cls(
            events=tuple(ChangeEvent.from_json(e) for e in body.get("events", ())),
            has_more=bool(body.get("has_more")),
            next_cursor=body.get("next_cursor"),
            remaining=body.get("remaining"),
        )


@dataclass(frozen=True, slots=True)
class PollResult:
    """One answer of the long poll: ``new_change`` with events, or ``reconnect``."""

    message: str
    events: tuple[ChangeEvent, ...]
    next_cursor: str
    retry_timeout: float | None = None
    page_cursor: str | None = None
    """Asks for this same answer again (same events, same order); None from an API that
    does not give it."""

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PollResult:
        return cls(
            message=body.get("message", ""),
            events=tuple(ChangeEvent.from_json(e) for e in body.get("events", ())),
            next_cursor=body["next_cursor"],
            retry_timeout=body.get("retry_timeout"),
            page_cursor=body.get("page_cursor"),
        )


@dataclass(frozen=True, slots=True)
class SubjectState:
    """``GET /v1/subjects/{type}/{id}``: current state (admin keys) and the latest change."""

    subject_type: str
    subject_id: str
    deleted: bool
    state: JsonValue
    version: int | None
    changed_at: datetime | None
    sequence: int | None
    latest_change: ChangeEvent | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> SubjectState:
        changed_at = body.get("changed_at")
        latest = body.get("latest_change")
        return cls(
            subject_type=body["subject_type"],
            subject_id=body["subject_id"],
            deleted=bool(body.get("deleted")),
            state=body.get("state"),
            version=body.get("version"),
            changed_at=(
                changed_at
                if changed_at is None or isinstance(changed_at, datetime)
                else _changed_at(changed_at)
            ),
            sequence=body.get("sequence"),
            latest_change=ChangeEvent.from_json(latest) if latest else None,
        )


def _changed_at(value: Any) -> datetime | None:
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1_000_000, UTC)
    return parse_time(str(value))
