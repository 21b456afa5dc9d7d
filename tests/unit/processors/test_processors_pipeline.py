"""ActionPipeline without Kafka: every outcome an action can have, against in-memory tables."""

from __future__ import annotations

import json
from typing import Any

import pytest

from processors import models
from processors.dead_letters import RawRecord
from processors.pipeline import ActionPipeline, Outcome, OutcomeKind
from schemas.codec import default_codec
from schemas.identity import change_id
from schemas.masking import Redactor

SECRET = b"unit-test-secret-0123456789"
DAY_MS = 24 * 3600 * 1000
T0 = 1_700_000_000_000_000  # micros


class DictState:
    """The tables of one partition as sorted dicts; applies an outcome's writes."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[bytes, bytes]] = {name: {} for name in models.TABLE_NAMES}

    def get(self, table: str, key: bytes) -> bytes | None:
        return self.tables[table].get(key)

    def apply(self, outcome: Outcome) -> None:
        for write in outcome.writes:
            if write.value is None:
                self.tables[write.table].pop(write.key, None)
            else:
                self.tables[write.table][write.key] = write.value

    def subject(self, key: str) -> models.SubjectState:
        return models.SubjectState.decode(self.tables[models.SUBJECT_STATE][key.encode()])


class Clock:
    def __init__(self) -> None:
        self.now_us = T0 + 5_000_000

    def __call__(self) -> int:
        return self.now_us


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pipeline(clock: Clock) -> ActionPipeline:
    return ActionPipeline(
        codec=default_codec(),
        redactor=Redactor(["/password", "/cards/*/number"], SECRET),
        retention_ms=7 * DAY_MS,
        source="/test",
        clock=clock,
    )


@pytest.fixture
def state() -> DictState:
    return DictState()


_offsets = iter(range(1_000_000))


def action(
    event_id: str,
    verb: str = "update",
    payload: Any = None,
    *,
    version: int | None = None,
    occurred_at: int = T0,
    subject_id: str = "42",
    request_id: str = "req-1",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "request_id": request_id,
        "tenant_id": "acme",
        "action": verb,
        "event_type": f"expense_report:{verb}d",
        "subject_type": "expense_report",
        "subject_id": subject_id,
        "version": version,
        "occurred_at": occurred_at,
        "actor": {
            "user_id": "u1",
            "application_id": None,
            "api_version": "v1",
            "api_key_fingerprint": None,
        },
        "payload": None if payload is None else json.dumps(payload),
        **extra,
    }


def raw(
    record: dict[str, Any] | None = None, *, value: bytes | None = None, key: bytes | None = None
) -> RawRecord:
    if record is not None:
        value = default_codec().encode("changefeed.ApiAction", record)
        key = (
            key
            or models.subject_key(
                record["tenant_id"], record["subject_type"], record["subject_id"]
            ).encode()
        )
    return RawRecord("actions", 0, next(_offsets), 1, key, value, [("h", b"1")])


def run(pipeline: ActionPipeline, state: DictState, record: dict[str, Any]) -> Outcome:
    outcome = pipeline.process(raw(record), state)
    state.apply(outcome)
    return outcome


def change(outcome: Outcome) -> dict[str, Any]:
    assert outcome.value is not None
    return default_codec().decode(outcome.value, "changefeed.ChangeEvent")


def test_create_update_delete(pipeline: ActionPipeline, state: DictState) -> None:
    created = run(pipeline, state, action("e1", "create", {"a": 1, "b": "x"}, version=1))
    assert created.kind is OutcomeKind.CHANGED
    event = change(created)
    assert event["change_id"] == change_id("e1")
    assert event["previous_payload"] is None
    assert json.loads(event["current_payload"]) == {"a": 1, "b": "x"}
    assert {op["path"] for op in event["payload_changes"]} == {"/a", "/b"}
    assert event["subject_sequence"] == 0 and event["late"] is False
    assert created.key == b"acme/expense_report/42"
    headers = dict(created.headers)
    assert headers["ce_id"] == change_id("e1").encode()
    assert headers["ce_subject"] == b"acme/expense_report/42"

    updated = change(run(pipeline, state, action("e2", "update", {"a": 2, "b": "x"}, version=2)))
    assert json.loads(updated["previous_payload"]) == {"a": 1, "b": "x"}
    assert updated["payload_changes"] == [
        {"op": "replace", "path": "/a", "from": None, "value": "2"}
    ]
    assert updated["field_changes"] == {"/a": {"old": "1", "new": "2"}}
    assert updated["subject_sequence"] == 1

    deleted = change(run(pipeline, state, action("e3", "delete", version=3)))
    assert deleted["current_payload"] is None
    assert json.loads(deleted["previous_payload"]) == {"a": 2, "b": "x"}
    assert {op["op"] for op in deleted["payload_changes"]} == {"remove"}
    subject = state.subject("acme/expense_report/42")
    assert subject.deleted and subject.payload is None and subject.sequence == 3

    # an update after the delete starts from nothing again
    revived = change(run(pipeline, state, action("e4", "update", {"a": 9}, version=4)))
    assert revived["previous_payload"] is None
    assert not state.subject("acme/expense_report/42").deleted


def test_duplicate_yields_nothing(pipeline: ActionPipeline, state: DictState) -> None:
    first = run(pipeline, state, action("e1", "create", {"a": 1}))
    again = run(pipeline, state, action("e1", "create", {"a": 1}))
    assert first.kind is OutcomeKind.CHANGED
    assert again.kind is OutcomeKind.DUPLICATE and again.value is None and again.writes == []


def test_noop_update_emits_nothing_but_advances_position(
    pipeline: ActionPipeline, state: DictState
) -> None:
    run(pipeline, state, action("e1", "create", {"a": 1}, version=1))
    noop = run(pipeline, state, action("e2", "update", {"a": 1.0}, version=5))
    assert noop.kind is OutcomeKind.NOOP and noop.value is None
    assert state.subject("acme/expense_report/42").version == 5
    # the no-op id is remembered too
    assert run(pipeline, state, action("e2", "update", {"a": 7}, version=6)).kind is (
        OutcomeKind.DUPLICATE
    )
    # and an action between the create and the no-op is now late
    late = run(pipeline, state, action("e3", "update", {"a": 3}, version=3))
    assert late.kind is OutcomeKind.LATE


def test_repeated_delete_is_a_noop(pipeline: ActionPipeline, state: DictState) -> None:
    run(pipeline, state, action("e1", "create", {"a": 1}, version=1))
    run(pipeline, state, action("e2", "delete", version=2))
    assert run(pipeline, state, action("e3", "delete", version=3)).kind is OutcomeKind.NOOP


def test_late_action_is_diffed_against_its_true_predecessor(
    pipeline: ActionPipeline, state: DictState
) -> None:
    run(pipeline, state, action("e1", "create", {"n": 1}, version=1))
    run(pipeline, state, action("e3", "update", {"n": 3}, version=3))
    late = run(pipeline, state, action("e2", "update", {"n": 2}, version=2))
    assert late.kind is OutcomeKind.LATE
    event = change(late)
    assert event["late"] is True
    assert json.loads(event["previous_payload"]) == {"n": 1}
    assert json.loads(event["current_payload"]) == {"n": 2}
    assert event["field_changes"] == {"/n": {"old": "1", "new": "2"}}
    assert event["subject_sequence"] == 2
    subject = state.subject("acme/expense_report/42")
    assert json.loads(subject.payload or "") == {"n": 3}  # never rolled back
    assert subject.version == 3 and subject.sequence == 3
    # the next in-order update diffs against the current state, not the late one
    nxt = change(run(pipeline, state, action("e4", "update", {"n": 4}, version=4)))
    assert json.loads(nxt["previous_payload"]) == {"n": 3}


def test_order_falls_back_to_occurred_at(pipeline: ActionPipeline, state: DictState) -> None:
    run(pipeline, state, action("e1", "create", {"n": 1}, occurred_at=T0))
    run(pipeline, state, action("e3", "update", {"n": 3}, occurred_at=T0 + 3000))
    late = run(pipeline, state, action("e2", "update", {"n": 2}, occurred_at=T0 + 2000))
    assert late.kind is OutcomeKind.LATE
    assert json.loads(change(late)["previous_payload"]) == {"n": 1}
    # a late create that precedes everything has no predecessor
    early = run(pipeline, state, action("e0", "create", {"n": 0}, occurred_at=T0 - 1000))
    assert early.kind is OutcomeKind.LATE and change(early)["previous_payload"] is None
    assert json.loads(state.subject("acme/expense_report/42").payload or "") == {"n": 3}


def test_late_action_equal_to_its_predecessor_is_a_noop(
    pipeline: ActionPipeline, state: DictState
) -> None:
    run(pipeline, state, action("e1", "create", {"n": 1}, version=1))
    run(pipeline, state, action("e3", "update", {"n": 3}, version=3))
    assert run(pipeline, state, action("e2", "update", {"n": 1}, version=2)).kind is (
        OutcomeKind.NOOP
    )


def test_late_delete_does_not_delete(pipeline: ActionPipeline, state: DictState) -> None:
    run(pipeline, state, action("e1", "create", {"n": 1}, version=1))
    run(pipeline, state, action("e3", "update", {"n": 3}, version=3))
    late = run(pipeline, state, action("e2", "delete", version=2))
    assert late.kind is OutcomeKind.LATE
    event = change(late)
    assert event["current_payload"] is None and json.loads(event["previous_payload"]) == {"n": 1}
    assert not state.subject("acme/expense_report/42").deleted


def test_nested_and_array_diffs(pipeline: ActionPipeline, state: DictState) -> None:
    before = {"owner": {"name": "Ann", "tags": ["a", "b", "c"]}, "lines": [{"qty": 1}]}
    after = {"owner": {"name": "Bob", "tags": ["a", "x"]}, "lines": [{"qty": 1}, {"qty": 2}]}
    run(pipeline, state, action("e1", "create", before, version=1))
    event = change(run(pipeline, state, action("e2", "update", after, version=2)))
    ops = [(op["op"], op["path"], op["value"]) for op in event["payload_changes"]]
    assert ops == [
        ("replace", "/owner/name", '"Bob"'),
        ("replace", "/owner/tags/1", '"x"'),
        ("remove", "/owner/tags/2", None),
        ("add", "/lines/1", '{"qty":2}'),
    ]
    assert event["field_changes"]["/owner/tags/2"] == {"old": '"c"', "new": None}


def test_redaction_masks_values_but_shows_the_change(
    pipeline: ActionPipeline, state: DictState
) -> None:
    first = {"name": "a", "password": "hunter2", "cards": [{"number": "4111111111111111"}]}
    second = {"name": "a", "password": "correct horse", "cards": [{"number": "4111111111111111"}]}
    created = run(pipeline, state, action("e1", "create", first, version=1))
    updated = run(pipeline, state, action("e2", "update", second, version=2))
    for outcome in (created, updated):
        assert outcome.value is not None
        blob = outcome.value + b"".join(w.value or b"" for w in outcome.writes)
        for secret in (b"hunter2", b"correct horse", b"4111111111111111"):
            assert secret not in blob
    event = change(updated)
    assert [op["path"] for op in event["payload_changes"]] == ["/password"]
    old, new = (
        event["field_changes"]["/password"]["old"],
        event["field_changes"]["/password"]["new"],
    )
    assert old != new and "REDACTED" in old and "REDACTED" in new
    assert "REDACTED" in json.loads(event["current_payload"])["cards"][0]["number"]


def test_clear_api_key_in_actor_is_fingerprinted(
    pipeline: ActionPipeline, state: DictState
) -> None:
    record = action("e1", "create", {"a": 1})
    record["actor"]["api_key_fingerprint"] = "sk_live_ABCDEF1234567890"
    outcome = run(pipeline, state, record)
    assert outcome.value is not None and b"sk_live_ABCDEF1234567890" not in outcome.value
    assert change(outcome)["actor"]["api_key_fingerprint"].startswith("hmac-sha256:")
    record = action("e2", "update", {"a": 2})
    record["actor"]["api_key_fingerprint"] = "sha256:3f2a9c1e"
    assert change(run(pipeline, state, record))["actor"]["api_key_fingerprint"] == "sha256:3f2a9c1e"


def test_custom_action_passes_data_and_keeps_state(
    pipeline: ActionPipeline, state: DictState
) -> None:
    run(pipeline, state, action("e1", "create", {"a": 1}, version=1))
    custom = run(pipeline, state, action("e2", "custom", {"alarm": "hot"}, version=None))
    event = change(custom)
    assert event["previous_payload"] is None and json.loads(event["current_payload"]) == {
        "alarm": "hot"
    }
    assert event["payload_changes"] == [] and event["subject_sequence"] == 1
    subject = state.subject("acme/expense_report/42")
    assert json.loads(subject.payload or "") == {"a": 1} and subject.sequence == 2


@pytest.mark.parametrize(
    ("build", "code"),
    [
        (lambda: raw(value=b"\x00garbage", key=b"k"), "undecodable"),
        (lambda: raw(value=None, key=b"k"), "undecodable"),
        (lambda: raw(value=b"\xc3\x01" + b"\x01" * 8 + b"\x02", key=b"k"), "unknown_schema"),
        (lambda: raw(action("", "create", {"a": 1})), "invalid_field"),
        (lambda: raw(action("e1", "create", None)), "invalid_field"),
        (lambda: raw({**action("e1", "create"), "payload": "{not json"}), "invalid_field"),
        (lambda: raw({**action("e1", "create"), "payload": "[1, 2]"}), "invalid_field"),
        (lambda: raw({**action("e1", "create"), "payload": '{"x": NaN}'}), "invalid_field"),
        (lambda: raw(action("e1", "create", {"a": 1}), key=b"acme/other/1"), "invalid_field"),
        (lambda: raw(action("e1", "create", {"a": 1}, version=-1)), "invalid_field"),
        (lambda: raw(action("e1", "create", {"a": 1}, criticality=9)), "invalid_field"),
    ],
)
def test_bad_input_becomes_a_dead_letter(
    pipeline: ActionPipeline, state: DictState, build: Any, code: str
) -> None:
    record = build()
    outcome = pipeline.process(record, state)
    assert outcome.kind is OutcomeKind.DEAD_LETTER
    assert outcome.writes == []  # the event_id is not remembered
    assert outcome.value is not None
    letter = default_codec().decode(outcome.value, "changefeed.DeadLetter")
    assert letter["reason_code"] == code, letter["reason"]
    assert letter["value"] == record.value and letter["key"] == record.key
    assert (letter["topic"], letter["partition"], letter["offset"]) == (
        "actions",
        0,
        record.offset,
    )
    assert letter["headers"] == {"h": b"1"} and letter["reason"]


def test_unexpected_error_is_a_dead_letter_not_a_crash(
    pipeline: ActionPipeline, state: DictState, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr("processors.pipeline.diff_payloads", boom)
    outcome = pipeline.process(raw(action("e1", "create", {"a": 1})), state)
    assert outcome.kind is OutcomeKind.DEAD_LETTER
    assert outcome.record is not None and outcome.record["reason_code"] == "processing_error"


def test_ids_older_than_retention_count_as_unseen(
    pipeline: ActionPipeline, state: DictState, clock: Clock
) -> None:
    run(pipeline, state, action("e1", "create", {"a": 1}))
    clock.now_us += 6 * DAY_MS * 1000  # within the window: a duplicate
    assert run(pipeline, state, action("e1", "create", {"a": 1})).kind is OutcomeKind.DUPLICATE
    clock.now_us += DAY_MS * 1000 + 1000  # e1 first seen more than seven days ago
    # the subject's state outlives retention; the id is processed again if re-sent
    again = run(pipeline, state, action("e1", "update", {"a": 3}, occurred_at=T0 + 10))
    assert again.kind is OutcomeKind.CHANGED
    assert state.subject("acme/expense_report/42").sequence == 2


def test_a_change_writes_one_state_and_one_dedupe_entry(
    pipeline: ActionPipeline, state: DictState
) -> None:
    created = run(pipeline, state, action("e1", "create", {"a": 1}, version=1))
    assert sorted(write.table for write in created.writes) == sorted(
        (models.SUBJECT_STATE, models.SEEN_EVENTS)
    )
    noop = run(pipeline, state, action("e2", "update", {"a": 1}, version=2))
    assert sorted(write.table for write in noop.writes) == [
        models.SEEN_EVENTS,
        models.SUBJECT_STATE,
    ]
    assert run(pipeline, state, action("e2", "update", {"a": 1}, version=2)).writes == []


def test_late_action_finds_its_predecessor_among_recent_changes_only(
    pipeline: ActionPipeline, state: DictState
) -> None:
    limit = models.RECENT_CHANGES
    for version in range(1, limit + 3):
        run(pipeline, state, action(f"e{version}", "update", {"v": version}, version=version))
    subject = state.subject("acme/expense_report/42")
    assert [entry.version for entry in subject.recent] == list(range(3, limit + 3))
    # a late version 5 follows version 4, whose payload its dedupe entry keeps
    late = change(run(pipeline, state, action("late5", "update", {"v": 5.5}, version=5)))
    assert late["late"] and json.loads(late["previous_payload"]) == {"v": 4}
    # older than every remembered change: diffed against nothing
    oldest = change(run(pipeline, state, action("late2", "update", {"v": 2.5}, version=2)))
    assert oldest["late"] and oldest["previous_payload"] is None
