"""Reads ``changes`` into the feed index, in every worker, and purges it past retention.

One aiokafka consumer per worker, with **all** partitions assigned manually (no consumer
group: every worker wants everything) and ``read_committed`` isolation, so an event is
indexed only once the processors' transaction that produced it has committed. It resumes
from the positions stored in the index, which advance in the same SQLite transaction as the
rows: a crash never indexes a record twice nor skips one. Decoding, rendering and writing
run on one writer thread, so the worker's event loop (which also runs the processors and
the web server) stays free; after each committed batch the tenants that received events are
woken (:class:`~processors.feed.signals.TenantSignals`).

Kafka having deleted offsets the index never read (a worker down for longer than the
retention) is recorded as a gap (``gone_below``), never papered over: cursors from before
it get 410. A record that does not decode is logged and skipped, never blocks a partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from processors.feed.errors import FeedError
from processors.feed.events import CHANGE_EVENT_SCHEMA, epoch_micros, render_event
from processors.feed.index import FeedIndex, IndexedEvent
from processors.feed.signals import TenantSignals

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_S = 1.0
PURGE_INTERVAL_S = 60.0
MAX_BATCH = 5000
_JSON_SEPARATORS = (",", ":")


class Codec(Protocol):
    def decode(self, data: bytes, name: str) -> dict[str, Any]: ...


def to_indexed(codec: Codec, partition: int, offset: int, value: bytes) -> IndexedEvent:
    """The index row of one ``changes`` record (raises on bytes that are not one)."""
    change = codec.decode(value, CHANGE_EVENT_SCHEMA)
    body = json.dumps(
        render_event(change, partition, offset), separators=_JSON_SEPARATORS, ensure_ascii=False
    )
    actor = change.get("actor") or {}
    return IndexedEvent(
        partition=partition,
        offset=offset,
        created_us=epoch_micros(change["created_at"]),
        tenant_id=change["tenant_id"],
        change_id=change["change_id"],
        request_id=change["request_id"],
        event_type=change["event_type"],
        subject_type=change["subject_type"],
        subject_id=change["subject_id"],
        user_id=actor.get("user_id"),
        criticality=change.get("criticality", 0),
        code=change.get("code", 0),
        subject_sequence=change.get("subject_sequence", 0),
        late=bool(change.get("late", False)),
        action=str(change["action"]),
        body=body,
    )


class FeedIndexer:
    """Keeps a :class:`FeedIndex` up to date with one ``changes`` topic."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        index: FeedIndex,
        signals: TenantSignals,
        codec: Codec,
        retention_ms: int,
        purge_interval_s: float = PURGE_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.index = index
        self.signals = signals
        self.codec = codec
        self.retention_ms = retention_ms
        self.purge_interval_s = purge_interval_s
        self.clock = clock
        self.skipped = 0
        self.indexed = 0
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="feed-index-writer")
        self._tasks: list[asyncio.Task[None]] = []
        self._progress = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self._tps: list[TopicPartition] = []
        self._assigned = asyncio.Event()

    async def start(self) -> None:
        await self._on_writer(self.index.open)
        self._tasks = [
            asyncio.create_task(self._run(self._follow), name="feed-indexer"),
            asyncio.create_task(self._run(self._purge_periodically), name="feed-purger"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._on_writer(self.index.close)
        self._writer.shutdown(wait=True)

    async def wait_indexed(self, ends: dict[int, int], timeout_s: float) -> bool:
        """Whether every partition's indexed position reached ``ends`` within the time."""

        def reached() -> bool:
            parts = self.index.partitions()
            return all(p in parts and parts[p].next_offset >= o for p, o in ends.items())

        deadline = asyncio.get_running_loop().time() + timeout_s
        async with self._progress:
            while not await asyncio.to_thread(reached):
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), remaining)
        return True

    async def end_offsets(self, timeout_s: float) -> dict[int, int] | None:
        """The current end (last stable offset) of every partition, None if unknown in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            await asyncio.wait_for(self._assigned.wait(), timeout_s)
            assert self._consumer is not None
            ends = await asyncio.wait_for(
                self._consumer.end_offsets(self._tps), max(0.1, deadline - loop.time())
            )
        except (KafkaError, TimeoutError):
            return None
        return {tp.partition: offset for tp, offset in ends.items()}

    async def _on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def _run(self, body: Callable[[], Any]) -> None:
        while True:
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the feed must survive broker trouble
                log.exception("%s failed; retrying in %.0fs", body.__name__, RETRY_S)
                await asyncio.sleep(RETRY_S)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        try:
            tps = await self._assign(consumer)
            self._consumer, self._tps = consumer, tps
            self._assigned.set()
            while True:
                batches = await consumer.getmany(*tps, timeout_ms=1000, max_records=MAX_BATCH)
                positions = {tp.partition: await consumer.position(tp) for tp in tps}
                records = [m for tp in tps for m in batches.get(tp, [])]
                tenants = await self._on_writer(self._write, records, positions)
                self.signals.notify(tenants)
                async with self._progress:
                    self._progress.notify_all()
        finally:
            self._assigned.clear()
            self._consumer, self._tps = None, []
            await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        # The public partitions_for_topic() only knows topics already assigned; ask the
        # cluster (aiokafka keeps that call on its client).
        cluster = await consumer._client.fetch_all_metadata()
        partitions = cluster.partitions_for_topic(self.topic)
        if not partitions:
            raise FeedError(f"topic {self.topic} does not exist (yet)")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        known = await self._on_writer(self.index.partitions)
        fresh: dict[int, int] = {}
        for tp in tps:
            state = known.get(tp.partition)
            start = begins[tp]
            if state is None:
                fresh[tp.partition] = start
            elif state.next_offset > ends[tp]:
                raise FeedError(
                    f"the index of {self.topic} is ahead of the topic (partition "
                    f"{tp.partition}: {state.next_offset} > {ends[tp]}); was the topic "
                    f"recreated? remove {self.index.path} to rebuild it"
                )
            elif state.next_offset < start:
                log.warning(
                    "%s[%d]: offsets %d-%d expired before they were indexed",
                    self.topic,
                    tp.partition,
                    state.next_offset,
                    start - 1,
                )
                await self._on_writer(self.index.skip_to, tp.partition, start)
            else:
                start = state.next_offset
            consumer.seek(tp, start)
        if fresh:
            await self._on_writer(self.index.begin_partitions, fresh)
        return tps

    def _write(self, records: list[ConsumerRecord], positions: dict[int, int]) -> set[str]:
        """On the writer thread: decode, render, insert, advance; one transaction."""
        events = []
        for record in records:
            if record.value is None:
                continue
            try:
                events.append(to_indexed(self.codec, record.partition, record.offset, record.value))
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the feed
                self.skipped += 1
                log.warning(
                    "not indexing %s[%d]@%d: %s", self.topic, record.partition, record.offset, exc
                )
        known = self.index.partitions()
        moved = {p: o for p, o in positions.items() if p not in known or known[p].next_offset < o}
        if not events and not moved:
            return set()
        tenants = self.index.add(events, moved)
        self.indexed += len(events)
        return tenants

    async def purge_expired(self) -> int:
        """Delete every row older than retention now; returns how many."""
        cutoff_us = int((self.clock() * 1000 - self.retention_ms) * 1000)
        purged = 0
        while True:
            n = await self._on_writer(self.index.purge, cutoff_us)
            purged += n
            if n == 0:
                return purged

    async def _purge_periodically(self) -> None:
        while True:
            purged = await self.purge_expired()
            if purged:
                log.info("purged %d feed index rows older than retention", purged)
            await self._on_writer(self.index.optimize)
            await asyncio.sleep(self.purge_interval_s)
