"""The load generator's action stream: deterministic, schema-valid, with the faults asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest

from changefeed.errors import ConfigError
from producers.delivery import DeliveryOutcome, DeliveryReport
from producers.envelope import ActionEncoder
from producers.loadgen import LoadProfile, LoadTally, generate_actions, publish_direct
from producers.pacing import Pacer
from producers.traffic import Pool
from schemas.codec import default_codec

START = datetime(2024, 5, 1, tzinfo=UTC)


def generate(profile: LoadProfile, count: int) -> tuple[list[dict[str, Any]], LoadTally]:
    tally = LoadTally()
    return list(generate_actions(profile, count=count, start_at=START, tally=tally)), tally


STREAM_DIGEST = """
import hashlib, json
from datetime import UTC, datetime
from producers.loadgen import LoadProfile, generate_actions
profile = LoadProfile(seed=9, duplicate_rate=0.05, out_of_order_rate=0.1)
start = datetime(2024, 5, 1, tzinfo=UTC)
actions = list(generate_actions(profile, count=3000, start_at=start))
print(hashlib.sha256(json.dumps(actions, default=str, sort_keys=True).encode()).hexdigest())
"""


def test_the_stream_is_the_same_in_every_process() -> None:
    # Each Python process hashes strings differently (PYTHONHASHSEED): nothing in the
    # stream may depend on the iteration order of a set or dict of strings.
    digests = {
        subprocess.run(
            [sys.executable, "-c", STREAM_DIGEST],
            env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for hash_seed in (1, 2, 3)
    }
    assert len(digests) == 1, digests


def test_the_stream_is_the_same_for_the_same_seed_and_differs_for_another() -> None:
    first, _ = generate(LoadProfile(seed=3), 500)
    again, _ = generate(LoadProfile(seed=3), 500)
    other, _ = generate(LoadProfile(seed=4), 500)
    assert first == again
    assert [a["event_id"] for a in first] != [a["event_id"] for a in other]


def test_every_action_fits_the_schema_and_payloads_are_json() -> None:
    encoder = ActionEncoder("actions", default_codec(), "/x")
    actions, _ = generate(LoadProfile(seed=1, tenants=4), 3000)
    for action in actions:
        encoder.encode(action)
        if action["payload"] is not None:
            json.loads(action["payload"])


def test_the_mix_is_mostly_updates_with_every_kind_of_write_present() -> None:
    actions, tally = generate(LoadProfile(seed=2, duplicate_rate=0, out_of_order_rate=0), 5000)
    kinds = Counter(a["action"] for a in actions)
    assert kinds["update"] > kinds["create"] > kinds["delete"] > 0
    assert kinds["custom"] > 0
    assert kinds["update"] > 0.45 * len(actions)
    types = {a["event_type"] for a in actions}
    assert {"project:created", "expense_report:updated", "expense:deleted"} <= types
    by_request = Counter(a["request_id"] for a in actions)
    approvals = [r for r, n in by_request.items() if n > 1]
    assert approvals, "approvals and cascading deletes yield several actions per request"
    assert tally.requests == len(by_request) and tally.errors == 0
    assert {a["tenant_id"] for a in actions} == {"acme", "globex", "initech"}


def test_versions_grow_by_one_per_subject_when_no_faults_are_injected() -> None:
    actions, tally = generate(LoadProfile(seed=5, duplicate_rate=0, out_of_order_rate=0), 3000)
    versions: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for action in actions:
        if action["version"] is not None:
            key = (action["tenant_id"], action["subject_type"], action["subject_id"])
            versions[key].append(action["version"])
    for key, seen in versions.items():
        assert seen == list(range(1, len(seen) + 1)), key
        assert tally.last_versions[key] == seen[-1]
    assert len(tally.event_ids) == len(actions)


def test_duplicates_repeat_an_earlier_action_exactly() -> None:
    profile = LoadProfile(seed=8, duplicate_rate=0.2, out_of_order_rate=0)
    actions, tally = generate(profile, 4000)
    counts = Counter(a["event_id"] for a in actions)
    repeated = sum(n - 1 for n in counts.values())
    assert repeated == tally.duplicates
    assert 0.1 * len(actions) < tally.duplicates < 0.35 * len(actions)
    assert len(tally.event_ids) == len(actions) - tally.duplicates
    first_seen: dict[str, dict[str, Any]] = {}
    for action in actions:
        original = first_seen.setdefault(action["event_id"], action)
        assert action == original  # same event id, same action, so the same Kafka key


def test_out_of_order_delivers_an_older_version_after_a_newer_one() -> None:
    profile = LoadProfile(seed=9, duplicate_rate=0, out_of_order_rate=0.1)
    actions, tally = generate(profile, 4000)
    newest: dict[tuple[str, str, str], dict[str, Any]] = {}
    late = 0
    for action in actions:
        if action["version"] is None:
            continue
        key = (action["tenant_id"], action["subject_type"], action["subject_id"])
        seen = newest.get(key)
        if seen is not None and action["version"] < seen["version"]:
            late += 1
            assert action["occurred_at"] < seen["occurred_at"]  # older in every respect
        else:
            newest[key] = action
    assert late == tally.out_of_order > 0.03 * len(actions)


def test_occurred_at_follows_the_simulated_clock() -> None:
    actions, tally = generate(
        LoadProfile(seed=1, rate=10, duplicate_rate=0, out_of_order_rate=0), 200
    )
    times = [a["occurred_at"] for a in actions]
    assert times == sorted(times)
    assert times[0] > START
    assert (times[-1] - START).total_seconds() == pytest.approx(tally.requests / 10, abs=0.2)


def test_profile_counts_and_validation() -> None:
    assert LoadProfile(rate=50, duration_s=30).total == 1500
    actions, _ = generate(LoadProfile(rate=20, duration_s=2, seed=1), count=40)
    assert len(actions) == 40
    for bad in (
        {"rate": 0},
        {"duration_s": -1},
        {"tenants": 0},
        {"duplicate_rate": 1.5},
        {"out_of_order_rate": -0.1},
    ):
        with pytest.raises(ConfigError):
            LoadProfile(**bad)  # type: ignore[arg-type]


class CountingSink:
    def __init__(self) -> None:
        self.actions: list[dict[str, Any]] = []

    def publish_async(self, action: dict[str, Any], on_delivery: Any = None) -> None:
        self.actions.append(action)
        on_delivery(DeliveryReport(action["event_id"], DeliveryOutcome.SPOOLED, "actions"))

    def flush(self, timeout_s: float | None = None) -> bool:
        return True


def test_publish_direct_publishes_the_whole_profile_and_summarises_it() -> None:
    sink = CountingSink()
    profile = LoadProfile(rate=5000, duration_s=0.1, seed=4, duplicate_rate=0.1)
    summary = publish_direct(profile, sink, source="/s")
    assert summary.sent == len(sink.actions) == 500
    assert summary.spooled == 500 and summary.errors == 0
    assert summary.duplicates == len(sink.actions) - len({a["event_id"] for a in sink.actions})
    line = summary.line()
    assert line.startswith("loadgen: ") and "500 actions sent" in line and "0 errors" in line


def test_pacer_slots_do_not_drift_with_the_time_spent_working() -> None:
    now = [100.0]
    pacer = Pacer(rate=10, clock=lambda: now[0])
    assert pacer.delay() == 0  # the first slot is now
    now[0] += 0.03  # 30 ms of work
    assert pacer.delay() == pytest.approx(0.07)
    now[0] += 0.5  # far behind: no wait, no catch-up sleep either
    assert pacer.delay() == 0 and pacer.behind_s == pytest.approx(0.33)
    assert pacer.delay(slots=3) == 0
    now[0] = 100.6
    assert pacer.delay() == pytest.approx(0.0)  # slot 6 is due at 100.6 exactly


def test_pool_choice_add_and_remove() -> None:
    import random

    pool: Pool[str] = Pool()
    for item in "abcde":
        pool.add(item)
    pool.add("a")
    pool.discard("b")
    pool.discard("zz")
    assert len(pool) == 4 and "b" not in pool and "e" in pool
    rng = random.Random(0)
    assert {pool.choice(rng) for _ in range(200)} == {"a", "c", "d", "e"}
