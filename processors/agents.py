"""The ``process_actions`` agent: every ``actions`` record becomes one outcome, exactly once.

One agent instance (``concurrency=1``) handles the records of all assigned partitions, each
partition in offset order. For one record it holds the exactly-once gate (so no commit can
fall in the middle), runs :class:`~processors.pipeline.ActionPipeline`, writes the outcome's
table entries, queues the change (to ``changes``, same partition as the action, key = the
subject) or the dead letter (to ``actions.dlq``) in the outbox of the record's partition, and
marks the record processed. :mod:`processors.exactly_once` commits all of it together.

When the agent has processed everything the broker holds for its partitions it asks for a
commit at once rather than waiting for the commit timer, so that at moderate rates a change
is readable within about one transaction commit of its action arriving.

Every so often (:data:`PURGE_INTERVAL_S`) and a bounded number at a time
(:data:`PURGE_BATCH`), the agent also forgets the ids and index entries of its partition
that aged out of the retention window.
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
from processors.health import counters_of
from processors.pipeline import ActionPipeline, OutcomeKind
from processors.tables import ChangeTables, PartitionTables

log = logging.getLogger(__name__)

PURGE_INTERVAL_S = 1.0
PURGE_BATCH = 500
DEAD_LETTER_PARTITION = 0
IDLE_COMMIT_GAP_S = 0.05
OUTBOX_HARD_LIMIT = 4 * 1024 * 1024
"""Queued bytes at which the agent waits for a commit in progress to flush the outbox."""


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
    last_purge: dict[int, float] = {}

    def view_of(partition: int) -> PartitionTables:
        view = views.get(partition)
        if view is None:
            view = views[partition] = PartitionTables(tables, outbox, partition)
        return view

    def maybe_purge(view: PartitionTables, now: float) -> None:
        if now - last_purge.get(view.partition, 0.0) < PURGE_INTERVAL_S:
            return
        last_purge[view.partition] = now
        doomed = pipeline.expired(view, int(now * 1000), PURGE_BATCH)
        for table, key in doomed:
            view.forget(table, key)
        counters.purged += sum(1 for _, key in doomed if key.startswith(b"id\x00"))

    def handle(event: faust.EventT) -> None:
        message = event.message
        partition = message.partition
        view = view_of(partition)
        raw = RawRecord(
            topic=message.topic,
            partition=partition,
            offset=message.offset,
            timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
            key=message.key,
            value=message.value,
            headers=_headers(message.headers),
        )
        outcome = pipeline.process(raw, view)
        view.apply(outcome.writes)
        if outcome.publishes_change:
            outbox.add(
                partition, changes_name, partition, outcome.key, outcome.value, outcome.headers
            )
        elif outcome.kind is OutcomeKind.DEAD_LETTER:
            outbox.add(partition, dlq_name, DEAD_LETTER_PARTITION, outcome.key, outcome.value)
            log.warning(
                "dead-lettered %s[%d]@%d: %s", raw.topic, partition, raw.offset, outcome.reason
            )
        counters.count(outcome.kind)
        maybe_purge(view, time.time())

    agent = exactly_once_agent(app, actions, "process_actions", handle)

    @app.on_partitions_revoked.connect
    async def forget_revoked(sender: faust.App, revoked: set[TP], **kwargs: Any) -> None:
        views.clear()

    @app.on_partitions_assigned.connect
    async def reopen_assigned(sender: faust.App, assigned: set[TP], **kwargs: Any) -> None:
        views.clear()

    return agent


def exactly_once_agent(
    app: faust.App,
    topic: faust.types.TopicT,
    name: str,
    handle: Callable[[faust.EventT], None],
) -> faust.types.AgentT:
    """An agent calling ``handle`` on each event of ``topic``, exactly once.

    ``handle`` must put everything the event produces in the app's outbox
    (:func:`~processors.exactly_once.exactly_once_state`), synchronously: it runs under the
    gate, so a commit takes all of an event or none of it. Between events the agent hands a
    full outbox to the producers (unless a commit is under way), and when it has nothing
    left to do and has caught up with what the broker holds, it asks for a commit (at most one
    per :data:`IDLE_COMMIT_GAP_S`).
    """
    exactly_once = exactly_once_state(app)
    outbox = exactly_once.outbox
    if outbox is None:
        raise ValueError("give the app its TransactionalOutbox before declaring the agent")
    idle = asyncio.Event()

    @app.agent(topic, name=name, concurrency=1)
    async def process(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            try:
                async with exactly_once.gate:
                    handle(event)
                    exactly_once.mark_processed(event.message.tp, event.message.offset)
                if outbox.pending_bytes >= outbox.flush_bytes and (
                    not exactly_once.sending.locked() or outbox.pending_bytes >= OUTBOX_HARD_LIMIT
                ):
                    # Between events, never while a commit is under way: what is
                    # flushed belongs to the transactions that commit next.
                    async with exactly_once.sending:
                        await outbox.flush()
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
