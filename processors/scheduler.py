"""The timer that fires schedules, in the worker that owns their subjects' partitions.

Per assigned partition of ``actions`` the scheduler keeps a min-heap of ``(wake time,
schedule id)`` (about 150 bytes a schedule; the records stay in RocksDB), filled from the
``schedules`` table once the partition's tables are restored and kept current by every
schedule write the agent applies (:meth:`Scheduler.track`). Stale entries (a schedule paused,
fired or re-timed since) are skipped when popped: the record read then decides.

:meth:`Scheduler.run` sleeps until the earliest wake time (at most :data:`TICK_S`), then,
under the exactly-once gate and in the current rebalance epoch, fires what is due, at most
:data:`FIRE_CHUNK` schedules before yielding: for each, :func:`plan_firing` decides, every
occurrence goes through :meth:`ActionPipeline.process_occurrence` (dedupe on its derived
event id, subject order, masking, like any custom action), its change and table writes go to
the outbox of the subject's partition, and the schedule's next state is written with them.
The partition is marked touched and a commit asked for at once, so the occurrence and the
schedule's advance commit in one transaction: after a crash either both happened or neither
did, and a re-fire yields the same event id, which the dedupe collapses.

A revocation drops the heaps; the next owner rebuilds them from the committed table.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

import faust
from faust.types import TP

from processors import models
from processors.exactly_once import ExactlyOnceState, TransactionalOutbox
from processors.models import SubjectState
from processors.pipeline import ActionPipeline, OutcomeKind
from processors.schedule_commands import (
    FiringPlan,
    after_failure,
    failed_index_writes,
    plan_firing,
    read_schedule,
    store,
    wake_time,
)
from processors.tables import PartitionTables
from schemas.schedules import Schedule, occurrence_event_id

log = logging.getLogger(__name__)

TICK_S = 0.25
"""Longest sleep between two looks at the heaps (new schedules wake it sooner)."""
FIRE_CHUNK = 256
"""Schedules fired under one hold of the gate."""
COMMIT_GAP_S = 0.02


_SCHEDULERS: weakref.WeakKeyDictionary[faust.App, Scheduler] = weakref.WeakKeyDictionary()


def scheduler_of(app: faust.App) -> Scheduler | None:
    """The scheduler declared on ``app``, if any."""
    return _SCHEDULERS.get(app)


def _now_us() -> int:
    return time.time_ns() // 1000


class Scheduler:
    """Fires due schedules of the partitions this worker owns (see the module doc)."""

    def __init__(
        self,
        app: faust.App,
        *,
        exactly_once: ExactlyOnceState,
        outbox: TransactionalOutbox,
        pipeline: ActionPipeline,
        view_of: Callable[[int], PartitionTables],
        actions_topic: str,
        changes_topic: str,
        clock: Callable[[], int] = _now_us,
    ) -> None:
        self.app = app
        self.exactly_once = exactly_once
        self.outbox = outbox
        self.pipeline = pipeline
        self.view_of = view_of
        self.actions_topic = actions_topic
        self.changes_topic = changes_topic
        self.clock = clock
        self.heaps: dict[int, list[tuple[int, str]]] = {}
        self.loaded: set[int] = set()
        self.fired = 0
        self.failed = 0
        self._wake = asyncio.Event()
        _SCHEDULERS[app] = self

    # -- bookkeeping ---------------------------------------------------------------------

    def track(self, partition: int, writes: list[models.Write]) -> None:
        """Note schedule records written by a command (their wake times may have moved)."""
        for write in writes:
            if write.table != models.SCHEDULES or write.value is None:
                continue
            if not models.is_schedule_record_key(write.key):
                continue
            self._push(partition, Schedule.decode(write.value))

    def _push(self, partition: int, schedule: Schedule) -> None:
        wake = wake_time(schedule)
        if wake is None:
            return
        heap = self.heaps.setdefault(partition, [])
        if not heap or wake < heap[0][0]:
            self._wake.set()
        heapq.heappush(heap, (wake, schedule.schedule_id))

    def load(self, partition: int) -> int:
        """Put the partition's committed schedules on its heap; returns how many."""
        view = self.view_of(partition)
        count = 0
        for key, value in view.scan(models.SCHEDULES):
            if models.is_schedule_record_key(key):
                self._push(partition, Schedule.decode(value))
                count += 1
        self.loaded.add(partition)
        return count

    def forget(self) -> None:
        """Drop every heap (a rebalance): the partitions' next owners rebuild theirs."""
        self.heaps.clear()
        self.loaded.clear()

    @property
    def active(self) -> int:
        return sum(len(heap) for heap in self.heaps.values())

    # -- firing ----------------------------------------------------------------------------

    def fire_due(self, now_us: int, limit: int = FIRE_CHUNK) -> set[int]:
        """Fire up to ``limit`` due schedules (call under the gate); the partitions touched."""
        touched: set[int] = set()
        budget = limit
        for partition, heap in self.heaps.items():
            if partition not in self.loaded:
                continue
            while heap and heap[0][0] <= now_us and budget > 0:
                wake, schedule_id = heapq.heappop(heap)
                budget -= 1
                if self._fire_one(partition, wake, schedule_id, now_us):
                    touched.add(partition)
        return touched

    def _fire_one(self, partition: int, wake: int, schedule_id: str, now_us: int) -> bool:
        view = self.view_of(partition)
        schedule = read_schedule(view, schedule_id)
        if schedule is None or wake_time(schedule) != wake:
            return False  # a stale heap entry: the record moved on since
        subject = view.get(models.SUBJECT_STATE, schedule.subject_key.encode())
        deleted = subject is not None and SubjectState.decode(subject).deleted
        plan = plan_firing(schedule, deleted, now_us)
        if plan is None:
            self._push(partition, schedule)
            return False
        after = self._emit(partition, view, schedule, plan, now_us)
        writes = [store(after), *failed_index_writes(schedule, after)]
        view.apply(writes)
        self._push(partition, after)
        return True

    def _emit(
        self,
        partition: int,
        view: PartitionTables,
        schedule: Schedule,
        plan: FiringPlan,
        now_us: int,
    ) -> Schedule:
        for index, (occurrence, late) in enumerate(plan.emit):
            outcome = self.pipeline.process_occurrence(
                occurrence_action(schedule, occurrence), view, late=late
            )
            if outcome.kind is OutcomeKind.DEAD_LETTER:
                self.failed += 1
                log.warning(
                    "schedule %s: occurrence %d rejected: %s",
                    schedule.schedule_id,
                    occurrence,
                    outcome.reason,
                )
                return after_failure(plan, index, outcome.reason, now_us)
            if outcome.writes:
                view.apply(outcome.writes)
            if outcome.publishes_change:
                self.outbox.add(
                    partition,
                    self.changes_topic,
                    partition,
                    outcome.key,
                    outcome.value,
                    outcome.headers,
                )
                self.fired += 1
        return plan.after

    # -- the timer -------------------------------------------------------------------------

    def _ready_partitions(self) -> list[int]:
        app = self.app
        if app.rebalancing or not app.tables.actives_ready:
            return []
        try:
            assigned = app.consumer.assignment()
        except Exception:  # noqa: BLE001 - not started yet
            return []
        return sorted(tp.partition for tp in assigned if tp.topic == self.actions_topic)

    def _next_wake_s(self, now_us: int) -> float:
        heads = [heap[0][0] for p, heap in self.heaps.items() if heap and p in self.loaded]
        if not heads:
            return TICK_S
        return max(0.0, min(TICK_S, (min(heads) - now_us) / 1e6))

    async def run(self) -> None:
        """Fire schedules until the app stops (an app task)."""
        app = self.app
        state = self.exactly_once
        while not app.should_stop:
            partitions = self._ready_partitions()
            if not partitions:
                await asyncio.sleep(0.1)
                continue
            epoch = state.epoch
            for partition in partitions:
                if partition not in self.loaded:
                    async with state.gate:
                        if state.epoch != epoch:
                            break
                        count = self.load(partition)
                    log.info("scheduler: %d schedules of partition %d loaded", count, partition)
            wait_s = self._next_wake_s(self.clock())
            if wait_s > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait_s)
                continue
            touched: set[int] = set()
            async with state.gate:
                if state.epoch == epoch and not app.rebalancing:
                    touched = self.fire_due(self.clock())
                    for partition in touched:
                        state.mark_touched(TP(self.actions_topic, partition))
            if touched:
                await self._commit()
            await asyncio.sleep(0)

    async def _commit(self) -> None:
        state = self.exactly_once
        await asyncio.sleep(max(0.0, state.last_commit_at + COMMIT_GAP_S - time.monotonic()))
        try:
            await self.app.consumer.commit()
        except Exception:  # noqa: BLE001 - a failed commit has already stopped the worker
            log.debug("scheduler commit failed", exc_info=True)


def occurrence_action(schedule: Schedule, occurrence_us: int) -> dict[str, Any]:
    """The custom ApiAction of one occurrence; its event id derives from the schedule id and
    the occurrence time, its ``occurred_at`` is the occurrence time."""
    return {
        "event_id": occurrence_event_id(schedule.schedule_id, occurrence_us),
        "request_id": f"schedule:{schedule.schedule_id}",
        "tenant_id": schedule.tenant_id,
        "action": "custom",
        "event_type": schedule.event_type,
        "subject_type": schedule.subject_type,
        "subject_id": schedule.subject_id,
        "subject_ref": None,
        "version": None,
        "occurred_at": occurrence_us,
        "actor": {
            "user_id": schedule.actor.get("user_id"),
            "application_id": "changefeed-scheduler",
            "api_version": schedule.actor.get("api_version") or "v1",
            "api_key_fingerprint": schedule.actor.get("api_key_fingerprint"),
        },
        "criticality": schedule.criticality,
        "code": schedule.code,
        "internal": False,
        "payload_content_type": schedule.content_type,
        "payload": schedule.payload,
        "source": "",
    }
