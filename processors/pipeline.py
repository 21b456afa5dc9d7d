"""The per-action logic of the processors, without Kafka: one record in, one outcome out.

:meth:`ActionPipeline.process` takes a raw ``actions`` record and read access to the state
of the record's partition, and returns an :class:`Outcome`: what to publish (a change event
or a dead letter) and which table entries to write. It never writes itself, so an error half
way leaves nothing behind: the caller applies :attr:`Outcome.writes` only once the whole
outcome exists, inside the transaction that also carries the published record.

Steps: decode -> validate and mask (:func:`schemas.action_contract.check_action`) -> dedupe
on event_id -> order guard -> diff -> ``ChangeEvent``. The choices, each of which users can
rely on:

* **Bad input** (undecodable bytes, an unknown writer schema, a missing or invalid field, a
  payload that is not the JSON it claims to be) becomes a dead letter with its reason. Its
  event_id is not remembered, so a corrected re-send is processed. The rules are those of
  :mod:`schemas.action_contract`, which the publisher applies too: an action it refuses is
  refused with the very reason its dead letter here would carry (the reason alone, for
  contract violations), so what changefeed's own producers accept always becomes a change.
* **Duplicates**: an event_id seen within the retention window yields nothing (its entry
  in ``seen_events`` says when it was first seen; older entries count as unseen, and the
  table drops them).
* **Order**: an action's position is its ``version`` when it and the current state both
  have one, else its ``occurred_at`` (see :func:`processors.models.is_older`). An action
  older than the current state is **late**: it never changes the current state; it is
  emitted with ``late = true``, diffed against its true predecessor (the newest recorded
  change older than it among the subject's :data:`~processors.models.RECENT_CHANGES`
  newest, its payload kept with its event id for the retention window; none if it is older
  than those or than the window), and takes a ``subject_sequence`` like any other change.
* **No-op**: an update (or a create of a subject that exists) whose redacted payload equals
  the state it follows emits nothing; a delete of a subject already deleted emits nothing.
  An in-order no-op still advances the subject's position, so older actions count as late.
* **Create** diffs against nothing (``previous_payload`` null). **Delete** emits
  ``current_payload`` null and marks the subject deleted; an update after it starts from
  nothing again. **Custom** actions carry event data, not state: they are emitted with
  ``previous_payload`` null, ``current_payload`` the data, no changes, and do not touch
  the subject's state or position (they do take a ``subject_sequence``).
* **Schedule commands**: a custom action marked ``internal`` whose event type starts with
  ``changefeed.schedule:`` is a command on the ``schedules`` table
  (:mod:`processors.schedule_commands`): deduped like any action, it yields table writes and
  no change. A scheduled occurrence comes in through :meth:`ActionPipeline.process_occurrence`
  and is processed as the custom action it is, ``late`` when the scheduler says so.
* **Secrets**: the configured paths and key names (at any depth, and ``name=value`` pairs
  in text payloads) are masked (keyed digest, see :mod:`schemas.masking`) before diffing
  and before anything is stored, so a change to a secret shows as a ``replace`` of one mask
  by another; an actor's API key that is not already a fingerprint is replaced by one. The
  publisher masks the same way (masking is idempotent); this catches other producers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from processors import models
from processors.dead_letters import (
    DEAD_LETTER_SCHEMA,
    INVALID_FIELD,
    PROCESSING_ERROR,
    DeadLetterSealer,
    RawRecord,
    dead_letter,
)
from processors.diff import diff_payloads, to_avro_changes
from processors.errors import ProcessingError
from processors.models import RecentChange, SeenEvent, SubjectState, Write
from processors.schedule_commands import apply_command
from schemas.action_contract import ContractViolation, check_action, dumps_strict, loads_strict
from schemas.cloudevents import cloudevent_headers
from schemas.errors import DecodeError, SchemaError
from schemas.identity import change_id as derive_change_id
from schemas.masking import Redactor
from schemas.schedules import COMMAND_PREFIX, is_json

log = logging.getLogger(__name__)

API_ACTION_SCHEMA = "changefeed.ApiAction"
CHANGE_EVENT_SCHEMA = "changefeed.ChangeEvent"
CHANGE_CONTENT_TYPE = "application/avro"
_STATE_ACTIONS = ("create", "update", "delete")
MAX_RECORD_BYTES = 900_000
"""Largest change event or dead letter published; below the broker's 1 MiB message limit."""


class InvalidAction(ProcessingError):
    """A decoded action breaks a rule the schema cannot express (empty id, bad payload...);
    its message is the dead letter's reason, word for word what the publisher refuses with."""

    reason_code = INVALID_FIELD


class Codec(Protocol):
    """What the pipeline needs of :class:`schemas.codec.Codec`."""

    def encode(self, name: str, record: dict[str, Any]) -> bytes: ...

    def decode(self, data: bytes, name: str, *, timestamps: Any = ...) -> dict[str, Any]: ...


class StateReader(Protocol):
    """Read access to the tables of one partition (the partition of the record)."""

    def get(self, table: str, key: bytes) -> bytes | None: ...


class OutcomeKind(StrEnum):
    CHANGED = "changed"
    LATE = "late"
    DUPLICATE = "duplicate"
    NOOP = "noop"
    DEAD_LETTER = "dead_letter"
    SCHEDULED = "scheduled"
    """A schedule command applied to the ``schedules`` table; nothing is published."""


@dataclass(slots=True)
class Outcome:
    """The result of one action: at most one record to publish and the writes to apply.

    ``key``/``value``/``headers`` form the record for ``changes`` (kinds CHANGED and LATE)
    or for ``actions.dlq`` (DEAD_LETTER); ``record`` is the same record as a dict.
    """

    kind: OutcomeKind
    key: bytes | None = None
    value: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    record: dict[str, Any] | None = None
    writes: list[Write] = field(default_factory=list)
    reason: str = ""

    @property
    def publishes_change(self) -> bool:
        return self.kind in (OutcomeKind.CHANGED, OutcomeKind.LATE)


@dataclass(slots=True)
class _Action:
    """A decoded and validated action, with the values the pipeline derives from it."""

    record: dict[str, Any]
    event_id: str
    request_id: str
    action: str
    subject: str
    version: int | None
    occurred_at: int
    payload_text: str | None
    payload: Any
    actor: dict[str, Any]

    @property
    def changes_state(self) -> bool:
        return self.action in _STATE_ACTIONS


def _wall_clock_micros() -> int:
    return time.time_ns() // 1000


class ActionPipeline:
    """Turns ``actions`` records into outcomes; holds configuration only, no state.

    ``sealer`` encrypts the original of every dead letter (see
    :mod:`processors.dead_letters`); the worker always passes one, only tests leave it out.

    ``clock`` returns wall-clock microseconds (``created_at`` of changes, when an id was first
    seen, ``failed_at`` of dead letters); tests pass a fake one.
    """

    def __init__(
        self,
        *,
        codec: Codec,
        redactor: Redactor,
        retention_ms: int,
        source: str,
        clock: Callable[[], int] = _wall_clock_micros,
        max_record_bytes: int = MAX_RECORD_BYTES,
        sealer: DeadLetterSealer | None = None,
    ) -> None:
        self.codec = codec
        self.redactor = redactor
        self.retention_ms = retention_ms
        self.source = source
        self.clock = clock
        self.max_record_bytes = max_record_bytes
        self.sealer = sealer

    def process(self, raw: RawRecord, state: StateReader) -> Outcome:
        """The outcome of ``raw``; never raises for anything wrong with the record itself."""
        now_us = self.clock()
        try:
            action = self._decode(raw)
            return self._derive(action, state, now_us)
        except InvalidAction as exc:
            return self._dead_letter(raw, INVALID_FIELD, str(exc), now_us)
        except (SchemaError, ProcessingError) as exc:
            code = getattr(exc, "reason_code", PROCESSING_ERROR)
            return self._dead_letter(raw, code, f"{type(exc).__name__}: {exc}", now_us)
        except Exception as exc:  # noqa: BLE001 - a bug on one record must not stall the partition
            log.exception("processing %s[%d]@%d failed", raw.topic, raw.partition, raw.offset)
            return self._dead_letter(raw, PROCESSING_ERROR, f"{type(exc).__name__}: {exc}", now_us)

    def process_occurrence(
        self, action: dict[str, Any], state: StateReader, *, late: bool
    ) -> Outcome:
        """The outcome of a scheduled occurrence (an ApiAction dict), ``late`` if told so.

        A rejected occurrence comes back as a DEAD_LETTER outcome, which the scheduler
        records as a failed job instead of publishing.
        """
        key = models.subject_key(
            str(action.get("tenant_id")),
            str(action.get("subject_type")),
            str(action.get("subject_id")),
        ).encode("utf-8", "surrogatepass")
        now_us = self.clock()
        raw = RawRecord(
            topic="schedules",
            partition=-1,
            offset=-1,
            timestamp_ms=now_us // 1000,
            key=key,
            value=None,
            headers=[],
        )
        try:
            value = self.codec.encode(API_ACTION_SCHEMA, action)
            raw = replace(raw, value=value)
            return self._derive(self._decode(raw), state, now_us, mark_late=late)
        except InvalidAction as exc:
            return self._dead_letter(raw, INVALID_FIELD, str(exc), now_us)
        except (SchemaError, ProcessingError) as exc:
            code = getattr(exc, "reason_code", PROCESSING_ERROR)
            return self._dead_letter(raw, code, f"{type(exc).__name__}: {exc}", now_us)
        except Exception as exc:  # noqa: BLE001 - one bad schedule must not stop the timer
            log.exception("processing an occurrence of %s failed", action.get("event_id"))
            return self._dead_letter(raw, PROCESSING_ERROR, f"{type(exc).__name__}: {exc}", now_us)

    # -- decode and validate -------------------------------------------------------------

    def _decode(self, raw: RawRecord) -> _Action:
        if raw.value is None:
            raise DecodeError("the record has no value (a tombstone)")
        record = self.codec.decode(raw.value, API_ACTION_SCHEMA, timestamps="micros")
        try:
            # The same rules, and the same reasons, as the publisher's (schemas.action_contract).
            checked = check_action(record, self.redactor)
        except ContractViolation as exc:
            raise InvalidAction(exc.reason) from None
        subject = checked.subject_key
        key = raw.key.decode("utf-8", "replace") if raw.key is not None else None
        if key != subject:
            # Per-subject order and the per-partition tables rest on every action of a subject
            # landing on one partition, which only a key naming the subject guarantees.
            raise InvalidAction(f"record key {key!r} is not the subject key {subject!r}")
        return _Action(
            record=record,
            event_id=record["event_id"],
            request_id=record["request_id"],
            action=record["action"],
            subject=subject,
            version=record.get("version"),
            occurred_at=checked.occurred_at_us,
            payload_text=checked.payload_text,
            payload=checked.payload,
            actor=checked.actor,
        )

    # -- dedupe, order guard, redact, diff -----------------------------------------------

    def _derive(
        self, action: _Action, state: StateReader, now_us: int, *, mark_late: bool = False
    ) -> Outcome:
        seen = state.get(models.SEEN_EVENTS, models.seen_key(action.event_id))
        if seen is not None and self._within_window(seen, now_us):
            return Outcome(OutcomeKind.DUPLICATE)
        if _is_schedule_command(action):
            return self._schedule_command(action, state, now_us)
        raw_state = state.get(models.SUBJECT_STATE, action.subject.encode())
        current = SubjectState.decode(raw_state) if raw_state is not None else None
        payload = action.payload
        payload_text = action.payload_text

        out_of_order = (
            action.changes_state
            and current is not None
            and current.occurred_at is not None
            and models.is_older(
                action.version, action.occurred_at, current.version, current.occurred_at
            )
        )
        late = out_of_order or mark_late
        if out_of_order:
            assert current is not None
            previous_text = self._predecessor_payload(action, current, state, now_us)
        elif action.changes_state and current is not None and not current.deleted:
            previous_text = current.payload
        else:
            previous_text = None

        if action.action == "custom":
            operations: Any = ([], {})
        else:
            previous = loads_strict(previous_text) if previous_text is not None else None
            diff = diff_payloads(previous, payload)
            if self._is_noop(action, diff.changed, previous_text, current, late):
                return self._noop(action, current, late, now_us)
            operations = to_avro_changes(diff)

        sequence = current.sequence if current is not None else 0
        cid = derive_change_id(action.event_id)
        record = self._change_event(
            action, cid, previous_text, payload_text, operations, late, sequence, now_us
        )
        value = self.codec.encode(CHANGE_EVENT_SCHEMA, record)
        if len(value) > self.max_record_bytes:
            raise ProcessingError(
                f"the change event would be {len(value)} bytes, over {self.max_record_bytes}"
            )
        new_state = self._next_state(action, current, payload_text, late, sequence, cid)
        writes = [
            Write(models.SUBJECT_STATE, action.subject.encode(), new_state.encode()),
            self._remember(action, cid, payload_text if action.changes_state else None, now_us),
        ]
        headers = cloudevent_headers(
            id=cid,
            type=record["event_type"],
            source=record["source"],
            subject=action.subject,
            time=action.occurred_at,
            content_type=CHANGE_CONTENT_TYPE,
        )
        kind = OutcomeKind.LATE if late else OutcomeKind.CHANGED
        return Outcome(kind, action.subject.encode(), value, headers, record, writes)

    def _schedule_command(self, action: _Action, state: StateReader, now_us: int) -> Outcome:
        body = action.payload
        command = action.record["event_type"][len(COMMAND_PREFIX) :]
        if isinstance(body, dict) and isinstance(body.get("schedule"), dict):
            schedule = body["schedule"]
            text = schedule.get("payload")
            if isinstance(text, str) and is_json(str(schedule.get("content_type", ""))):
                # Stored and re-emitted as it will appear in the feed: masked.
                try:
                    redacted = self.redactor.redact(loads_strict(text))
                except ContractViolation as exc:
                    raise InvalidAction(f"schedule payload: {exc.reason}") from None
                body = {**body, "schedule": {**schedule, "payload": dumps_strict(redacted)}}
        writes = apply_command(command, body, action.subject, state, now_us)
        writes.append(self._remember(action, None, None, now_us))
        return Outcome(OutcomeKind.SCHEDULED, writes=writes)

    def _within_window(self, seen: bytes, now_us: int) -> bool:
        return SeenEvent.decode(seen).seen_ms >= now_us // 1000 - self.retention_ms

    @staticmethod
    def _is_noop(
        action: _Action,
        changed: bool,
        previous_text: str | None,
        current: SubjectState | None,
        late: bool,
    ) -> bool:
        if action.action == "delete":
            return not late and current is not None and current.deleted
        return previous_text is not None and not changed

    def _noop(
        self, action: _Action, current: SubjectState | None, late: bool, now_us: int
    ) -> Outcome:
        writes = [self._remember(action, None, None, now_us)]
        if not late and current is not None:
            advanced = replace(
                current,
                version=action.version,
                occurred_at=action.occurred_at,
                event_id=action.event_id,
            )
            writes.append(Write(models.SUBJECT_STATE, action.subject.encode(), advanced.encode()))
        return Outcome(OutcomeKind.NOOP, writes=writes)

    @staticmethod
    def _remember(action: _Action, cid: str | None, payload: str | None, now_us: int) -> Write:
        seen = SeenEvent(now_us // 1000, cid, payload)
        return Write(models.SEEN_EVENTS, models.seen_key(action.event_id), seen.encode())

    def _predecessor_payload(
        self, action: _Action, current: SubjectState, state: StateReader, now_us: int
    ) -> str | None:
        """The state the subject had just before ``action``'s position (see the module doc)."""
        best: RecentChange | None = None
        for entry in current.recent:  # oldest position first
            if not models.is_older(
                entry.version, entry.occurred_at, action.version, action.occurred_at
            ):
                break
            best = entry
        if best is None:
            return None
        seen = state.get(models.SEEN_EVENTS, models.seen_key(best.event_id))
        if seen is None or not self._within_window(seen, now_us):
            return None
        return SeenEvent.decode(seen).payload

    @staticmethod
    def _next_state(
        action: _Action,
        current: SubjectState | None,
        payload_text: str | None,
        late: bool,
        sequence: int,
        cid: str,
    ) -> SubjectState:
        if not action.changes_state:
            if current is not None:
                return replace(current, sequence=sequence + 1)
            return SubjectState(None, False, None, None, sequence + 1, None, None)
        recorded = RecentChange(action.version, action.occurred_at, action.event_id)
        recent = current.with_recent(recorded) if current is not None else (recorded,)
        if current is not None and late:
            return replace(current, sequence=sequence + 1, recent=recent)
        return SubjectState(
            payload=payload_text,
            deleted=action.action == "delete",
            version=action.version,
            occurred_at=action.occurred_at,
            sequence=sequence + 1,
            event_id=action.event_id,
            change_id=cid,
            recent=recent,
        )

    def _change_event(
        self,
        action: _Action,
        cid: str,
        previous_text: str | None,
        current_text: str | None,
        operations: Any,
        late: bool,
        sequence: int,
        now_us: int,
    ) -> dict[str, Any]:
        source = action.record
        payload_changes, field_changes = operations
        return {
            "change_id": cid,
            "event_id": action.event_id,
            "request_id": action.request_id,
            "tenant_id": source["tenant_id"],
            "action": action.action,
            "event_type": source["event_type"],
            "subject_type": source["subject_type"],
            "subject_id": source["subject_id"],
            "subject_ref": source.get("subject_ref"),
            "version": action.version,
            "actor": action.actor,
            "criticality": source.get("criticality", 0),
            "code": source.get("code", 0),
            "internal": source.get("internal", True),
            "payload_content_type": source.get("payload_content_type", "application/json"),
            "previous_payload": previous_text,
            "current_payload": current_text,
            "payload_changes": payload_changes,
            "field_changes": field_changes,
            "late": late,
            "subject_sequence": sequence,
            "subject_changed_at": action.occurred_at,
            "created_at": now_us,
            "source": source.get("source") or self.source,
        }

    # -- dead letters --------------------------------------------------------------------

    def _dead_letter(self, raw: RawRecord, code: str, reason: str, now_us: int) -> Outcome:
        reason = self.redactor.redact_text(reason)
        record = dead_letter(raw, code, reason, now_us, self.sealer)
        value = self.codec.encode(DEAD_LETTER_SCHEMA, record)
        if len(value) > self.max_record_bytes:
            omitted = len(raw.value or b"")
            record.update(value=None, headers={}, sealed=None)
            record["reason"] = f"{reason} (original value of {omitted} bytes omitted: too large)"
            value = self.codec.encode(DEAD_LETTER_SCHEMA, record)
        return Outcome(OutcomeKind.DEAD_LETTER, raw.key, value, [], record, reason=record["reason"])


def _is_schedule_command(action: _Action) -> bool:
    record = action.record
    return (
        action.action == "custom"
        and record.get("internal", True) is True
        and record["event_type"].startswith(COMMAND_PREFIX)
    )
