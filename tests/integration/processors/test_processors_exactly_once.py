"""Exactly once, under SIGKILL: tens of thousands of actions, the worker killed and restarted
at random moments, and every expected change event on ``changes`` exactly once.

The expected result comes from running the same actions, in the same order per subject,
through :class:`~processors.pipeline.ActionPipeline` in memory, with no crash: the worker
must end up with the same change ids (no more, no fewer, none twice), in the same order per
subject, the same dead letters, and tables (as their committed changelogs hold them) equal to
the crash-free ones. Set ``CHANGEFEED_SOAK_SEED`` to replay a run.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from group_gate import group_report
from kafka.partitioner.default import murmur2
from log_check import unexpected_lines
from processors_harness import (
    ActionPublisher,
    TopicReader,
    WorkerProcess,
    action,
    decode_change,
    decode_dead_letter,
    read_changelog,
    subject_key_of,
)

from changefeed.config import Settings
from processors import models
from processors.dead_letters import RawRecord
from processors.pipeline import ActionPipeline, OutcomeKind
from schemas.codec import default_codec
from schemas.masking import Redactor

SUBJECTS = 400
ACTIONS = 24_000
DUPLICATE_SHARE = 0.05
LATE_SHARE = 0.05
NOOP_SHARE = 0.03
BAD_RECORDS = 30
PUBLISH_SECONDS = 40.0
KILLS = 4
INJECTED_FAULT_LINES = (
    # the garbage records: each is dead-lettered once, with a warning naming it
    re.compile(
        r"\[WARNING\] dead-lettered \S+\.actions\[\d+\]@\d+: DecodeError: not Avro "
        r"single-object encoding"
    ),
)
"""What the injected bad records may log, in any worker's log."""
KILLED_WORKER_LINES = (
    # the killed worker's multiprocessing resource tracker (it outlives a SIGKILL) finds
    # the semaphores of the index writer's process pool, which nothing could release
    re.compile(
        r"resource_tracker\.py:\d+: UserWarning: resource_tracker: There appear to be \d+ "
        r"leaked semaphore objects to clean up at shutdown"
    ),
)
"""What SIGKILL itself may leave in the log of a killed worker; the worker stopped
gracefully at the end, restarted after a kill, must be as quiet as a fresh one."""


def generate(rng: random.Random) -> list[tuple[bytes, bytes]]:
    """(key, value) records in publish order: versions per subject, some swapped, some
    re-sent, some no-ops and deletes, and a few undecodable records."""
    codec = default_codec()
    versions: dict[str, int] = defaultdict(int)
    payloads: dict[str, dict[str, Any]] = {}
    records: list[tuple[bytes, bytes]] = []
    sent: list[tuple[bytes, bytes]] = []
    counter = 0
    while len(records) < ACTIONS:
        subject = f"s{rng.randrange(SUBJECTS)}"
        versions[subject] += 1
        version = versions[subject]
        counter += 1
        if subject not in payloads:
            verb, payload = "create", {"n": 0, "tags": [], "owner": {"id": subject}}
        elif rng.random() < 0.02:
            verb, payload = "delete", None
        elif rng.random() < NOOP_SHARE and payloads[subject] is not None:
            verb, payload = "update", dict(payloads[subject])
        else:
            base = payloads[subject] or {"n": 0, "tags": [], "owner": {"id": subject}}
            payload = {**base, "n": counter, "tags": [*base["tags"][-3:], counter % 7]}
            verb = "update"
        payloads[subject] = payload
        record = action(f"e{counter}", verb, payload, subject_id=subject, version=version)
        encoded = (subject_key_of(record), codec.encode("changefeed.ApiAction", record))
        records.append(encoded)
        sent.append(encoded)
        if rng.random() < DUPLICATE_SHARE:
            records.insert(rng.randrange(len(records) - 1, len(records) + 200), encoded)
    # out of order: move some actions behind later actions of the same subject
    for _ in range(int(LATE_SHARE * ACTIONS)):
        i = rng.randrange(len(records) - 1)
        j = min(len(records) - 1, i + rng.randrange(1, 400))
        records.insert(j, records.pop(i))
    for n in range(BAD_RECORDS):
        records.insert(rng.randrange(len(records)), (f"acme/x/{n}".encode(), b"\x00garbage"))
    return records


class DictState:
    def __init__(self) -> None:
        self.tables: dict[str, dict[bytes, bytes]] = {name: {} for name in models.TABLE_NAMES}

    def get(self, table: str, key: bytes) -> bytes | None:
        return self.tables[table].get(key)


def expected_outcomes(
    records: list[tuple[bytes, bytes]],
) -> tuple[list[str], dict[str, list[str]], dict[bytes, models.SubjectState], int]:
    """Change ids in order, change ids per subject, final states and dead letters, crash-free."""
    pipeline = ActionPipeline(
        codec=default_codec(),
        redactor=Redactor([], b"soak-test-secret-0123456789"),
        retention_ms=Settings().retention_ms,
        source="/test",
    )
    state = DictState()
    ids: list[str] = []
    per_subject: dict[str, list[str]] = defaultdict(list)
    dead = 0
    for offset, (key, value) in enumerate(records):
        outcome = pipeline.process(RawRecord("actions", 0, offset, None, key, value), state)
        for write in outcome.writes:
            state.tables[write.table][write.key] = write.value  # type: ignore[assignment]
        if outcome.publishes_change:
            assert outcome.record is not None
            ids.append(outcome.record["change_id"])
            per_subject[key.decode()].append(outcome.record["change_id"])
        dead += outcome.kind is OutcomeKind.DEAD_LETTER
    states = {
        key: models.SubjectState.decode(value)
        for key, value in state.tables[models.SUBJECT_STATE].items()
    }
    return ids, per_subject, states, dead


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the producers' default partitioner (murmur2, as Java's) picks for key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def expected_changes_by_partition(
    expected_per_subject: dict[str, list[str]], partitions: int
) -> dict[int, int]:
    """How many changes each partition of ``changes`` must end with (a change goes to the
    partition of its action, keyed by subject)."""
    counts = dict.fromkeys(range(partitions), 0)
    for key, ids in expected_per_subject.items():
        counts[partition_of(key.encode(), partitions)] += len(ids)
    return counts


def wait_for_every_partition(
    changes: TopicReader, expected: dict[int, int], timeout_s: float, stall_s: float | None
) -> None:
    """Poll until every partition holds its expected number of changes; fail after
    ``timeout_s``, or once a partition short of its count got nothing for ``stall_s``."""
    began = last_progress = time.monotonic()
    have = Counter(record.partition for record in changes.records)
    progress_at = dict.fromkeys(expected, began)
    while any(have[p] < n for p, n in expected.items()):
        now = time.monotonic()
        short = {p: n - have[p] for p, n in expected.items() if have[p] < n}
        stalled = [p for p in short if stall_s is not None and now - progress_at[p] > stall_s]
        if stalled or now - began > timeout_s:
            raise AssertionError(
                f"changes still missing per partition {short} after {now - began:.0f}s; "
                f"partitions {stalled} got none for {stall_s}s; last change "
                f"{now - last_progress:.0f}s ago"
            )
        for record in changes.poll():
            have[record.partition] += 1
            progress_at[record.partition] = last_progress = time.monotonic()


@pytest.mark.slow
def test_every_change_exactly_once_despite_sigkill(settings: Settings, tmp_path: Path) -> None:
    check_every_change_exactly_once_despite_sigkill(settings, tmp_path)


def check_every_change_exactly_once_despite_sigkill(
    settings: Settings,
    tmp_path: Path,
    *,
    catch_up_s: float = 150.0,
    stall_s: float | None = None,
) -> None:
    """The soak: publish, SIGKILL the worker :data:`KILLS` times, then compare everything
    with the crash-free outcome.

    After the last restart the worker has ``catch_up_s`` to deliver every change. With
    ``stall_s`` (test_processors_liveness, on busy cores, where throughput is whatever the
    machine leaves) it fails as soon as a partition of ``changes`` that still misses changes
    got none for ``stall_s``: a partition nobody processes, not a slow worker, is the failure.
    """
    seed = int(os.environ.get("CHANGEFEED_SOAK_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    records = generate(rng)
    expected_ids, expected_per_subject, expected_states, expected_dead = expected_outcomes(records)
    assert len(expected_ids) > ACTIONS * 0.8  # the run exercises what it claims to

    worker = WorkerProcess(settings, tmp_path).start()
    publisher = ActionPublisher(settings)
    changes = TopicReader(settings, [settings.topic("changes")])
    dead_letters = TopicReader(settings, [settings.topic("actions.dlq")])
    done = threading.Event()

    def publish() -> None:
        step = 200
        pause = PUBLISH_SECONDS / (len(records) / step)
        for start in range(0, len(records), step):
            for key, value in records[start : start + step]:
                publisher.producer.send(publisher.topic, key=key, value=value)
            publisher.producer.flush()
            time.sleep(pause)
        done.set()

    publishing = threading.Thread(target=publish, daemon=True)
    kills = []
    try:
        worker.wait_ready()
        publishing.start()
        for n in range(KILLS):
            if n != KILLS - 1:  # the last kill may land anywhere, recovery included
                worker.wait_ready()  # the others hit a worker that is processing
            time.sleep(rng.uniform(0.3, 4.0))
            changes.poll()
            kills.append(len(changes.records))
            worker.kill()
            worker.start()
        publishing.join(PUBLISH_SECONDS * 3)
        assert done.is_set(), "publishing did not finish"
        worker.wait_ready()
        try:
            wait_for_every_partition(
                changes,
                expected_changes_by_partition(expected_per_subject, settings.partitions),
                catch_up_s,
                stall_s,
            )
        except AssertionError as exc:  # who holds which partition, to tell stuck from slow
            report = group_report(settings.bootstrap, settings.app_id)
            raise AssertionError(f"{exc}; {report}") from None
        changes.settle(quiet_s=3.0)
        dead_letters.wait_for(expected_dead, timeout_s=30)
        dead_letters.settle(quiet_s=1.0)
    finally:
        publisher.close()
        worker.stop()
        changes.close()
        dead_letters.close()

    context = f"seed={seed} changes seen at each kill={kills} logs={tmp_path}"
    got = [decode_change(r) for r in changes.records]
    counts = Counter(c["change_id"] for c in got)
    repeated = {cid: n for cid, n in counts.items() if n > 1}
    assert not repeated, f"{len(repeated)} change events more than once; {context}"
    assert set(counts) == set(expected_ids), (
        f"missing {len(set(expected_ids) - set(counts))}, "
        f"unexpected {len(set(counts) - set(expected_ids))}; {context}"
    )
    per_subject: dict[str, list[str]] = defaultdict(list)
    for record, change in zip(changes.records, got, strict=True):
        per_subject[record.key.decode()].append(change["change_id"])
    assert per_subject == expected_per_subject, f"order per subject differs; {context}"

    letters = [decode_dead_letter(r) for r in dead_letters.records]
    positions = Counter((d["partition"], d["offset"]) for d in letters)
    assert len(positions) == expected_dead and max(positions.values()) == 1, context

    state = read_changelog(settings, models.SUBJECT_STATE)
    assert set(state) == set(expected_states), context
    for key, expected in expected_states.items():
        actual = models.SubjectState.decode(state[key])
        assert (actual.payload and json.loads(actual.payload)) == (
            expected.payload and json.loads(expected.payload)
        ), (key, context)
        assert (actual.deleted, actual.version, actual.sequence) == (
            expected.deleted,
            expected.version,
            expected.sequence,
        ), (key, context)
    seen = read_changelog(settings, models.SEEN_EVENTS)
    recorded = {models.SeenEvent.decode(v).change_id for v in seen.values()} - {None}
    assert recorded == set(expected_ids), context
    logs = sorted(tmp_path.glob("worker-*.log"), key=lambda p: int(p.stem.split("-")[1]))
    noise = unexpected_lines(logs[:-1], INJECTED_FAULT_LINES + KILLED_WORKER_LINES)
    noise += unexpected_lines(logs[-1:], INJECTED_FAULT_LINES)
    assert not noise, "\n".join([f"unexpected warnings/errors; {context}", *noise[:40]])
    seen_ids = set(seen)
    expected_seen = {
        models.seen_key(default_codec().decode(v, "changefeed.ApiAction")["event_id"])
        for _, v in records
        if not v.startswith(b"\x00")
    }
    assert seen_ids == expected_seen, context
