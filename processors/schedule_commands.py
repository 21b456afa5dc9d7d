"""Schedules in the processors, decided without Kafka: commands in, table writes out.

A schedule's life is written by two things, both on the partition that owns its subject,
so each write commits exactly once with what caused it:

* **Commands** (:func:`apply_command`): ``create``/``pause``/``resume``/``delete`` of a
  schedule and ``resume_failed``/``delete_failed`` of its failed job arrive as custom actions
  on ``actions`` (event type ``changefeed.schedule:<command>``, ``internal`` true, keyed by
  the subject; see :mod:`schemas.schedules`). The pipeline dedupes them like any action and
  returns these writes, which commit with the command's offset. They emit no change.
* **Firings** (:func:`plan_firing` and friends): the worker's timer
  (:mod:`processors.scheduler`) takes a due schedule, runs each occurrence through the
  pipeline as a custom action, and writes the schedule's next state, all in the
  transaction of the subject's partition.

Rules users can rely on:

* ``create`` with an id that exists changes nothing (an idempotent retry).
* ``pause`` stops a ``NORMAL`` schedule; ``resume`` restarts a ``PAUSED``, ``BLOCKED`` or
  ``ERROR`` one from the first occurrence after the resume (the ones it missed meanwhile are
  counted as skipped, not emitted) and drops its failed job.
* A schedule whose subject is deleted when it comes due turns ``BLOCKED`` and emits nothing.
* An occurrence the pipeline rejects (it would be a dead letter) turns the schedule ``ERROR``
  with a failed job for that occurrence: retried automatically after
  :data:`RETRY_DELAYS_US` (state ``queued``), and ``quit`` after :data:`MAX_FAILURES`
  failures. ``resume_failed`` retries it now; ``delete_failed`` abandons that occurrence and
  lets the schedule go on (``NORMAL``) from its next time.
* ``delete`` keeps the record as ``NONE`` (so a lookup says it was deleted) and removes it
  from its subject's list and from the failed jobs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Protocol

from processors import models
from processors.models import Write
from schemas.failed_jobs import FailedJob, FailedJobState
from schemas.schedules import (
    LATE_AFTER_US,
    Command,
    RequestFieldError,
    Schedule,
    TriggerState,
    due_occurrences,
    failed_job_id,
)

RETRY_DELAYS_US = (10_000_000, 60_000_000)
"""Delay before the automatic retry after the first and second failure."""
MAX_FAILURES = 3
"""Failures after which a failed job quits (no more automatic retries)."""


class StateReader(Protocol):
    def get(self, table: str, key: bytes) -> bytes | None: ...


class CommandError(RequestFieldError):
    """A schedule command that cannot be applied as sent (it becomes a dead letter)."""


def read_schedule(state: StateReader, schedule_id: str) -> Schedule | None:
    raw = state.get(models.SCHEDULES, models.schedule_key(schedule_id))
    return Schedule.decode(raw) if raw is not None else None


def wake_time(schedule: Schedule) -> int | None:
    """When the timer must look at ``schedule`` next (``None``: not until a command)."""
    if schedule.trigger_state == TriggerState.NORMAL:
        return schedule.next_us
    failed = schedule.failed
    if (
        schedule.trigger_state == TriggerState.ERROR
        and failed is not None
        and failed.state == FailedJobState.QUEUED
    ):
        return failed.retry_at_us
    return None


def store(schedule: Schedule) -> Write:
    return Write(models.SCHEDULES, models.schedule_key(schedule.schedule_id), schedule.encode())


def _failed_index(schedule: Schedule, present: bool) -> Write:
    key = models.failed_job_key(schedule.tenant_id, schedule.schedule_id)
    return Write(models.SCHEDULES, key, b"" if present else None)


def apply_command(
    command: str, body: Any, subject: str, state: StateReader, now_us: int
) -> list[Write]:
    """The writes of one schedule command on ``subject`` (empty: nothing to change).

    ``body`` is the command action's payload, decoded: ``{"schedule": {...}}`` for a create
    (the record as :meth:`Schedule.encode` lays it out), ``{"schedule_id": ...}`` otherwise.
    Raises :class:`CommandError` for a command that is malformed or aimed at another subject.
    """
    if not isinstance(body, dict):
        raise CommandError("payload", "a schedule command carries a JSON object")
    try:
        kind = Command(command)
    except ValueError:
        raise CommandError("event_type", f"unknown schedule command {command!r}") from None
    if kind is Command.CREATE:
        return _create(body.get("schedule"), subject, state)
    schedule_id = body.get("schedule_id")
    if not isinstance(schedule_id, str) or not schedule_id or "\x00" in schedule_id:
        raise CommandError("schedule_id", "must be a schedule id")
    schedule = read_schedule(state, schedule_id)
    if schedule is None or schedule.trigger_state == TriggerState.NONE:
        return []  # deleted or never created: nothing to do
    if schedule.subject_key != subject:
        raise CommandError("schedule_id", "names a schedule of another subject")
    changed = _command(kind, schedule, now_us)
    if changed is None:
        return []
    writes = [store(changed)]
    if (schedule.failed is None) != (changed.failed is None):
        writes.append(_failed_index(changed, changed.failed is not None))
    if kind is Command.DELETE:
        key = models.subject_schedule_key(subject, schedule_id)
        writes.append(Write(models.SCHEDULES, key, None))
    return writes


def _create(raw: Any, subject: str, state: StateReader) -> list[Write]:
    if not isinstance(raw, dict):
        raise CommandError("schedule", "a create carries the schedule record")
    try:
        schedule = Schedule.decode(json.dumps(raw).encode())
    except (TypeError, ValueError) as exc:
        raise CommandError("schedule", f"not a schedule record: {exc}") from None
    if schedule.subject_key != subject:
        raise CommandError("schedule", "the schedule's subject is not the command's key")
    if "\x00" in schedule.schedule_id or not schedule.schedule_id:
        raise CommandError("schedule_id", "must be a non-empty id without NUL")
    if read_schedule(state, schedule.schedule_id) is not None:
        return []  # an idempotent retry of a create: the first one stands
    index = models.subject_schedule_key(subject, schedule.schedule_id)
    return [store(schedule), Write(models.SCHEDULES, index, b"")]


def _command(kind: Command, schedule: Schedule, now_us: int) -> Schedule | None:
    state = schedule.trigger_state
    if kind is Command.PAUSE:
        if state != TriggerState.NORMAL:
            return None
        return schedule.with_state(TriggerState.PAUSED, now_us)
    if kind is Command.RESUME:
        if state not in (TriggerState.PAUSED, TriggerState.BLOCKED, TriggerState.ERROR):
            return None
        return restart(schedule, now_us)
    if kind is Command.DELETE:
        return schedule.with_state(TriggerState.NONE, now_us, next_us=None, failed=None)
    failed = schedule.failed
    if failed is None:
        return None
    if kind is Command.RESUME_FAILED:
        again = replace(
            failed, state=FailedJobState.QUEUED.value, retry_at_us=now_us, updated_at_us=now_us
        )
        return schedule.with_state(TriggerState.ERROR, now_us, failed=again)
    # DELETE_FAILED: the occurrence is abandoned; the schedule goes on from its next time.
    next_state = TriggerState.NORMAL if schedule.next_us is not None else TriggerState.COMPLETE
    return schedule.with_state(next_state, now_us, failed=None)


def restart(schedule: Schedule, now_us: int) -> Schedule:
    """``schedule`` running again from ``now_us``: occurrences before it are skipped."""
    due = due_occurrences(schedule, now_us) if schedule.next_us is not None else None
    if due is None:
        return schedule.with_state(TriggerState.COMPLETE, now_us, failed=None)
    skipped = schedule.skipped + due.skipped + len(due.emit)
    state = TriggerState.NORMAL if due.next_us is not None else TriggerState.COMPLETE
    return schedule.with_state(
        state, now_us, next_us=due.next_us, fired=due.fired, skipped=skipped, failed=None
    )


# -- firing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FiringPlan:
    """What to do with a due schedule: emit ``emit`` (occurrence time, late) in order, then
    store ``after``; a retry of a failed job emits its occurrence alone."""

    emit: list[tuple[int, bool]]
    after: Schedule
    retry: bool = False


@dataclass(frozen=True)
class RetryPlan(FiringPlan):
    """A retry of a failed job: remembers the job, whose count a new failure continues."""

    before_failed: FailedJob | None = None


def plan_firing(schedule: Schedule, subject_deleted: bool, now_us: int) -> FiringPlan | None:
    """The plan for ``schedule`` at ``now_us``; ``None`` when it is not due."""
    wake = wake_time(schedule)
    if wake is None or wake > now_us:
        return None
    if subject_deleted:
        return FiringPlan([], schedule.with_state(TriggerState.BLOCKED, now_us))
    if schedule.trigger_state == TriggerState.ERROR and schedule.failed is not None:
        occurrence = schedule.failed.occurrence_us
        late = now_us - occurrence > LATE_AFTER_US
        following = schedule.next_us
        state = TriggerState.NORMAL if following is not None else TriggerState.COMPLETE
        after = schedule.with_state(state, now_us, failed=None)
        return RetryPlan([(occurrence, late)], after, True, before_failed=schedule.failed)
    due = due_occurrences(schedule, now_us)
    emit = [(occurrence, now_us - occurrence > LATE_AFTER_US) for occurrence in due.emit]
    state = TriggerState.NORMAL if due.next_us is not None else TriggerState.COMPLETE
    after = schedule.with_state(
        state, now_us, next_us=due.next_us, fired=due.fired, skipped=schedule.skipped + due.skipped
    )
    return FiringPlan(emit, after)


def after_failure(plan: FiringPlan, failed_at: int, reason: str, now_us: int) -> Schedule:
    """The schedule once its emission of occurrence ``plan.emit[failed_at]`` was rejected."""
    occurrence = plan.emit[failed_at][0]
    after = plan.after
    # A retry continues the count of the job it retries (plan.after has dropped it).
    previous = plan.before_failed if isinstance(plan, RetryPlan) else None
    count = (previous.failure_count if previous is not None else 0) + 1
    quits = count >= MAX_FAILURES
    job = FailedJob(
        job_id=failed_job_id(after.schedule_id, occurrence),
        kind="schedule",
        owner_id=after.schedule_id,
        tenant_id=after.tenant_id,
        state=(FailedJobState.QUIT if quits else FailedJobState.QUEUED).value,
        failure_count=count,
        reason=reason[:500],
        occurrence_us=occurrence,
        created_at_us=previous.created_at_us if previous is not None else now_us,
        updated_at_us=now_us,
        retry_at_us=None if quits else now_us + RETRY_DELAYS_US[count - 1],
    )
    skipped = after.skipped + len(plan.emit) - failed_at - 1
    return after.with_state(TriggerState.ERROR, now_us, failed=job, skipped=skipped)


def failed_index_writes(before: Schedule, after: Schedule) -> list[Write]:
    """The failed-jobs index entry to add or remove when a firing changes ``failed``."""
    if (before.failed is None) == (after.failed is None):
        return []
    return [_failed_index(after, after.failed is not None)]
