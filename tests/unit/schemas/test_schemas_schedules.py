"""The schedule calendar and request rules, without Kafka."""

from __future__ import annotations

from dataclasses import replace

import pytest

from schemas.schedules import (
    MAX_CATCH_UP,
    RequestFieldError,
    Schedule,
    TriggerState,
    due_occurrences,
    idempotent_id,
    occurrence_event_id,
    parse_duration,
    parse_schedule_request,
    parse_time,
)

NOW = parse_time("now", "2030-01-01T00:00:00Z")
S = 1_000_000


def request(**fields: object) -> Schedule:
    body = {"subject_type": "policy", "subject_id": "p-1", **fields}
    return parse_schedule_request(body, tenant_id="acme", schedule_id="s-1", now_us=NOW)


def test_durations_in_weeks_days_hours_minutes_seconds() -> None:
    assert parse_duration("PT30S") == 30 * S
    assert parse_duration("P1DT2H") == (24 + 2) * 3600 * S
    assert parse_duration("P2W") == 14 * 86400 * S
    assert parse_duration("PT0.5S") == S // 2
    for bad in ("P", "PT", "P1M", "P1Y", "1D", "PT1H2D", "P1DT"):
        assert parse_duration(bad) is None, bad


def test_a_one_time_schedule_fires_once_at_its_time() -> None:
    schedule = request(at="2030-01-01T00:00:05Z", payload={"a": 1})
    assert schedule.next_us == NOW + 5 * S and schedule.payload == '{"a":1}'
    assert due_occurrences(schedule, NOW + 4 * S).emit == []
    due = due_occurrences(schedule, NOW + 6 * S)
    assert due.emit == [NOW + 5 * S] and due.next_us is None and due.fired == 1


def test_every_duration_starts_one_period_from_now_and_stops_at_count() -> None:
    schedule = request(every="PT10S", count=3)
    assert schedule.next_us == NOW + 10 * S
    due = due_occurrences(schedule, NOW + 60 * S)
    assert due.emit == [NOW + 10 * S, NOW + 20 * S, NOW + 30 * S]
    assert due.next_us is None and due.skipped == 0


def test_until_is_inclusive() -> None:
    schedule = request(every="PT10S", start="2030-01-01T00:00:10Z", until="2030-01-01T00:00:30Z")
    assert due_occurrences(schedule, NOW + 100 * S).emit == [NOW + k * 10 * S for k in (1, 2, 3)]


def test_cron_is_evaluated_in_utc() -> None:
    schedule = request(every="*/15 * * * *")
    assert schedule.next_us == NOW + 15 * 60 * S
    due = due_occurrences(schedule, NOW + 46 * 60 * S)
    assert due.emit == [NOW + k * 15 * 60 * S for k in (1, 2, 3)]
    assert due.next_us == NOW + 60 * 60 * S


@pytest.mark.parametrize("every", ["PT1S", "* * * * *"])
def test_catch_up_after_downtime_is_bounded_and_counts_the_rest(every: str) -> None:
    schedule = request(every=every, start="2030-01-01T00:01:00Z")
    step = S if every == "PT1S" else 60 * S
    later = NOW + 60 * S + 1000 * step
    due = due_occurrences(schedule, later)
    assert len(due.emit) == MAX_CATCH_UP
    assert due.emit[-1] == later  # the latest ones are emitted
    assert due.skipped + len(due.emit) == due.fired == 1001
    assert due.next_us == later + step


def test_catch_up_respects_count_when_jumping() -> None:
    schedule = request(every="PT1S", start="2030-01-01T00:00:01Z", count=15)
    due = due_occurrences(schedule, NOW + 10_000 * S)
    assert due.fired == 15 and due.next_us is None
    assert len(due.emit) == MAX_CATCH_UP and due.skipped == 5


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"every": "P1M"}, "every"),
        ({"every": "PT0.1S"}, "every"),
        ({"every": "61 * * * *"}, "every"),
        ({}, "at"),
        ({"at": "2030-01-01T00:00:05"}, "at"),
        ({"at": "2029-12-31T23:00:00Z"}, "at"),
        ({"at": "2030-01-01T00:00:05Z", "count": 2}, "count"),
        ({"every": "PT1S", "count": 0}, "count"),
        ({"every": "PT1S", "count": True}, "count"),
        ({"every": "PT1S", "until": "2029-01-01T00:00:00Z"}, "until"),
        ({"every": "PT1S", "code": 9999}, "code"),
        ({"every": "PT1S", "criticality": 6}, "criticality"),
        ({"every": "PT1S", "event_type": "changefeed.schedule:create"}, "event_type"),
        ({"every": "PT1S", "subject_id": "a\x00b"}, "subject_id"),
        ({"every": "PT1S", "subject_id": "\ud800"}, "subject_id"),
        ({"every": "PT1S", "payload": float("nan")}, "payload"),
        ({"every": "PT1S", "payload": "x" * 70_000, "content_type": "text/plain"}, "payload"),
        ({"every": "PT1S", "payload": {"a": 1}, "content_type": "text/plain"}, "payload"),
        ({"every": "PT1S", "surprise": 1}, "surprise"),
    ],
)
def test_bad_requests_name_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(RequestFieldError) as caught:
        request(**fields)
    assert caught.value.field == field


def test_ids_are_deterministic_per_tenant_and_occurrence() -> None:
    assert idempotent_id("event", "acme", "k") == idempotent_id("event", "acme", "k")
    assert idempotent_id("event", "acme", "k") != idempotent_id("event", "globex", "k")
    assert occurrence_event_id("s", 1) == occurrence_event_id("s", 1) != occurrence_event_id("s", 2)


def test_a_record_survives_encoding_and_shows_blocked_when_its_subject_is_gone() -> None:
    schedule = request(every="PT10S")
    assert Schedule.decode(schedule.encode()) == schedule
    shown = schedule.public(subject_deleted=True)
    assert shown["trigger_state"] == TriggerState.BLOCKED and shown["next_event_time"] is None
    paused = replace(schedule, trigger_state=TriggerState.PAUSED.value)
    assert paused.public()["next_event_time"] is None
