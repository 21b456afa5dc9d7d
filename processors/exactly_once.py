"""Exactly-once processing that holds under kill -9, on top of Faust's Kafka transactions.

faust-streaming 0.15.3 opens one transactional producer per assigned source partition
(``{app_id}-{group}-{partition}``) and commits the consumed offsets with it. Read closely,
its mechanism leaks in three places, each of which loses or repeats a change after a crash:

1. **Outputs outside the transaction.** ``TransactionManager.send`` picks the producer from
   the *destination* topic's partition, looked up in the consumer's metadata. A topic the app
   only writes to (``changes``, ``actions.dlq``) is not there, so the record goes out through
   the plain, non-transactional producer: it survives the abort of the transaction whose
   offsets never got committed, and is produced again after the restart (a duplicate).
   Where the topic is known, the record rides in the transaction of the *destination*
   partition, which commits independently of the source partition it came from.
2. **Commits in the middle of an event.** Offsets are committed by a timer and by the fetcher,
   concurrently with the agent, and table changelog records wait in an asynchronous buffer.
   A commit can thus carry the outputs of an event whose offset it does not commit (a
   duplicate after a crash), or commit an offset whose changelog records are still in the
   buffer and land in the next, never committed, transaction (a table that forgets).
3. **Local state ahead of the changelog.** RocksDB is written immediately, transaction or
   not. After a crash the store holds writes of aborted transactions (an event id marked
   seen whose change was never committed would be dropped as a duplicate when the event is
   processed again). And the "persisted offset" Faust keeps for a quick restore is never
   written under exactly-once (it is keyed by the changelog partition, looked up by the
   source one), so every start restores the changelogs from the beginning anyway.

What this module does instead, and what the agents rely on:

* :class:`TransactionalOutbox` collects every record an event produces (change, dead
  letter, changelog entries of the tables) under the event's **source** partition and hands
  them to that partition's transactional producer, so they commit or abort together with the
  event's offset.
* :class:`GatedTransactionManager` replaces Faust's commit: it takes the :attr:`gate` the
  agent holds while it processes one event, flushes the outbox, and notes exactly the
  offsets of the events fully processed (tracked here, not Faust's ack bookkeeping). Then it
  lets go of the gate and commits each partition's transaction, in parallel, while the agent
  goes on with the next events: their records wait in the outbox (which nothing flushes
  while :attr:`ExactlyOnceState.sending` is held) and go into the next transactions. A
  final commit (stop, revocation: no transaction follows) keeps the gate to the end.
* The agent marks each batch's records processed (:meth:`ExactlyOnceState.mark_processed`);
  every commit Faust asks for (its commit timer, a rebalance, a stop) and every commit the
  agent asks for when it has caught up lands in :class:`GatedTransactionManager`
  (:class:`~processors.faust_adapter.BatchingConsumer` routes them there), so one
  transaction per partition carries whole batches. A rebalance moves :attr:`ExactlyOnceState.epoch`
  on, under the gate, once the final commit is done: batches fetched before it are dropped.
* :func:`committed_changelog_ends` tells Faust's table recovery where each changelog's committed
  data ends. Faust aims at the last stable offset minus one, which under transactions is a
  commit or abort marker that is never delivered; it then notices only after two idle
  five-second polls. Restarts (after a crash, say) are ready some ten seconds sooner.
* :func:`discard_local_tables` removes the local RocksDB files before the worker starts, so
  tables are restored from the committed (``read_committed``) changelogs only; this costs no
  more than the full restore Faust performs at every start anyway.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import kafka
from faust.transport.consumer import TransactionManager
from faust.types import TP

from processors.errors import ProcessingError
from processors.faust_adapter import (
    BatchingApp,
    committed_table_manager,
    transaction_lock,
    transactional_producer,
)

log = logging.getLogger(__name__)

DEFAULT_FLUSH_BYTES = 256 * 1024


class ExactlyOnceError(ProcessingError):
    """The transactional machinery is not in a state where processing may go on."""


@dataclass
class _PendingBatch:
    builder: Any
    topic: str
    partition: int
    size: int = 0


@dataclass
class ExactlyOnceState:
    """What the agent and the commit share: the gate, the outbox and processed offsets."""

    gate: asyncio.Lock = field(default_factory=asyncio.Lock)
    sending: asyncio.Lock = field(default_factory=asyncio.Lock)
    processed: dict[TP, int] = field(default_factory=dict)
    committed: dict[TP, int] = field(default_factory=dict)
    outbox: TransactionalOutbox | None = None
    commits: int = 0
    """Commit rounds that committed something (one transaction per partition each)."""
    transactions: int = 0
    """Transactions committed: one per partition of each commit round."""
    commit_seconds: float = 0.0
    last_commit_at: float = 0.0
    epoch: int = 0
    """Moves on at every rebalance and stop; batches fetched in an earlier epoch are dropped."""
    before_commit: list[Callable[[], None]] = field(default_factory=list)
    """Called under the gate before each commit (the tables write their pending batches)."""
    after_commit: list[Callable[[float], None]] = field(default_factory=list)
    """Called with the seconds a commit round took, after each one that committed."""
    touched: set[TP] = field(default_factory=set)
    """Partitions whose outbox holds records caused by no consumed record (a timer's)."""

    def mark_processed(self, tp: TP, offset: int) -> None:
        """The event at ``offset`` and all before it are done; commit up to offset + 1."""
        self.processed[tp] = offset + 1

    def mark_touched(self, tp: TP) -> None:
        """Something not caused by a record (a scheduled firing) was added to ``tp``'s
        outbox, under the gate: the next commit commits ``tp``'s transaction even if no
        offset of it moved."""
        self.touched.add(tp)

    def forget(self, tps: Sequence[TP] | set[TP]) -> None:
        """Drop the bookkeeping of partitions this worker no longer owns."""
        self.epoch += 1
        for tp in tps:
            self.processed.pop(tp, None)
            self.committed.pop(tp, None)
            self.touched.discard(tp)
        if self.outbox is not None:
            self.outbox.discard({tp.partition for tp in tps})


_STATES: weakref.WeakKeyDictionary[faust.App, ExactlyOnceState] = weakref.WeakKeyDictionary()


def exactly_once_state(app: faust.App) -> ExactlyOnceState:
    """The app's shared exactly-once state, created on first use."""
    state = _STATES.get(app)
    if state is None:
        state = _STATES[app] = ExactlyOnceState()
    return state


def transactional_id(app: faust.App, source_topic: str, partition: int) -> str:
    """Faust's transactional id of ``partition`` of the source topic (see its consumer.py)."""
    group = app.assignor.group_for_topic(source_topic)
    return f"{app.conf.id}-{group}-{partition}"


class TransactionalOutbox:
    """Records produced while processing events, grouped by the event's source partition.

    ``add`` appends to an aiokafka batch for (source partition, topic, partition) without
    awaiting anything; ``flush`` submits the batches to the source partition's transactional
    producer. Whatever is flushed before a commit belongs to that commit.
    """

    def __init__(
        self, app: faust.App, source_topic: str, *, flush_bytes: int = DEFAULT_FLUSH_BYTES
    ) -> None:
        self.app = app
        self.source_topic = source_topic
        self.flush_bytes = flush_bytes
        self._batches: dict[int, dict[tuple[str, int], _PendingBatch]] = {}
        self._full: dict[int, list[_PendingBatch]] = {}
        self._pending_bytes = 0
        self._delivery: list[asyncio.Future[Any]] = []

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def add(
        self,
        source_partition: int,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Queue one record to commit with ``source_partition``'s offsets."""
        batches = self._batches.setdefault(source_partition, {})
        slot = (topic, partition)
        pending = batches.get(slot)
        if pending is None:
            pending = batches[slot] = self._new_batch(source_partition, topic, partition)
        metadata = pending.builder.append(
            key=key, value=value, timestamp=None, headers=list(headers)
        )
        if metadata is None:  # full: start another batch; the full one goes out on flush
            full = pending
            batches[slot] = pending = self._new_batch(source_partition, topic, partition)
            self._full.setdefault(source_partition, []).append(full)
            metadata = pending.builder.append(
                key=key, value=value, timestamp=None, headers=list(headers)
            )
            if metadata is None:
                raise ExactlyOnceError(f"a record for {topic} does not fit in an empty batch")
        size = len(value or b"") + len(key or b"")
        pending.size += size
        self._pending_bytes += size

    async def flush(self) -> None:
        """Hand every queued batch to its transactional producer (does not wait for acks)."""
        for partition in list(self._batches.keys() | self._full.keys()):
            queued = self._full.pop(partition, [])
            queued.extend(self._batches.pop(partition, {}).values())
            if not queued:
                continue
            producer = self._producer(partition)
            for pending in queued:
                delivery = await producer.send_batch(
                    pending.builder, pending.topic, partition=pending.partition
                )
                self._delivery.append(delivery)
        self._pending_bytes = 0
        self._raise_failed_deliveries()

    def discard(self, partitions: set[int]) -> None:
        """Forget what was queued for partitions given up: their transactions will abort."""
        for partition in partitions:
            self._batches.pop(partition, None)
            self._full.pop(partition, None)

    def _raise_failed_deliveries(self) -> None:
        still_pending = []
        for future in self._delivery:
            if not future.done():
                still_pending.append(future)
            elif not future.cancelled() and future.exception() is not None:
                raise ExactlyOnceError(f"a transactional send failed: {future.exception()!r}")
        self._delivery = still_pending

    def _new_batch(self, source_partition: int, topic: str, partition: int) -> _PendingBatch:
        return _PendingBatch(self._producer(source_partition).create_batch(), topic, partition)

    def _producer(self, source_partition: int) -> Any:
        tid = transactional_id(self.app, self.source_topic, source_partition)
        producer = transactional_producer(self.app, tid)
        if producer is None:
            raise ExactlyOnceError(f"no transactional producer {tid} (fenced or not started)")
        return producer


class GatedTransactionManager(TransactionManager):
    """Faust's transaction manager with a commit that is atomic with event processing."""

    async def commit(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        """Commit every processed offset (``offsets``, Faust's view, is not used)."""
        state = exactly_once_state(self.app)
        began = time.monotonic()
        rounds = state.commits
        try:
            async with state.sending:
                async with state.gate:
                    due = await self._take_processed(state)
                    if not start_new_transaction:  # a last commit: nothing may follow it
                        # Batches fetched until now belong to transactions that end here.
                        state.epoch += 1
                        return await self._commit_due(state, due, start_new=False)
                return await self._commit_due(state, due, start_new=True)
        except Exception as exc:
            # Nothing of the failed transactions is visible; the restarted worker
            # resumes from the last committed offsets.
            log.error("transaction commit failed, stopping the worker: %r", exc)
            await self.app.crash(exc)
            raise
        finally:
            state.last_commit_at = time.monotonic()
            elapsed = state.last_commit_at - began
            state.commit_seconds += elapsed
            if state.commits != rounds:
                for observe in state.after_commit:
                    observe(elapsed)

    async def _take_processed(self, state: ExactlyOnceState) -> dict[TP, int | None]:
        """Hand the outbox to the producers; the offsets that commit with it (``None``: a
        touched partition whose transaction commits records but no offset)."""
        for write_pending in state.before_commit:
            write_pending()
        if state.outbox is not None:
            await state.outbox.flush()
        assigned = self.consumer.assignment()
        due: dict[TP, int | None] = {
            tp: offset
            for tp, offset in state.processed.items()
            if tp in assigned and offset > state.committed.get(tp, -1)
        }
        for tp in state.touched:
            if tp in assigned:
                due.setdefault(tp, None)
        state.touched.clear()
        return due

    async def _commit_due(
        self, state: ExactlyOnceState, due: dict[TP, int | None], start_new: bool
    ) -> bool:
        if not due:
            return False
        group_id = self.app.conf.id
        await asyncio.gather(
            *(self._commit_one(tp, offset, group_id, start_new) for tp, offset in due.items())
        )
        state.committed.update({tp: offset for tp, offset in due.items() if offset is not None})
        state.commits += 1
        state.transactions += len(due)
        return True

    async def _commit_one(self, tp: TP, offset: int | None, group_id: str, start_new: bool) -> None:
        tid = transactional_id(self.app, tp.topic, tp.partition)
        async with transaction_lock(self.app, tid):
            transaction = transactional_producer(self.app, tid)
            if transaction is None:
                raise ExactlyOnceError(f"no transactional producer {tid} to commit {tp}")
            if offset is not None:
                await transaction.send_offsets_to_transaction({tp: offset}, group_id)
            await transaction.commit_transaction()
            if start_new:
                await transaction.begin_transaction()


async def committed_changelog_ends(app: faust.App, tps: set[TP]) -> dict[TP, int]:
    """Where each changelog's committed data ends, asked of the broker (for recovery).

    Faust reads the highwater of a changelog, under transactions, from the last stable
    offset its consumer saw in a fetch response: right after a rebalance that is ``-1``.
    This asks with a ``read_committed`` ListOffsets request, in a thread.
    """
    servers = [f"{url.host}:{url.port or 9092}" for url in app.conf.broker_consumer]
    return await asyncio.get_running_loop().run_in_executor(
        None, last_committed_offsets, servers, set(tps)
    )


CommittedTableManager = committed_table_manager(committed_changelog_ends)


def last_committed_offsets(servers: list[str], tps: set[TP]) -> dict[TP, int]:
    """Offset of the last committed data record of each partition (-1 when none).

    Asks the broker for each partition's last stable offset, then reads backwards from it
    in growing windows with a ``read_committed`` consumer, which skips the records of
    aborted transactions and the transaction markers. Blocking: the recovery runs it in a
    thread.
    """
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
    )
    try:
        partitions = {tp: kafka.TopicPartition(tp.topic, tp.partition) for tp in tps}
        ends = consumer.end_offsets(list(partitions.values())) if partitions else {}
        return {
            tp: _last_committed(consumer, partition, ends[partition]) if ends[partition] else -1
            for tp, partition in partitions.items()
        }
    finally:
        consumer.close()


def _last_committed(consumer: Any, partition: Any, end: int) -> int:
    consumer.assign([partition])
    window = 256
    while True:
        start = max(0, end - window)
        consumer.seek(partition, start)
        last = -1
        while consumer.position(partition) < end:
            for record in consumer.poll(timeout_ms=500).get(partition, ()):
                if record.offset < end:
                    last = max(last, record.offset)
        if last >= 0 or start == 0:
            return last
        window *= 16


class ExactlyOnceApp(BatchingApp):
    """A batching app whose commits go through :class:`GatedTransactionManager`."""

    transaction_manager = GatedTransactionManager


def discard_local_tables(app: faust.App) -> Path:
    """Remove the app's local table files; the worker restores them from the changelogs."""
    tables = Path(app.conf.tabledir)
    if tables.exists():
        shutil.rmtree(tables)
        log.info("removed local table state %s; restoring from changelogs", tables)
    return tables
