"""The ``process_actions`` agent: every ``actions`` record becomes one outcome, exactly once.

Records reach the agent in batches: the app's consumer
(:class:`~processors.faust_adapter.BatchingConsumer`) puts each fetch of ``actions`` on a
channel as one :class:`~processors.faust_adapter.FetchedBatch`, so no record pays Faust's
per-event stream path. One agent instance (``concurrency=1``) takes a batch, and under the
exactly-once gate (so that no commit falls in the middle of an action) runs
:class:`~processors.pipeline.ActionPipeline` on each record of each partition in offset
order, writes the outcome's table entries, queues the change (to ``changes``, same partition
as the action, key = the subject) or the dead letter (to ``actions.dlq``) in the outbox of
the record's partition, and marks the records processed. :mod:`processors.exactly_once`
commits all of it together, one transaction per partition.

A batch of an earlier epoch (fetched before a rebalance or a final commit) is dropped
unprocessed: its partitions' committed offsets say where the next owner starts.

Schedule commands (outcome SCHEDULED) write to the ``schedules`` table like any outcome and
are handed to the :class:`~processors.scheduler.Scheduler`, the app task that fires due
schedules of this worker's partitions into the same outbox.

When the agent has processed everything the broker holds for its partitions it asks for a
commit at once rather than waiting for the commit timer, so that at moderate rates a change
is readable within about one transaction commit of its action arriving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import faust
from faust.types import TP

from changefeed.config import Settings
from processors.dead_letters import RawRecord
from processors.exactly_once import TransactionalOutbox, exactly_once_state
from processors.faust_adapter import FetchedBatch, batch_source
from processors.health import counters_of
from processors.pipeline import ActionPipeline, OutcomeKind
from processors.scheduler import Scheduler
from processors.tables import ChangeTables, PartitionTables

log = logging.getLogger(__name__)

DEAD_LETTER_PARTITION = 0
IDLE_COMMIT_GAP_S = 0.05
OUTBOX_HARD_LIMIT = 4 * 1024 * 1024
"""Queued bytes at which the agent waits for a commit in progress to flush the outbox."""
CHUNK = 32
"""Records handled between two yields to the event loop (web requests wait no longer)."""
BATCH_QUEUE = 4
"""Fetched batches waiting for the agent; the fetch loop waits when they are this many."""

PartitionHandler = Callable[[TP, list[Any]], None]
"""Handles records of one partition, in offset order, synchronously (under the gate)."""


def actions_topic(app: faust.App, settings: Settings) -> faust.types.TopicT:
    """The ``actions`` topic on ``app``, its records as raw bytes."""
    return app.topic(
        settings.topic("actions"),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        internal=False,
    )


def register_agents(
    app: faust.App, settings: Settings, pipeline: ActionPipeline, tables: ChangeTables
) -> faust.types.AgentT:
    """Declare the ``actions`` topic and the ``process_actions`` agent on ``app``."""
    actions = actions_topic(app, settings)
    changes_name = settings.topic("changes")
    dlq_name = settings.topic("actions.dlq")
    exactly_once = exactly_once_state(app)
    outbox = exactly_once.outbox = TransactionalOutbox(app, settings.topic("actions"))
    counters = counters_of(app)
    views: dict[int, PartitionTables] = {}

    def view_of(partition: int) -> PartitionTables:
        view = views.get(partition)
        if view is None:
            view = views[partition] = PartitionTables(tables, outbox, partition)
        return view

    def write_pending() -> None:
        for view in views.values():
            view.write_pending()

    exactly_once.before_commit.append(write_pending)
    scheduler = Scheduler(
        app,
        exactly_once=exactly_once,
        outbox=outbox,
        pipeline=pipeline,
        view_of=view_of,
        actions_topic=actions.get_topic_name(),
        changes_topic=changes_name,
    )
    track = scheduler.track

    def handle(tp: TP, records: list[Any]) -> None:
        partition = tp.partition
        view = view_of(partition)
        process = pipeline.process
        count = counters.count
        for message in records:
            raw = RawRecord(
                topic=message.topic,
                partition=partition,
                offset=message.offset,
                timestamp_ms=message.timestamp,
                key=message.key,
                value=message.value,
                headers=_headers(message.headers),
            )
            outcome = process(raw, view)
            if outcome.writes:
                view.apply(outcome.writes)
            if outcome.publishes_change:
                outbox.add(
                    partition, changes_name, partition, outcome.key, outcome.value, outcome.headers
                )
            elif outcome.kind is OutcomeKind.SCHEDULED:
                track(partition, outcome.writes)
            elif outcome.kind is OutcomeKind.DEAD_LETTER:
                outbox.add(partition, dlq_name, DEAD_LETTER_PARTITION, outcome.key, outcome.value)
                log.warning(
                    "dead-lettered %s[%d]@%d: %s", raw.topic, partition, raw.offset, outcome.reason
                )
            count(outcome.kind)

    agent = exactly_once_agent(app, actions, "process_actions", handle)

    @app.on_partitions_revoked.connect
    async def forget_revoked(sender: faust.App, revoked: set[TP], **kwargs: Any) -> None:
        for view in views.values():
            view.discard_pending()
        views.clear()
        scheduler.forget()

    @app.task
    async def fire_schedules() -> None:
        await scheduler.run()

    return agent


def exactly_once_agent(
    app: faust.App,
    topic: faust.types.TopicT,
    name: str,
    handle: PartitionHandler,
) -> faust.types.AgentT:
    """An agent calling ``handle`` on the records of ``topic``, in batches, exactly once.

    ``handle`` must put everything the records produce in the app's outbox
    (:func:`~processors.exactly_once.exactly_once_state`), synchronously: it runs under the
    gate, so a commit takes all of a record or none of it. Between chunks the agent hands a
    full outbox to the producers (unless a commit is under way), and when it has nothing
    left to do and has caught up with what the broker holds, it asks for a commit (at most one
    per :data:`IDLE_COMMIT_GAP_S`).
    """
    exactly_once = exactly_once_state(app)
    outbox = exactly_once.outbox
    if outbox is None:
        raise ValueError("give the app its TransactionalOutbox before declaring the agent")
    batches: faust.ChannelT[Any] = app.channel(maxsize=BATCH_QUEUE)
    batch_source(app, topic.get_topic_name(), batches, lambda: exactly_once.epoch)
    app.topics.add(topic)  # subscribed, though no stream iterates it
    idle = asyncio.Event()

    async def process_batch(batch: FetchedBatch) -> None:
        gate = exactly_once.gate
        for tp, records in batch.parts:
            for start in range(0, len(records), CHUNK):
                async with gate:
                    if batch.epoch != exactly_once.epoch:
                        return  # a rebalance or stop came first: the next owner redoes it
                    chunk = records[start : start + CHUNK]
                    handle(tp, chunk)
                    exactly_once.mark_processed(tp, chunk[-1].offset)
                if outbox.pending_bytes >= outbox.flush_bytes and (
                    not exactly_once.sending.locked() or outbox.pending_bytes >= OUTBOX_HARD_LIMIT
                ):
                    # Between chunks, never while a commit is under way: what is flushed
                    # belongs to the transactions that commit next.
                    async with exactly_once.sending:
                        await outbox.flush()
                await asyncio.sleep(0)

    @app.agent(batches, name=name, concurrency=1)
    async def process(stream: faust.StreamT[Any]) -> None:
        async for batch in stream:
            try:
                await process_batch(batch)
                if stream.channel.empty():
                    idle.set()
            except Exception as exc:
                # Not a bad record (those become dead letters) but the store or the
                # transaction failing: stop, so that nothing half-done gets committed.
                log.exception("processing failed; stopping the worker")
                await app.crash(exc)
                raise

    @app.task
    async def commit_when_idle() -> None:
        # Commit as soon as the agent has caught up with its partitions, not only on the
        # commit timer: a change is readable once its transaction commits. While a backlog
        # waits on the broker (the agent may still run dry between two fetches) commits
        # follow the timer (``broker_commit_interval``), a batch at a time.
        while not app.should_stop:
            await idle.wait()
            # Commits cost the broker a marker per partition written: at most one idle
            # commit per IDLE_COMMIT_GAP_S, so a backlog drained in short bursts does
            # not turn into a stream of tiny transactions.
            await asyncio.sleep(exactly_once.last_commit_at + IDLE_COMMIT_GAP_S - time.monotonic())
            idle.clear()
            if app.rebalancing or not _caught_up(app.consumer, exactly_once.processed):
                continue  # more records wait on the broker: the commit timer batches them
            try:
                await app.consumer.commit()  # commits nothing when everything is committed
            except Exception:  # noqa: BLE001 - a failed commit has stopped the worker
                return

    @app.on_partitions_revoked.connect
    async def forget_revoked(sender: faust.App, revoked: set[TP], **kwargs: Any) -> None:
        exactly_once.forget(revoked)

    return process


def _caught_up(consumer: Any, processed: Mapping[TP, int]) -> bool:
    """Whether every partition's processed position has reached its known end."""
    for tp, next_offset in processed.items():
        try:
            end = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - not known (yet): assume nothing waits
            continue
        if end is not None and next_offset < end:
            return False
    return True


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    if isinstance(headers, Mapping):
        return [(str(k), bytes(v or b"")) for k, v in headers.items()]
    return [(str(k), bytes(v or b"")) for k, v in headers]
