"""What the processors keep per subject and per action, and how it is laid out in the tables.

Three tables (:mod:`processors.tables`), raw bytes: keys are UTF-8 text; values of
``subject_state`` and ``seen_events`` a line of compact JSON followed by the payload's
JSON text as it is (see :func:`_pack`), values of ``schedules`` compact JSON.
An action writes at most one entry in each, and its change event goes to ``changes``: three
records per action, all in the transaction that commits the action's offset. Everything
else the events API looks up (a change by id, a request's changes, a subject's history) is
answered by the feed index, which reads ``changes`` anyway.

========================  ==============================  ======================================
table                     key                             value
========================  ==============================  ======================================
``subject_state``         :func:`subject_key`             :class:`SubjectState` (kept past
                                                          retention)
``seen_events``           ``event_id``                    :class:`SeenEvent` (kept for retention)
``schedules``             ``schedule_id``                 :class:`schemas.schedules.Schedule`
``schedules``             ``subject key`` NUL ``id``      empty: the subject's schedules
``schedules``             NUL ``failed`` NUL ``tenant``   empty: the tenant's failed jobs
                          NUL ``id``
========================  ==============================  ======================================

Schedule ids are UUIDs and subject keys never contain NUL, so the three kinds of
``schedules`` keys never collide; see :mod:`processors.schedule_commands`.

The records here are built once per action on the hot path: plain slotted dataclasses, to be
treated as read-only (a change is a new record, as :func:`dataclasses.replace` makes).

A late action is diffed against its true predecessor: the subject's state lists the
positions and event ids of its :data:`RECENT_CHANGES` newest changes (:class:`RecentChange`),
and the predecessor's payload is in its event id's :class:`SeenEvent`, kept for the
retention window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from schemas import action_contract

SUBJECT_STATE = "subject_state"
SEEN_EVENTS = "seen_events"
SCHEDULES = "schedules"
TABLE_NAMES = (SUBJECT_STATE, SEEN_EVENTS, SCHEDULES)

RECENT_CHANGES = 8
"""How many of a subject's newest changes its state remembers, for diffing late actions."""


def subject_key(tenant_id: str, subject_type: str, subject_id: str) -> str:
    """The subject's identity, also the Kafka key of its actions and change events: see
    :func:`schemas.action_contract.subject_key` (each part escaped, never ambiguous)."""
    return action_contract.subject_key(tenant_id, subject_type, subject_id)


def seen_key(event_id: str) -> bytes:
    return event_id.encode()


def schedule_key(schedule_id: str) -> bytes:
    return schedule_id.encode()


def subject_schedule_prefix(subject: str) -> bytes:
    return subject.encode() + b"\x00"


def subject_schedule_key(subject: str, schedule_id: str) -> bytes:
    return subject_schedule_prefix(subject) + schedule_id.encode()


def failed_job_prefix(tenant_id: str) -> bytes:
    return b"\x00failed\x00" + tenant_id.encode() + b"\x00"


def failed_job_key(tenant_id: str, schedule_id: str) -> bytes:
    return failed_job_prefix(tenant_id) + schedule_id.encode()


def is_schedule_record_key(key: bytes) -> bool:
    """Whether a ``schedules`` key names a schedule record (not an index entry)."""
    return b"\x00" not in key


def is_older(
    version: int | None, occurred_at: int, than_version: int | None, than_occurred_at: int
) -> bool:
    """Whether an action at (version, occurred_at) is strictly older than the other one.

    The source's version decides when both sides carry one (the occurrence time breaks a
    tie); otherwise the occurrence time alone. Equal positions are not "older": the later
    arrival wins a tie, so two actions of the same microsecond still apply in arrival order.
    """
    if version is not None and than_version is not None:
        return (version, occurred_at) < (than_version, than_occurred_at)
    return occurred_at < than_occurred_at


@dataclass(slots=True)
class Write:
    """One table entry to set; ``value`` ``None`` deletes it."""

    table: str
    key: bytes
    value: bytes | None


_NO_PAYLOAD = b"\x00"
"""After the header line: the value has no payload (``None``), as opposed to an empty one."""


def _pack(values: dict[str, Any], payload: str | None) -> bytes:
    """``values`` as one line of compact JSON, then the payload text as it is.

    The payload is JSON text already: stored after the header rather than inside it, it is
    neither escaped on the way in nor unescaped on the way out (the largest part of a value).
    """
    head = orjson.dumps(values)  # the bytes json.dumps(separators=(",", ":")) would give
    if payload is None:
        return head + b"\n" + _NO_PAYLOAD
    return head + b"\n" + payload.encode()


def _unpack(data: bytes) -> tuple[dict[str, Any], str | None]:
    head, _, tail = data.partition(b"\n")  # compact JSON has no raw newline
    values: dict[str, Any] = orjson.loads(head)
    return values, None if tail == _NO_PAYLOAD else tail.decode()


@dataclass(slots=True)
class RecentChange:
    """Where one recorded change of a subject stands in its order: a late action's
    predecessor is the newest of these older than it."""

    version: int | None
    occurred_at: int
    event_id: str


@dataclass(slots=True)
class SubjectState:
    """The current state of one subject, as of its newest applied action.

    ``payload`` is the redacted JSON text (``None`` once deleted, or while only custom
    events were seen). ``version``/``occurred_at`` are the order position of the newest
    applied action (``None`` before any create/update/delete); a no-op update advances them
    without changing ``payload``. ``sequence`` counts the change events recorded for the
    subject (late and custom ones included): the next one gets it as ``subject_sequence``.
    ``recent`` holds the positions of the subject's newest create/update/delete changes (late
    ones included), at most :data:`RECENT_CHANGES`, oldest position first.
    """

    payload: str | None
    deleted: bool
    version: int | None
    occurred_at: int | None
    sequence: int
    event_id: str | None
    change_id: str | None
    recent: tuple[RecentChange, ...] = ()

    def encode(self) -> bytes:
        return _pack(
            {
                "deleted": self.deleted,
                "version": self.version,
                "occurred_at": self.occurred_at,
                "sequence": self.sequence,
                "event_id": self.event_id,
                "change_id": self.change_id,
                "recent": [[r.version, r.occurred_at, r.event_id] for r in self.recent],
            },
            self.payload,
        )

    @classmethod
    def decode(cls, data: bytes) -> SubjectState:
        values, payload = _unpack(data)
        recent = tuple(RecentChange(*entry) for entry in values.pop("recent", ()))
        return cls(payload=payload, **values, recent=recent)

    def with_recent(self, change: RecentChange) -> tuple[RecentChange, ...]:
        """``recent`` with ``change`` added at its position, the oldest dropped past the limit."""
        entries = list(self.recent)
        at = len(entries)
        while at > 0 and is_older(
            change.version, change.occurred_at, entries[at - 1].version, entries[at - 1].occurred_at
        ):
            at -= 1
        entries.insert(at, change)
        return tuple(entries[-RECENT_CHANGES:])


@dataclass(slots=True)
class SeenEvent:
    """An event_id already processed; remembered for the retention window from ``seen_ms``.

    ``payload`` is the redacted JSON text the subject had after this action's change (for a
    create or update that changed something; ``None`` otherwise): a late action whose
    predecessor this change is gets its ``previous_payload`` from here.
    """

    seen_ms: int
    change_id: str | None
    payload: str | None = None

    def encode(self) -> bytes:
        return _pack({"seen_ms": self.seen_ms, "change_id": self.change_id}, self.payload)

    @classmethod
    def decode(cls, data: bytes) -> SeenEvent:
        values, payload = _unpack(data)
        return cls(payload=payload, **values)
