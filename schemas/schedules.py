"""Scheduled events (seed 002): the request's wire form, the stored record, and the calendar.

Both sides use this module: the events API validates ``POST /v1/schedules`` with
:func:`parse_schedule_request` (a :class:`RequestFieldError` names the field) and
publishes the result as a *schedule command*, a custom action on ``actions`` keyed by the
subject whose ``event_type`` starts with :data:`COMMAND_PREFIX`; the processors apply the
command to the ``schedules`` table (same partition as the subject, same transaction as the
command's offset) and fire the schedule from the worker that owns that partition.

A schedule fires either once (``at``) or repeatedly (``every``: an ISO 8601 duration such
as ``PT30S``/``P1DT2H``/``P2W``, or a five- or six-field cron expression evaluated in UTC),
from ``start`` (default: one period from now for a duration, the next match for cron),
until ``until`` (inclusive) or ``count`` occurrences, whichever comes first. Calendar
months and years are not durations here (their length varies): a cron expression says
"monthly" exactly.

Each occurrence's ``event_id`` is a UUIDv5 of the schedule id and the occurrence time
(:func:`occurrence_event_id`), so re-firing an occurrence after a crash yields the same
event, which the processors' dedupe collapses into one change.

After downtime, a schedule that missed occurrences emits at most :data:`MAX_CATCH_UP` of
them (the latest; earlier ones are counted in ``skipped``), each marked ``late``; so does any
occurrence emitted more than :data:`LATE_AFTER_US` after its time.

Trigger states follow Quartz's (Socotra's): ``NORMAL`` waiting for its next time,
``PAUSED``, ``COMPLETE`` (no occurrence left), ``ERROR`` (an emission was rejected; see
its failed job), ``BLOCKED`` (its subject is deleted), ``NONE`` (deleted: the record stays
so that ``GET /v1/schedules/{id}`` can say so).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from croniter import CroniterBadCronError, croniter

from schemas import action_contract
from schemas.action_contract import ContractViolation
from schemas.errors import SchemaError
from schemas.failed_jobs import FailedJob, rfc3339

COMMAND_PREFIX = "changefeed.schedule:"
"""Event types of schedule commands; refused from clients, who cannot set ``internal``."""
CUSTOM_CODE_MIN = 10_000
MAX_CODE = 2**31 - 1
MAX_CATCH_UP = 10
"""At most this many missed occurrences are emitted when a schedule catches up."""
LATE_AFTER_US = 5_000_000
"""An occurrence emitted more than this after its time is marked ``late``."""
MIN_PERIOD_US = 1_000_000
MAX_PAYLOAD_CHARS = 64 * 1024
MAX_TEXT = 200
JSON_CONTENT_TYPE = "application/json"
SCHEDULE_NAMESPACE = uuid.UUID("6f1f3f58-5c2a-5d55-9a43-2f0d7e0b3b11")
"""Namespace of occurrence event ids and idempotent schedule ids; never to change."""

_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d{1,6})?)S)?)?$"
)
_NAME = re.compile(r"^[a-z][a-z0-9_.:-]{0,99}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIELDS = {
    "subject_type",
    "subject_id",
    "event_type",
    "code",
    "criticality",
    "payload",
    "content_type",
    "at",
    "every",
    "start",
    "until",
    "count",
    "idempotency_key",
}


class RequestFieldError(SchemaError):
    """A schedule request (or a stored schedule) breaks a rule; ``field`` names where."""

    reason_code = "invalid_field"

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


class TriggerState(StrEnum):
    NORMAL = "NORMAL"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    ERROR = "ERROR"
    BLOCKED = "BLOCKED"
    NONE = "NONE"


class Command(StrEnum):
    CREATE = "create"
    PAUSE = "pause"
    RESUME = "resume"
    DELETE = "delete"
    RESUME_FAILED = "resume_failed"
    DELETE_FAILED = "delete_failed"


# -- time ----------------------------------------------------------------------------------


def micros_of(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def datetime_of(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def parse_time(field_name: str, value: Any) -> int:
    """An RFC 3339 timestamp with an offset (``Z`` or ``+hh:mm``), in microseconds."""
    if not isinstance(value, str) or len(value) > 64:
        raise RequestFieldError(field_name, "must be an RFC 3339 time such as 2026-01-31T12:00:00Z")
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise RequestFieldError(
            field_name, "must be an RFC 3339 time such as 2026-01-31T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise RequestFieldError(field_name, "needs a UTC offset, e.g. Z or +02:00")
    micros = micros_of(moment)
    if micros <= 0:
        raise RequestFieldError(field_name, "must be after 1970-01-01")
    return micros


def parse_duration(text: str) -> int | None:
    """An ISO 8601 duration in weeks, days, hours, minutes, seconds, in microseconds."""
    match = _DURATION.match(text)
    if match is None or text in ("P", "PT") or text.endswith("T"):
        return None
    parts = {name: float(value) for name, value in match.groupdict().items() if value}
    span = timedelta(**parts)
    return span // timedelta(microseconds=1)


# -- records -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """One schedule as the ``schedules`` table keeps it (compact JSON, see :meth:`encode`).

    ``next_us`` is the next occurrence (``None`` when none is left); ``fired`` counts the
    occurrences consumed (emitted or skipped), ``skipped`` those skipped by a bounded
    catch-up. ``payload`` is the JSON text (or plain text) each occurrence carries,
    already redacted.
    """

    schedule_id: str
    tenant_id: str
    subject_type: str
    subject_id: str
    event_type: str
    code: int
    criticality: int
    payload: str | None
    content_type: str
    at_us: int | None
    every: str | None
    start_us: int | None
    until_us: int | None
    count: int | None
    trigger_state: str
    next_us: int | None
    fired: int
    skipped: int
    created_at_us: int
    updated_at_us: int
    actor: dict[str, Any] = field(default_factory=dict)
    failed: FailedJob | None = None

    @property
    def subject_key(self) -> str:
        return action_contract.subject_key(self.tenant_id, self.subject_type, self.subject_id)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def decode(cls, data: bytes) -> Schedule:
        values = json.loads(data)
        failed = values.pop("failed", None)
        return cls(**values, failed=FailedJob(**failed) if failed else None)

    def with_state(self, state: TriggerState, now_us: int, **changes: Any) -> Schedule:
        return replace(self, trigger_state=state.value, updated_at_us=now_us, **changes)

    def public(self, *, subject_deleted: bool = False) -> dict[str, Any]:
        """The schedule as the API answers it (``BLOCKED`` as soon as its subject is gone)."""
        state = self.trigger_state
        if subject_deleted and state in (TriggerState.NORMAL, TriggerState.PAUSED):
            state = TriggerState.BLOCKED.value
        payload: Any = self.payload
        if self.payload is not None and is_json(self.content_type):
            payload = json.loads(self.payload)
        return {
            "schedule_id": self.schedule_id,
            "subject_type": self.subject_type,
            "subject_id": self.subject_id,
            "event_type": self.event_type,
            "code": self.code,
            "criticality": self.criticality,
            "content_type": self.content_type,
            "payload": payload,
            "at": None if self.at_us is None else rfc3339(self.at_us),
            "every": self.every,
            "start": None if self.start_us is None else rfc3339(self.start_us),
            "until": None if self.until_us is None else rfc3339(self.until_us),
            "count": self.count,
            "trigger_state": state,
            "next_event_time": (
                None
                if self.next_us is None or state != TriggerState.NORMAL
                else rfc3339(self.next_us)
            ),
            "occurrences_fired": self.fired,
            "occurrences_skipped": self.skipped,
            "failed_job": None if self.failed is None else self.failed.public(),
            "created_at": rfc3339(self.created_at_us),
            "updated_at": rfc3339(self.updated_at_us),
        }


# -- identities ----------------------------------------------------------------------------


def idempotent_id(kind: str, tenant_id: str, idempotency_key: str) -> str:
    """The id a request with ``idempotency_key`` gets, the same at every retry."""
    return str(uuid.uuid5(SCHEDULE_NAMESPACE, f"{kind}\x00{tenant_id}\x00{idempotency_key}"))


def occurrence_event_id(schedule_id: str, occurrence_us: int) -> str:
    """The event id of one occurrence: re-fired after a crash, it is the same event."""
    return str(uuid.uuid5(SCHEDULE_NAMESPACE, f"{schedule_id}@{occurrence_us}"))


def failed_job_id(schedule_id: str, occurrence_us: int) -> str:
    return f"schedule:{schedule_id}@{occurrence_us}"


# -- request parsing -----------------------------------------------------------------------


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON_CONTENT_TYPE or media.endswith("+json")


def check_name(field_name: str, value: Any) -> str:
    """A subject type (or tenant): the action contract's name rule."""
    try:
        return action_contract.check_name(field_name, value)
    except ContractViolation as exc:
        raise RequestFieldError(field_name, exc.reason.removeprefix(f"{field_name} ")) from None


def check_id(field_name: str, value: Any, max_chars: int = MAX_TEXT) -> str:
    """A subject id or event type: the action contract's text-id rule."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    try:
        return action_contract.check_text_id(field_name, value, max_chars)
    except ContractViolation as exc:
        raise RequestFieldError(field_name, exc.reason.removeprefix(f"{field_name} ")) from None


def check_code(value: Any) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not CUSTOM_CODE_MIN <= value <= MAX_CODE
    ):
        raise RequestFieldError(
            "code", f"must be an integer >= {CUSTOM_CODE_MIN} (lower codes are the system's)"
        )
    return value


def check_criticality(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
        raise RequestFieldError(
            "criticality", "must be an integer from 0 (not applicable) to 5 (trivial)"
        )
    return value


def payload_text(value: Any, content_type: Any) -> tuple[str | None, str]:
    """The payload as carried (JSON text, or the text itself) and its content type."""
    if content_type is None:
        content_type = JSON_CONTENT_TYPE
    if (
        not isinstance(content_type, str)
        or "/" not in content_type
        or len(content_type) > 100
        or any(ord(ch) < 32 for ch in content_type)
    ):
        raise RequestFieldError("content_type", "must be a media type such as application/json")
    if value is None:
        return None, content_type
    if is_json(content_type):
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (ValueError, TypeError, RecursionError):
            raise RequestFieldError("payload", "must be JSON without NaN or Infinity") from None
    elif isinstance(value, str):
        text = value
    else:
        raise RequestFieldError("payload", f"must be a string when content_type is {content_type}")
    if not is_json(content_type):
        try:
            action_contract.check_text_id("payload", text, MAX_PAYLOAD_CHARS)
        except ContractViolation:
            if "\x00" in text or not _is_text(text):
                raise RequestFieldError("payload", "must be valid Unicode without NUL") from None
    if len(text) > MAX_PAYLOAD_CHARS:
        raise RequestFieldError("payload", f"must be at most {MAX_PAYLOAD_CHARS} characters")
    if not _is_text(text):
        raise RequestFieldError("payload", "must be valid Unicode (no lone surrogates)")
    return text, content_type


def _is_text(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def parse_schedule_request(body: Any, *, tenant_id: str, schedule_id: str, now_us: int) -> Schedule:
    """A new schedule from a ``POST /v1/schedules`` body, or :class:`RequestFieldError`."""
    if not isinstance(body, Mapping):
        raise RequestFieldError("body", "must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise RequestFieldError(unknown[0], f"unknown field; known: {', '.join(sorted(_FIELDS))}")
    subject_type = check_name("subject_type", body.get("subject_type"))
    subject_id = check_id("subject_id", body.get("subject_id"))
    code = check_code(body.get("code", CUSTOM_CODE_MIN))
    event_type = check_id("event_type", body.get("event_type", f"custom:{code}"))
    if event_type.startswith("changefeed."):
        raise RequestFieldError("event_type", "names starting with changefeed. are reserved")
    criticality = check_criticality(body.get("criticality", 0))
    payload, content_type = payload_text(body.get("payload"), body.get("content_type"))
    at, every = body.get("at"), body.get("every")
    if (at is None) == (every is None):
        raise RequestFieldError("at", "give exactly one of at (one time) or every (recurring)")
    at_us = start_us = until_us = count = None
    if at is not None:
        for name in ("start", "until", "count"):
            if body.get(name) is not None:
                raise RequestFieldError(name, "only applies to a recurring schedule (every)")
        at_us = parse_time("at", at)
        if at_us < now_us - 60_000_000:
            raise RequestFieldError("at", "is more than a minute in the past")
    else:
        if not isinstance(every, str) or not every.strip() or len(every) > 100:
            raise RequestFieldError(
                "every", "must be an ISO 8601 duration (PT30S) or a cron expression"
            )
        period = check_every(every)
        if body.get("start") is not None:
            start_us = parse_time("start", body["start"])
        if body.get("until") is not None:
            until_us = parse_time("until", body["until"])
        raw_count = body.get("count")
        if raw_count is not None:
            if (
                isinstance(raw_count, bool)
                or not isinstance(raw_count, int)
                or not 1 <= raw_count <= 10**9
            ):
                raise RequestFieldError("count", "must be an integer from 1 to 1000000000")
            count = raw_count
        del period
    draft = Schedule(
        schedule_id=schedule_id,
        tenant_id=tenant_id,
        subject_type=subject_type,
        subject_id=subject_id,
        event_type=event_type,
        code=code,
        criticality=criticality,
        payload=payload,
        content_type=content_type,
        at_us=at_us,
        every=every,
        start_us=start_us,
        until_us=until_us,
        count=count,
        trigger_state=TriggerState.NORMAL.value,
        next_us=None,
        fired=0,
        skipped=0,
        created_at_us=now_us,
        updated_at_us=now_us,
    )
    first = first_occurrence(draft, now_us)
    if first is None:
        raise RequestFieldError("until", "leaves no occurrence: it is before the first one")
    return replace(draft, next_us=first)


def check_every(every: str) -> int | None:
    """The period of a duration (microseconds), ``None`` for a valid cron expression."""
    text = every.strip()
    if text.startswith("P"):
        period = parse_duration(text)
        if period is None:
            raise RequestFieldError(
                "every", "is not an ISO 8601 duration in W/D/H/M/S, e.g. PT30S, P1D, P1DT12H"
            )
        if period < MIN_PERIOD_US:
            raise RequestFieldError("every", "must be at least one second (PT1S)")
        return period
    try:
        if not croniter.is_valid(text):
            raise RequestFieldError(
                "every", "is neither an ISO 8601 duration nor a valid cron expression"
            )
    except (CroniterBadCronError, ValueError, KeyError):
        raise RequestFieldError("every", "is not a valid cron expression") from None
    return None


# -- the calendar --------------------------------------------------------------------------


def first_occurrence(schedule: Schedule, now_us: int) -> int | None:
    if schedule.at_us is not None:
        return schedule.at_us
    assert schedule.every is not None
    period = check_every(schedule.every)
    if schedule.start_us is not None:
        first = schedule.start_us
        if period is None:
            first = _cron_next(schedule.every, schedule.start_us - 1)
    elif period is not None:
        first = now_us + period
    else:
        first = _cron_next(schedule.every, now_us)
    return first if _allowed(schedule, first, 0) else None


def occurrence_after(schedule: Schedule, occurrence_us: int, fired: int) -> int | None:
    """The occurrence following ``occurrence_us``, ``None`` when ``until``/``count`` end it
    (``fired`` occurrences consumed so far, that one included)."""
    if schedule.at_us is not None or schedule.every is None:
        return None
    period = check_every(schedule.every)
    following = (
        occurrence_us + period if period is not None else _cron_next(schedule.every, occurrence_us)
    )
    return following if _allowed(schedule, following, fired) else None


def _allowed(schedule: Schedule, occurrence_us: int, fired: int) -> bool:
    if schedule.count is not None and fired >= schedule.count:
        return False
    return schedule.until_us is None or occurrence_us <= schedule.until_us


def _cron_next(expression: str, after_us: int) -> int:
    """The first match of ``expression`` strictly after ``after_us`` (UTC)."""
    after = datetime_of(after_us)
    moment = croniter(expression, after, ret_type=datetime).get_next(datetime)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return micros_of(moment)


@dataclass(frozen=True)
class DueOccurrences:
    """What a due schedule emits now: ``emit`` (oldest first), ``skipped`` (not emitted,
    past the catch-up bound), and the schedule's next occurrence afterwards."""

    emit: list[int]
    skipped: int
    next_us: int | None
    fired: int


def due_occurrences(schedule: Schedule, now_us: int, scan_limit: int = 1_000_000) -> DueOccurrences:
    """The occurrences of ``schedule`` due at ``now_us``: at most :data:`MAX_CATCH_UP`.

    For a duration the missed ones are counted arithmetically; for cron they are walked, at
    most ``scan_limit`` steps (a minutely cron down for two years), beyond which the walk
    jumps to ``now`` and the rest are counted as one skipped.
    """
    current = schedule.next_us
    fired = schedule.fired
    due: list[int] = []
    skipped = 0
    period = None if schedule.every is None else check_every(schedule.every)
    if (
        period is not None
        and current is not None
        and current <= now_us
        and (now_us - current) // period > MAX_CATCH_UP
    ):
        # Jump over the occurrences that the catch-up bound would drop anyway.
        jump = (now_us - current) // period - MAX_CATCH_UP + 1
        if schedule.count is not None:
            jump = min(jump, max(0, schedule.count - fired - MAX_CATCH_UP))
        if schedule.until_us is not None:
            jump = min(jump, max(0, (schedule.until_us - current) // period - MAX_CATCH_UP + 1))
        current += jump * period
        fired += jump
        skipped += jump
    steps = 0
    while current is not None and current <= now_us:
        due.append(current)
        fired += 1
        steps += 1
        if len(due) > MAX_CATCH_UP:
            due.pop(0)
            skipped += 1
        if steps >= scan_limit:
            current = occurrence_after(schedule, now_us, fired)
            skipped += 1
            break
        current = occurrence_after(schedule, current, fired)
    return DueOccurrences(due, skipped, current, fired)
