"""Schedule commands and firings through the pipeline, against in-memory tables."""

from __future__ import annotations

import json

import pytest
from test_processors_pipeline import DAY_MS, SECRET, DictState

from events_api.writes import schedule_command
from processors import models
from processors.dead_letters import RawRecord
from processors.pipeline import ActionPipeline, OutcomeKind
from processors.schedule_commands import MAX_FAILURES, after_failure, plan_firing, read_schedule
from processors.scheduler import occurrence_action
from schemas.codec import default_codec
from schemas.masking import Redactor
from schemas.schedules import (
    Command,
    Schedule,
    TriggerState,
    occurrence_event_id,
    parse_schedule_request,
    parse_time,
)

NOW = parse_time("now", "2030-01-01T00:00:00Z")
S = 1_000_000
ACTOR = {"user_id": None, "application_id": None, "api_version": "v1", "api_key_fingerprint": None}


class Clock:
    now_us = NOW

    def __call__(self) -> int:
        return self.now_us


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pipeline(clock: Clock) -> ActionPipeline:
    return ActionPipeline(
        codec=default_codec(),
        redactor=Redactor(["/password"], SECRET),
        retention_ms=7 * DAY_MS,
        source="/test",
        clock=clock,
    )


def new_schedule(**fields: object) -> Schedule:
    body = {"subject_type": "policy", "subject_id": "p-1", "every": "PT10S", **fields}
    return parse_schedule_request(body, tenant_id="acme", schedule_id="s-1", now_us=NOW)


def send(pipeline: ActionPipeline, state: DictState, action: dict[str, object]) -> OutcomeKind:
    key = f"{action['tenant_id']}/{action['subject_type']}/{action['subject_id']}".encode()
    raw = RawRecord("actions", 0, 0, 0, key, default_codec().encode("changefeed.ApiAction", action))
    outcome = pipeline.process(raw, state)
    state.apply(outcome)
    return outcome.kind


def command(kind: Command, schedule: Schedule, event_id: str | None = None) -> dict[str, object]:
    body = (
        {"schedule": json.loads(schedule.encode())}
        if kind is Command.CREATE
        else {"schedule_id": schedule.schedule_id}
    )
    return schedule_command(
        kind, schedule, actor=ACTOR, body=body, event_id=event_id, source="/t", now_us=NOW
    )


def test_create_stores_the_schedule_masked_indexed_and_publishes_nothing(
    pipeline: ActionPipeline,
) -> None:
    state = DictState()
    schedule = new_schedule(payload={"password": "hunter2", "n": 1})
    assert send(pipeline, state, command(Command.CREATE, schedule, "c-1")) is OutcomeKind.SCHEDULED
    stored = read_schedule(state, "s-1")
    assert stored is not None and "hunter2" not in (stored.payload or "")
    assert models.subject_schedule_key("acme/policy/p-1", "s-1") in state.tables[models.SCHEDULES]
    # The same command again is a duplicate; another create with the same id changes nothing.
    assert send(pipeline, state, command(Command.CREATE, schedule, "c-1")) is OutcomeKind.DUPLICATE
    other = new_schedule(every="PT99S")
    assert send(pipeline, state, command(Command.CREATE, other, "c-2")) is OutcomeKind.SCHEDULED
    assert read_schedule(state, "s-1") == stored


def test_pause_resume_delete(pipeline: ActionPipeline, clock: Clock) -> None:
    state = DictState()
    schedule = new_schedule()
    send(pipeline, state, command(Command.CREATE, schedule))
    send(pipeline, state, command(Command.PAUSE, schedule))
    paused = read_schedule(state, "s-1")
    assert paused is not None and paused.trigger_state == TriggerState.PAUSED
    assert plan_firing(paused, False, NOW + 100 * S) is None
    clock.now_us = NOW + 35 * S
    send(pipeline, state, command(Command.RESUME, schedule))
    resumed = read_schedule(state, "s-1")
    assert resumed is not None and resumed.trigger_state == TriggerState.NORMAL
    assert resumed.next_us == NOW + 40 * S and resumed.skipped == 3  # missed while paused
    send(pipeline, state, command(Command.DELETE, schedule))
    deleted = read_schedule(state, "s-1")
    assert deleted is not None and deleted.trigger_state == TriggerState.NONE
    assert (
        models.subject_schedule_key("acme/policy/p-1", "s-1") not in state.tables[models.SCHEDULES]
    )


def test_a_command_aimed_at_another_subject_is_a_dead_letter(pipeline: ActionPipeline) -> None:
    state = DictState()
    schedule = new_schedule()
    send(pipeline, state, command(Command.CREATE, schedule))
    wrong = {**command(Command.PAUSE, schedule), "subject_id": "p-2"}
    assert send(pipeline, state, wrong) is OutcomeKind.DEAD_LETTER
    assert read_schedule(state, "s-1").trigger_state == TriggerState.NORMAL  # type: ignore[union-attr]


def test_clients_cannot_forge_commands(pipeline: ActionPipeline) -> None:
    state = DictState()
    forged = {**command(Command.CREATE, new_schedule()), "internal": False}
    assert send(pipeline, state, forged) is OutcomeKind.CHANGED  # just a custom event
    assert read_schedule(state, "s-1") is None


def test_an_occurrence_is_a_custom_change_once_and_late_when_told(
    pipeline: ActionPipeline,
) -> None:
    state = DictState()
    schedule = new_schedule(payload={"n": 1})
    action = occurrence_action(schedule, NOW + 10 * S)
    assert action["event_id"] == occurrence_event_id("s-1", NOW + 10 * S)
    first = pipeline.process_occurrence(action, state, late=True)
    assert first.kind is OutcomeKind.LATE and first.record is not None
    assert first.record["late"] is True and first.record["subject_changed_at"] == NOW + 10 * S
    state.apply(first)
    again = pipeline.process_occurrence(action, state, late=False)
    assert again.kind is OutcomeKind.DUPLICATE


def test_a_deleted_subject_blocks_and_a_rejection_becomes_a_failed_job() -> None:
    schedule = new_schedule()
    due = NOW + 10 * S
    blocked = plan_firing(schedule, True, due)
    assert blocked is not None and blocked.emit == []
    assert blocked.after.trigger_state == TriggerState.BLOCKED
    plan = plan_firing(schedule, False, due)
    assert plan is not None and plan.emit == [(due, False)]
    failed = after_failure(plan, 0, "rejected", due)
    assert failed.trigger_state == TriggerState.ERROR
    assert failed.failed is not None and failed.failed.state == "queued"
    for count in range(2, MAX_FAILURES + 1):
        assert failed.failed is not None and failed.failed.retry_at_us is not None
        retry = plan_firing(failed, False, failed.failed.retry_at_us)
        assert retry is not None and retry.emit[0][0] == due
        failed = after_failure(retry, 0, "rejected", failed.failed.retry_at_us)
        assert failed.failed is not None and failed.failed.failure_count == count
    assert failed.failed is not None and failed.failed.state == "quit"
    assert plan_firing(failed, False, NOW + 10_000 * S) is None  # quit: waits for a person
