"""A real ``changefeed worker`` against a real broker: what comes out for what goes in.

One worker serves the whole module (starting one takes seconds); each test uses its own
subjects and event ids and looks only at its own records.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from processors_harness import (
    ActionPublisher,
    TopicReader,
    WorkerProcess,
    action,
    decode_change,
    decode_dead_letter,
    read_changelog,
    wait_until,
)

from changefeed.config import BrokerSettings, Settings
from changefeed.topics import ensure_topics
from processors import models
from processors.dead_letters import DeadLetterSealer
from schemas.action_contract import subject_key
from schemas.codec import default_codec
from schemas.identity import change_id


@dataclass
class Pipeline:
    settings: Settings
    worker: WorkerProcess
    publisher: ActionPublisher
    changes: TopicReader
    dead_letters: TopicReader

    def changes_of(self, subject_id: str, count: int, timeout_s: float = 60.0) -> list[Any]:
        """The change records of one subject, once ``count`` of them have arrived."""

        def mine() -> list[Any]:
            return [r for r in self.changes.records if r.key.decode().endswith(f"/{subject_id}")]

        wait_until(
            lambda: bool(self.changes.poll() or True) and len(mine()) >= count,
            timeout_s,
            f"{count} changes of subject {subject_id}",
        )
        return mine()

    def assert_no_more_changes(self, subject_id: str, count: int) -> None:
        self.changes.settle()
        got = [r for r in self.changes.records if r.key.decode().endswith(f"/{subject_id}")]
        assert len(got) == count, [decode_change(r)["event_id"] for r in got]


@pytest.fixture(scope="module")
def pipeline(
    kafka_bootstrap: str, broker_settings: BrokerSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    unique = uuid.uuid4().hex[:10]
    base: Path = tmp_path_factory.mktemp("pipeline")
    settings = Settings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"t{unique}.",
        app_id=f"cf-{unique}",
        partitions=2,
        data_dir=base / "worker",
        broker=broker_settings,
    )
    ensure_topics(settings)
    worker = WorkerProcess(settings, base).start()
    publisher = ActionPublisher(settings)
    changes = TopicReader(settings, [settings.topic("changes")])
    dead_letters = TopicReader(settings, [settings.topic("actions.dlq")])
    try:
        worker.wait_ready()
        yield Pipeline(settings, worker, publisher, changes, dead_letters)
    finally:
        publisher.close()
        changes.close()
        dead_letters.close()
        worker.stop()


def sid() -> str:
    return uuid.uuid4().hex[:12]


def test_create_update_delete(pipeline: Pipeline) -> None:
    subject = sid()
    pipeline.publisher.publish(
        [
            action(
                f"{subject}-1",
                "create",
                {"name": "Ann", "total": 10},
                subject_id=subject,
                version=1,
            ),
            action(
                f"{subject}-2",
                "update",
                {"name": "Ann", "total": 12},
                subject_id=subject,
                version=2,
            ),
            action(f"{subject}-3", "delete", subject_id=subject, version=3),
        ]
    )
    records = pipeline.changes_of(subject, 3)
    created, updated, deleted = (decode_change(r) for r in records)
    assert [c["action"] for c in (created, updated, deleted)] == ["create", "update", "delete"]
    assert created["previous_payload"] is None
    assert json.loads(created["current_payload"]) == {"name": "Ann", "total": 10}
    assert updated["field_changes"] == {"/total": {"old": "10", "new": "12"}}
    assert updated["payload_changes"] == [
        {"op": "replace", "path": "/total", "from": None, "value": "12"}
    ]
    assert deleted["current_payload"] is None
    assert json.loads(deleted["previous_payload"]) == {"name": "Ann", "total": 12}
    assert [c["subject_sequence"] for c in (created, updated, deleted)] == [0, 1, 2]
    assert created["change_id"] == change_id(f"{subject}-1")
    # keyed by subject, one partition, in order; CloudEvents headers for routing
    assert {r.key for r in records} == {f"acme/expense_report/{subject}".encode()}
    assert len({r.partition for r in records}) == 1
    headers = dict(records[1].headers)
    assert headers["ce_id"] == updated["change_id"].encode()
    assert headers["ce_type"] == b"expense_report:updated"
    assert headers["ce_subject"] == f"acme/expense_report/{subject}".encode()
    assert headers["ce_specversion"] == b"1.0" and b"ce_time" in {k.encode() for k in headers}
    state = read_changelog(pipeline.settings, models.SUBJECT_STATE)
    final = models.SubjectState.decode(state[f"acme/expense_report/{subject}".encode()])
    assert final.deleted and final.payload is None and final.version == 3


def test_duplicates_in_one_change_out(pipeline: Pipeline) -> None:
    subject = sid()
    first = action(f"{subject}-1", "create", {"n": 1}, subject_id=subject, version=1)
    pipeline.publisher.publish([first, first])
    pipeline.publisher.publish(
        [action(f"{subject}-2", "update", {"n": 2}, subject_id=subject, version=2), first]
    )
    records = pipeline.changes_of(subject, 2)
    pipeline.assert_no_more_changes(subject, 2)
    assert [decode_change(r)["event_id"] for r in records] == [f"{subject}-1", f"{subject}-2"]
    assert pipeline.worker.metrics()["duplicates"] >= 2


def test_out_of_order_completion(pipeline: Pipeline) -> None:
    subject = sid()
    pipeline.publisher.publish(
        [
            action(f"{subject}-1", "create", {"step": 1}, subject_id=subject, version=1),
            action(f"{subject}-3", "update", {"step": 3}, subject_id=subject, version=3),
            action(f"{subject}-2", "update", {"step": 2}, subject_id=subject, version=2),
        ]
    )
    first, third, second = (decode_change(r) for r in pipeline.changes_of(subject, 3))
    assert not first["late"] and not third["late"]
    assert second["late"] is True
    assert json.loads(second["previous_payload"]) == {"step": 1}  # its true predecessor
    assert json.loads(second["current_payload"]) == {"step": 2}
    assert json.loads(third["previous_payload"]) == {"step": 1}
    # the late action never rolled the state back
    pipeline.publisher.publish(
        [action(f"{subject}-4", "update", {"step": 4}, subject_id=subject, version=4)]
    )
    fourth = decode_change(pipeline.changes_of(subject, 4)[3])
    assert json.loads(fourth["previous_payload"]) == {"step": 3}
    assert pipeline.worker.metrics()["late"] >= 1


def test_nested_and_array_diffs(pipeline: Pipeline) -> None:
    subject = sid()
    before = {"owner": {"name": "Ann", "roles": ["a", "b"]}, "lines": [{"qty": 1, "sku": "x"}]}
    after = {
        "owner": {"name": "Ann", "roles": ["a"]},
        "lines": [{"qty": 2, "sku": "x"}, {"qty": 1}],
    }
    pipeline.publisher.publish(
        [
            action(f"{subject}-1", "create", before, subject_id=subject, version=1),
            action(f"{subject}-2", "update", after, subject_id=subject, version=2),
        ]
    )
    update = decode_change(pipeline.changes_of(subject, 2)[1])
    assert [(op["op"], op["path"]) for op in update["payload_changes"]] == [
        ("remove", "/owner/roles/1"),
        ("replace", "/lines/0/qty"),
        ("add", "/lines/1"),
    ]
    assert update["field_changes"]["/lines/1"] == {"old": None, "new": '{"qty":1}'}
    assert update["field_changes"]["/owner/roles/1"] == {"old": '"b"', "new": None}


def test_noop_update_emits_nothing(pipeline: Pipeline) -> None:
    subject = sid()
    noops_before = pipeline.worker.metrics()["noop"]
    pipeline.publisher.publish(
        [
            action(f"{subject}-1", "create", {"a": 1, "b": [1, 2]}, subject_id=subject, version=1),
            action(f"{subject}-2", "update", {"b": [1, 2], "a": 1}, subject_id=subject, version=2),
            action(f"{subject}-3", "update", {"a": 2, "b": [1, 2]}, subject_id=subject, version=3),
        ]
    )
    records = pipeline.changes_of(subject, 2)
    pipeline.assert_no_more_changes(subject, 2)
    created, updated = (decode_change(r) for r in records)
    assert updated["event_id"] == f"{subject}-3"
    assert updated["field_changes"] == {"/a": {"old": "1", "new": "2"}}
    assert pipeline.worker.metrics()["noop"] >= noops_before + 1


def test_redaction(pipeline: Pipeline) -> None:
    subject = sid()
    first = action(
        f"{subject}-1",
        "create",
        {"name": "svc", "api_key": "sk_live_FIRSTKEY", "password": "hunter2"},
        subject_id=subject,
        version=1,
    )
    first["actor"]["api_key_fingerprint"] = "sk_live_ACTORKEY"  # a producer bug
    second = action(
        f"{subject}-2",
        "update",
        {"name": "svc", "api_key": "sk_live_SECONDKEY", "password": "hunter2"},
        subject_id=subject,
        version=2,
    )
    pipeline.publisher.publish([first, second])
    records = pipeline.changes_of(subject, 2)
    secrets = [b"sk_live_FIRSTKEY", b"sk_live_SECONDKEY", b"hunter2", b"sk_live_ACTORKEY"]
    stored = [
        *read_changelog(pipeline.settings, models.SUBJECT_STATE).values(),
        *read_changelog(pipeline.settings, models.SEEN_EVENTS).values(),
    ]
    for blob in [r.value for r in records] + stored:
        assert not any(secret in blob for secret in secrets)
    created, updated = (decode_change(r) for r in records)
    assert created["actor"]["api_key_fingerprint"].startswith("hmac-sha256:")
    # the change to the key is visible, its value is not; the unchanged password is no change
    assert list(updated["field_changes"]) == ["/api_key"]
    change = updated["field_changes"]["/api_key"]
    assert change["old"] != change["new"]
    assert "REDACTED" in change["old"] and "REDACTED" in change["new"]


def test_bad_input_goes_to_the_dlq_while_good_events_flow(pipeline: Pipeline) -> None:
    subject = sid()
    codec = default_codec()
    good_key = subject_key("acme", "expense_report", subject).encode()
    unknown_schema = b"\xc3\x01" + b"\xab" * 8 + b"\x00"
    empty_id = codec.encode(
        "changefeed.ApiAction", action("", "create", {"a": 1}, subject_id=subject)
    )
    bad_json = codec.encode(
        "changefeed.ApiAction",
        {**action(f"{subject}-bad", "update", subject_id=subject), "payload": "{oops"},
    )
    wrong_key = codec.encode(
        "changefeed.ApiAction", action(f"{subject}-wk", "update", {"a": 1}, subject_id=subject)
    )
    bad = {
        "undecodable": (good_key, b"not avro at all"),
        "unknown_schema": (good_key, unknown_schema),
        "invalid_field": (good_key, empty_id),
        "tombstone": (good_key, None),
        "bad_json": (good_key, bad_json),
        "wrong_key": (b"acme/other/1", wrong_key),
    }
    where = {}
    for n, (name, (key, value)) in enumerate(bad.items()):
        pipeline.publisher.publish(
            [action(f"{subject}-{n}", "update", {"n": n}, subject_id=subject, version=n)]
        )
        where[name] = pipeline.publisher.publish_raw(key, value)
    pipeline.publisher.publish(
        [action(f"{subject}-last", "update", {"n": 99}, subject_id=subject, version=99)]
    )
    assert len(pipeline.changes_of(subject, len(bad) + 1)) == len(bad) + 1

    def letters() -> dict[tuple[int, int], dict[str, Any]]:
        pipeline.dead_letters.poll()
        found = (decode_dead_letter(r) for r in pipeline.dead_letters.records)
        return {(d["partition"], d["offset"]): d for d in found}

    wait_until(
        lambda: set(where.values()) <= set(letters()), 60, "a dead letter for each bad record"
    )
    got = letters()
    sealer = DeadLetterSealer(pipeline.settings.derived_key("dlq"))
    expected_codes = {
        "undecodable": "undecodable",
        "unknown_schema": "unknown_schema",
        "invalid_field": "invalid_field",
        "tombstone": "undecodable",
        "bad_json": "invalid_field",
        "wrong_key": "invalid_field",
    }
    for name, position in where.items():
        letter = got[position]
        assert letter["reason_code"] == expected_codes[name], (name, letter["reason"])
        assert letter["topic"] == pipeline.settings.topic("actions")
        assert letter["value"] is None and letter["key"] == bad[name][0]
        value, _ = sealer.open(letter["sealed"], letter["topic"], *position)
        assert value == bad[name][1]  # the original, sealed under the deployment's key
        assert letter["reason"]
    assert pipeline.worker.metrics()["dead_lettered"] >= len(bad)
    assert (pipeline.worker.health() or {}).get("ready") is True  # never stalled or crashed


def test_each_change_writes_its_subject_state_and_dedupe_entry_only(pipeline: Pipeline) -> None:
    subjects = [sid() for _ in range(6)]  # spread over both partitions
    pipeline.publisher.publish(
        [action(f"{s}-1", "create", {"s": s}, subject_id=s, version=1) for s in subjects]
    )
    for s in subjects:
        pipeline.changes_of(s, 1)
    states = read_changelog(pipeline.settings, models.SUBJECT_STATE)
    seen = read_changelog(pipeline.settings, models.SEEN_EVENTS)
    for s in subjects:
        state = models.SubjectState.decode(
            states[subject_key("acme", "expense_report", s).encode()]
        )
        assert (state.sequence, state.change_id) == (1, change_id(f"{s}-1"))
        assert [r.event_id for r in state.recent] == [f"{s}-1"]
        entry = models.SeenEvent.decode(seen[models.seen_key(f"{s}-1")])
        assert entry.change_id == change_id(f"{s}-1")
        assert json.loads(entry.payload or "null") == {"s": s}
