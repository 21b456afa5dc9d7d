"""Liveness: a worker SIGKILLed in the middle of joining the group must not cost the group any
partition for longer than the dead member's session, and exactly-once holds on a machine whose
cores are busy with something else.

The kill lands where the CI failure had it: the worker has sent its JoinGroup and has no
assignment yet. :class:`~group_gate.GroupGate` (a group member driven by the test) holds the
rebalance open, so the worker stays in that state until the test has killed it, instead of for
a few milliseconds; releasing the gate completes the rebalance with the dead worker in it.
After the kill, the remaining worker must process new actions of **every** partition of
``actions`` within the session timeout plus a margin from the moment the group can move on.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from group_gate import GroupGate, GroupProbe, GroupState, next_leader
from processors_harness import (
    ActionPublisher,
    TopicReader,
    WorkerProcess,
    action,
    decode_change,
    wait_until,
)
from test_processors_exactly_once import check_every_change_exactly_once_despite_sigkill

from changefeed.config import Settings
from processors.app import SESSION_TIMEOUT_S

pytestmark = pytest.mark.integration

LIVENESS_MARGIN_S = 30.0
"""On top of the session timeout: a rebalance, the tables' recovery and the processing of a few
actions, on a loaded 2-core machine. A group that lost partitions to a dead member stays
stuck for minutes, not seconds."""

BUSY_CATCH_UP_S = 1200.0
BUSY_STALL_MARGIN_S = 50.0
"""On busy cores a rebalance plus the recovery of the tables took up to ~15 s here; a
partition left to a dead member stands still for minutes."""

JOINING = "(Re-)joining group"  # aiokafka, just before it sends JoinGroup
ASSIGNED = "Setting newly assigned partitions"  # aiokafka, once it has an assignment
ACTIONS_PER_PARTITION = 5


@pytest.fixture
def busy_cores() -> Iterator[int]:
    """Both cores kept busy by other processes (as on a loaded CI machine) for the test."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield len(hogs)
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait(30)


def log_has(worker: WorkerProcess, text: str) -> bool:
    return worker.log_path.exists() and text in worker.log_path.read_text(errors="replace")


def joining_members(probe: GroupProbe, gate: GroupGate) -> GroupState | None:
    """The group while the gate holds its rebalance open, or None if it is not rebalancing."""
    state = probe.state()
    if state is None or not state.rebalancing or gate.member_id not in state.members:
        return None
    return state


def publish_to_every_partition(settings: Settings, tag: str) -> dict[int, set[str]]:
    """Publish actions until each partition of ``actions`` has some; event ids by partition."""
    publisher = ActionPublisher(settings)
    by_partition: dict[int, set[str]] = {p: set() for p in range(settings.partitions)}
    try:
        n = 0
        while min(len(ids) for ids in by_partition.values()) < ACTIONS_PER_PARTITION:
            record = action(f"{tag}-{n}", "create", {"n": n}, subject_id=f"{tag}-{n}", version=1)
            value = publisher.codec.encode("changefeed.ApiAction", record)
            key = f"acme/expense_report/{tag}-{n}".encode()
            metadata = publisher.producer.send(publisher.topic, key=key, value=value).get(30)
            by_partition[metadata.partition].add(record["event_id"])
            n += 1
    finally:
        publisher.close()
    return by_partition


def wait_for_changes_everywhere(
    changes: TopicReader, expected: dict[int, set[str]], since: float, what: str
) -> float:
    """Wait (read_committed) until the change of every expected event arrived, each on its
    action's partition, within :data:`SESSION_TIMEOUT_S` + margin of ``since``; returns the
    seconds it took."""
    deadline = since + SESSION_TIMEOUT_S + LIVENESS_MARGIN_S
    seen: dict[int, set[str]] = {p: set() for p in expected}
    while any(expected[p] - seen[p] for p in expected):
        if time.monotonic() > deadline:
            stuck = {p: len(expected[p] - seen[p]) for p in expected if expected[p] - seen[p]}
            raise AssertionError(
                f"{what}: after {SESSION_TIMEOUT_S + LIVENESS_MARGIN_S:.0f}s, partitions "
                f"{sorted(stuck)} of actions still have unprocessed actions {stuck}"
            )
        for record in changes.poll():
            change = decode_change(record)
            if change["event_id"] in expected.get(record.partition, ()):
                seen[record.partition].add(change["event_id"])
    return time.monotonic() - since


def wait_for_new_member(probe: GroupProbe, gate: GroupGate, known: set[str], what: str) -> str:
    """The member id a worker got once its JoinGroup waits at the broker (the gate holds)."""
    found: list[str] = []

    def joined() -> bool:
        state = joining_members(probe, gate)
        fresh = state.members - known - {gate.member_id} if state else set()
        found[:] = sorted(fresh)
        return len(fresh) == 1

    wait_until(joined, 180, what)
    return found[0]


def assignment_sizes(worker: WorkerProcess) -> list[int]:
    """Sizes of the worker's assignments, in order (Faust logs each one)."""
    return [int(n) for n in re.findall(r"for (\d+) assigned partitions", worker.tail(10**7))]


@pytest.mark.parametrize("cores", ["idle-cores", "busy-cores"])
@pytest.mark.parametrize("case", ["alone", "survivor-leads", "dead-worker-leads"])
def test_a_worker_killed_while_joining_costs_no_partition(
    settings: Settings, tmp_path: Path, case: str, cores: str, request: pytest.FixtureRequest
) -> None:
    """SIGKILL a worker whose JoinGroup waits at the broker (no assignment yet); the next
    worker processes every partition within the session timeout plus a margin.

    * ``alone``: the dead worker is the only member of the generation that completes (its
      leader, which never sends SyncGroup); the second worker starts after the kill.
    * ``survivor-leads``: a second worker joined the same rebalance before the kill and leads
      the generation that completes, so it assigns half the partitions to the dead worker and
      starts with the other half: the CI failure's "2 transactional producers for 7 assigned
      partitions". The dead member's session must end, and the survivor take everything.
    * ``dead-worker-leads``: the same, but the dead worker leads: the survivor waits in
      SyncGroup for an assignment that never comes, until the dead leader's session ends.

    Which of the two joining workers leads is the coordinator's choice
    (:func:`group_gate.next_leader`); the test kills the one that makes the case, then
    checks from the survivor's log that the case happened.
    """
    if cores == "busy-cores":
        request.getfixturevalue("busy_cores")
    probe = GroupProbe(settings.bootstrap, settings.app_id)
    gate = GroupGate(settings.bootstrap, settings.app_id, [settings.topic("actions")])
    first = WorkerProcess(settings, tmp_path, name="first", data_dir=tmp_path / "first")
    second = WorkerProcess(settings, tmp_path, name="second", data_dir=tmp_path / "second")
    changes = TopicReader(settings, [settings.topic("changes")])
    doomed, survivor = first, second
    released = False
    try:
        gate.hold()
        first.start()
        first_id = wait_for_new_member(probe, gate, set(), f"the first worker; logs in {tmp_path}")
        if case != "alone":
            second.start()
            second_id = wait_for_new_member(
                probe, gate, {first_id}, f"the second worker; logs in {tmp_path}"
            )
            leader = next_leader([first_id, second_id])
            follower = second_id if leader == first_id else first_id
            doomed_id = leader if case == "dead-worker-leads" else follower
            if doomed_id == second_id:
                doomed, survivor = second, first
        doomed.kill()
        assert not log_has(doomed, ASSIGNED), "the worker was killed after its assignment"
        expected = publish_to_every_partition(settings, "after-kill")
        gate.release()
        released = True
        since = time.monotonic()
        if case == "alone":
            survivor.start()
            wait_until(lambda: log_has(survivor, JOINING), 180, "the second worker to join")
            since = time.monotonic()
        try:
            took = wait_for_changes_everywhere(changes, expected, since, f"{case}; {tmp_path}")
        except AssertionError as exc:  # who holds which partition
            raise AssertionError(f"{exc}; {probe.describe()}") from None
        sizes = assignment_sizes(survivor)
        print(
            f"{case}, {cores}: every partition processed {took:.1f}s after the group could "
            f"move on; the survivor's assignments (partitions): {sizes}"
        )
        if case == "survivor-leads":  # it started with a part, then got everything
            assert len(sizes) >= 2 and sizes[0] < sizes[-1], (sizes, "next_leader out of date?")
        else:  # it got everything at once
            assert len(sizes) == 1, (sizes, "next_leader out of date?")
        assert survivor.process is not None and survivor.process.poll() is None, survivor.tail()
    finally:
        if not released:
            gate.release()
        changes.close()
        probe.close()
        doomed.kill()
        if survivor.process is not None:
            survivor.stop()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_every_change_exactly_once_despite_sigkill_on_busy_cores(
    settings: Settings, tmp_path: Path, busy_cores: int
) -> None:
    """The SIGKILL soak of test_processors_exactly_once while other processes keep both
    cores busy: kills land at other moments (recovery, joining, a commit), and nothing may
    stall or be lost.

    How fast the worker catches up is whatever the machine leaves it, so the soak's fixed
    catch-up time becomes a bound on stalls: every partition of ``changes`` still short of
    its changes must keep receiving some within the session timeout plus a margin.
    """
    check_every_change_exactly_once_despite_sigkill(
        settings,
        tmp_path,
        catch_up_s=BUSY_CATCH_UP_S,
        stall_s=SESSION_TIMEOUT_S + BUSY_STALL_MARGIN_S,
    )
