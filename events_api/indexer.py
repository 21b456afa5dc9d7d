"""Reads ``changes`` into the feed index, in every worker, and purges it past retention.

One aiokafka consumer per worker, with **all** partitions assigned manually (no consumer
group: every worker wants everything) and ``read_committed`` isolation, so an event is
indexed only once the processors' transaction that produced it has committed. It resumes
from the positions stored in the index, which advance in the same SQLite transaction as the
rows: a crash never indexes a record twice nor skips one. Reading, decoding, rendering and
writing run in a child process that owns the index's write connection and the consumer
(:class:`IndexWriter`), so they cost the worker's event loop (which also runs the processors
and the web server) no time under its interpreter lock: indexing uses the other core, and
only a short report of each batch (tenants, count, positions, ends) comes back. The worker
reads the same SQLite file (WAL: readers never wait for the writer). After each committed
batch the tenants that received events are woken (:class:`~events_api.signals.TenantSignals`).

Kafka having deleted offsets the index never read (a worker down for longer than the
retention) is recorded as a gap (``gone_below``), never papered over: cursors from before
it get 410.

No poison record: a record that does not decode, does not render as strict JSON, or that
SQLite refuses is logged, counted (:attr:`FeedIndexer.skipped`, in ``/metrics`` and
``/healthz``) and skipped; it never blocks a partition nor fails its batch.

Health (:meth:`FeedIndexer.health`, decided by :func:`index_health`): the index is
**stuck** when following ``changes`` has failed for :data:`STUCK_AFTER_S` without a
success in between, and **lagging** when records the broker reported committed
:data:`MAX_LAG_S` ago are still not indexed (:class:`LagTracker`); either makes the
worker's ``/healthz`` answer 503 with the reason. Repeated failures are logged once, then
once a minute with a count, not every retry.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from events_api.errors import FeedError
from events_api.events import CHANGE_EVENT_SCHEMA, epoch_micros, event_json
from events_api.index import FeedIndex, IndexedEvent
from events_api.signals import TenantSignals

log = logging.getLogger(__name__)

RETRY_S = 1.0
STUCK_AFTER_S = 30.0
MAX_LAG_S = 60.0
LAG_SAMPLE_S = 1.0
FAILURE_LOG_INTERVAL_S = 60.0
PURGE_INTERVAL_S = 60.0
MAX_BATCH = 5000
GROW_BATCH_FROM = 500
"""A read of this many records or more means the index is behind: it reads on (while reads
of up to :data:`GROW_WAIT_MS` bring more) up to :data:`MAX_BATCH` records before writing (at
1,500 rows a transaction SQLite spends ~15 % more per row than at 5,000)."""
GROW_WAIT_MS = 10
PARENT_CHECK_S = 0.5
# Inserts touch the tail of the indexes only: a small page cache and no memory map (whose
# touched pages would count in the writer's RSS) serve them.
WRITER_CACHE_MB = 16


class Codec(Protocol):
    def decode(self, data: bytes, name: str, *, timestamps: Any = ...) -> dict[str, Any]: ...


def to_indexed(codec: Codec, partition: int, offset: int, value: bytes) -> IndexedEvent:
    """The index row of one ``changes`` record; raises on bytes that are not one, and on a
    record whose rendering is not storable, strict JSON (see :func:`check_storable`)."""
    change = codec.decode(value, CHANGE_EVENT_SCHEMA, timestamps="micros")
    body = event_json(change, partition, offset)
    actor = change.get("actor") or {}
    event = IndexedEvent(
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
    check_storable(event)
    return event


def check_storable(event: IndexedEvent) -> None:
    """Raise ``UnicodeEncodeError`` if a text of ``event`` is not valid Unicode (SQLite
    would refuse it in the middle of a batch); cheap for the usual ASCII ids."""
    for text in (
        event.body,
        event.tenant_id,
        event.change_id,
        event.request_id,
        event.event_type,
        event.subject_type,
        event.subject_id,
        event.user_id or "",
        event.action,
    ):
        if not text.isascii():
            text.encode("utf-8")


RawChange = tuple[int, int, bytes]  # partition, offset, value


class LagTracker:
    """When did the broker first report, as committed, a record the index still lacks?

    Each observation records the partitions' ends (last stable offsets) with the time,
    at most one every :data:`LAG_SAMPLE_S`; an observation is forgotten once the index
    positions reached all its ends. The oldest one left says since when the index has
    been behind by at least one record it was told about.
    """

    def __init__(self) -> None:
        self._samples: collections.deque[tuple[float, dict[int, int]]] = collections.deque()

    def observe(self, now: float, ends: dict[int, int], positions: dict[int, int]) -> None:
        self._drop_reached(positions)
        behind = any(positions.get(p, 0) < end for p, end in ends.items())
        if behind and (not self._samples or now - self._samples[-1][0] >= LAG_SAMPLE_S):
            self._samples.append((now, dict(ends)))

    def behind_since(self) -> float | None:
        return self._samples[0][0] if self._samples else None

    def _drop_reached(self, positions: dict[int, int]) -> None:
        while self._samples and all(
            positions.get(p, 0) >= end for p, end in self._samples[0][1].items()
        ):
            self._samples.popleft()


def index_health(
    now: float,
    *,
    failing_since: float | None,
    last_error: str,
    behind_since: float | None,
    skipped: int,
    last_skip: str,
    stuck_after_s: float = STUCK_AFTER_S,
    max_lag_s: float = MAX_LAG_S,
) -> tuple[bool, str, dict[str, Any]]:
    """The feed index's verdict: (ok, reason, details). Skipped records are reported, and
    do not fail health: they cannot be indexed, and everything else is."""
    lag_s = 0.0 if behind_since is None else now - behind_since
    details: dict[str, Any] = {"lag_s": round(lag_s, 1), "skipped_records": skipped}
    if last_skip:
        details["last_skipped"] = last_skip
    if failing_since is not None and now - failing_since >= stuck_after_s:
        reason = f"the feed index is stuck: failing for {now - failing_since:.0f}s ({last_error})"
        return False, reason, details
    if lag_s >= max_lag_s:
        return False, f"the feed index lags: records {lag_s:.0f}s old are not indexed", details
    return True, "", details


class ReadReport(NamedTuple):
    """What the writer process says of one batch it read and indexed."""

    tenants: set[str]
    indexed: int
    positions: dict[int, int]
    """The next offset to read, per partition."""
    ends: dict[int, int]
    """Each partition's end as the fetches reported it: the last stable offset, else the
    high watermark."""
    stable: dict[int, int]
    """The last stable offsets the fetches reported (partitions not fetched yet: absent)."""


class _Reader:
    """The consumer of ``changes`` inside the writer process, on that process's event loop."""

    def __init__(self, bootstrap: str, topic: str, index: FeedIndex) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.index = index
        self.consumer: AIOKafkaConsumer | None = None
        self.tps: list[TopicPartition] = []

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self.consumer.start()
        self.tps = await self._assign(self.consumer)

    async def read(self) -> tuple[list[RawChange], dict[int, int]]:
        """The next records (at most :data:`MAX_BATCH`, waiting up to a second for some)
        and the positions after them."""
        consumer, tps = self.consumer, self.tps
        assert consumer is not None
        batches = await consumer.getmany(*tps, timeout_ms=1000, max_records=MAX_BATCH)
        records = _values(tps, batches)
        behind = sum(len(messages) for messages in batches.values()) >= GROW_BATCH_FROM
        while behind and len(records) < MAX_BATCH:
            # Behind the topic: read on (fetches in flight answer within milliseconds), so
            # that one transaction inserts more rows (SQLite's cost per row falls with it).
            more = await consumer.getmany(
                *tps, timeout_ms=GROW_WAIT_MS, max_records=MAX_BATCH - len(records)
            )
            if not more:
                break
            records += _values(tps, more)
        positions = {tp.partition: await consumer.position(tp) for tp in tps}
        return records, positions

    def ends(self) -> tuple[dict[int, int], dict[int, int]]:
        """(ends, last stable offsets) as the consumer's fetches reported them."""
        assert self.consumer is not None
        ends, stable = {}, {}
        for tp in self.tps:
            end = self.consumer.last_stable_offset(tp)
            if end is not None:
                stable[tp.partition] = end
            else:
                end = self.consumer.highwater(tp)
            if end is not None:
                ends[tp.partition] = end
        return ends, stable

    async def end_offsets(self) -> dict[int, int]:
        assert self.consumer is not None
        ends = await self.consumer.end_offsets(self.tps)
        return {tp.partition: offset for tp, offset in ends.items()}

    async def stop(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await consumer.stop()

    async def _partitions_of_topic(self) -> set[int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics([self.topic])
        finally:
            await admin.close()
        return {
            part["partition"]
            for topic in described
            if topic.get("topic") == self.topic and not topic.get("error_code")
            for part in topic.get("partitions", ())
        }

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        # The consumer's partitions_for_topic() only knows topics already assigned.
        partitions = await self._partitions_of_topic()
        if not partitions:
            raise FeedError(f"topic {self.topic} does not exist (yet)")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        known = self.index.partitions()
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
                self.index.skip_to(tp.partition, start)
            else:
                start = state.next_offset
            consumer.seek(tp, start)
        if fresh:
            self.index.begin_partitions(fresh)
        return tps


class _ChildIndex:
    """The writing side of one index, inside the writer process (one per process)."""

    index: FeedIndex | None = None
    codec: Codec | None = None
    topic: str = ""
    skipped: int = 0
    last_skip: str = ""
    loop: asyncio.AbstractEventLoop | None = None
    reader: _Reader | None = None

    @classmethod
    def setup(cls, parent: int, path: str, topic: str) -> None:
        # The parent handles Ctrl-C and SIGTERM and closes the writer itself.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # A parent killed outright (SIGKILL) cannot close the writer: leave with it. The
        # parent's pid comes from the parent: one killed while this process was starting
        # has already left, and os.getppid() here would name whoever adopted us.
        threading.Thread(
            target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True
        ).start()
        from schemas.codec import default_codec

        cls.index = FeedIndex(Path(path), topic, cache_mb=WRITER_CACHE_MB, mmap_mb=0)
        cls.codec = default_codec()
        cls.topic = topic
        cls.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(cls.loop)

    @classmethod
    def call(cls, method: str, *args: Any) -> tuple[Any, int, int, str]:
        """Run ``method`` here (one of :data:`_CHILD_CALLS`) or on the index; the result,
        then the index's ``max_regression_us`` and the count and last of skipped records,
        which readers and health need. An error other than the events API's own comes back
        as a :class:`FeedError` naming it (the parent gets every error it can unpickle)."""
        assert cls.index is not None
        fn = getattr(cls, method) if method in _CHILD_CALLS else getattr(cls.index, method)
        try:
            result = fn(*args)
        except FeedError:
            raise
        except Exception as exc:
            raise FeedError(f"{type(exc).__name__}: {exc}") from None
        return result, cls.index.max_regression_us, cls.skipped, cls.last_skip

    @classmethod
    def follow_start(cls, bootstrap: str) -> None:
        """Start reading the topic where the index left it (any earlier reader stopped)."""
        assert cls.index is not None and cls.loop is not None
        cls.follow_stop()
        reader = _Reader(bootstrap, cls.topic, cls.index)
        try:
            cls.loop.run_until_complete(reader.start())
        except BaseException:
            cls.loop.run_until_complete(reader.stop())
            raise
        cls.reader = reader

    @classmethod
    def follow_step(cls) -> ReadReport:
        """Read the next records (waiting up to a second for some) and index them."""
        assert cls.loop is not None
        if cls.reader is None:
            raise FeedError("the feed index is not reading its topic")
        records, positions = cls.loop.run_until_complete(cls.reader.read())
        tenants, indexed = cls.write(records, positions)
        ends, stable = cls.reader.ends()
        return ReadReport(tenants, indexed, positions, ends, stable)

    @classmethod
    def follow_stop(cls) -> None:
        assert cls.loop is not None
        reader, cls.reader = cls.reader, None
        if reader is not None:
            cls.loop.run_until_complete(reader.stop())

    @classmethod
    def end_offsets(cls) -> dict[int, int]:
        """The current end (last stable offset) of every partition, asked of the broker."""
        assert cls.loop is not None
        if cls.reader is None:
            raise FeedError("the feed index is not reading its topic")
        return cls.loop.run_until_complete(cls.reader.end_offsets())

    @classmethod
    def write(cls, records: list[RawChange], positions: dict[int, int]) -> tuple[set[str], int]:
        """Decode, render, insert, advance; one transaction. The tenants and the count.

        A record that does not decode or render, or that SQLite refuses, is skipped: logged
        and counted, never retried, so no record can stop the feed of every tenant.
        """
        assert cls.index is not None and cls.codec is not None
        events = []
        for partition, offset, value in records:
            try:
                events.append(to_indexed(cls.codec, partition, offset, value))
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the feed
                cls._skip(partition, offset, exc)
        known = cls.index.partitions()
        moved = {p: o for p, o in positions.items() if p not in known or known[p].next_offset < o}
        if not events and not moved:
            return set(), 0
        tenants, refused = cls.index.add(events, moved)
        for event, error in refused:
            cls._skip(event.partition, event.offset, error)
        return tenants, len(events) - len(refused)

    @classmethod
    def _skip(cls, partition: int, offset: int, exc: BaseException) -> None:
        cls.skipped += 1
        cls.last_skip = f"{cls.topic}[{partition}]@{offset}: {type(exc).__name__}"
        log.warning("not indexing %s[%d]@%d: %s", cls.topic, partition, offset, exc)


def _values(tps: list[TopicPartition], batches: dict[TopicPartition, list[Any]]) -> list[RawChange]:
    return [
        (m.partition, m.offset, m.value)
        for tp in tps
        for m in batches.get(tp, [])
        if m.value is not None
    ]


_CHILD_CALLS = frozenset({"follow_start", "follow_step", "follow_stop", "end_offsets"})


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)  # an open write transaction is rolled back by SQLite's journal


class IndexWriter:
    """A child process holding the write connection of ``index``; calls run there, in order.

    Readers in this process keep using ``index`` (its read connections); what they need of
    the writer's state (``max_regression_us``) is copied back after every call.
    """

    def __init__(self, index: FeedIndex) -> None:
        self.index = index
        self.skipped = 0
        self.last_skip = ""
        self._pool = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_ChildIndex.setup,
            initargs=(os.getpid(), str(index.path), index.topic),
        )

    async def call(self, method: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        result, regression, skipped, last_skip = await loop.run_in_executor(
            self._pool, _ChildIndex.call, method, *args
        )
        self.index.adopt_max_regression(regression)
        self.skipped, self.last_skip = skipped, last_skip
        return result

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class FeedIndexer:
    """Keeps a :class:`FeedIndex` up to date with one ``changes`` topic."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        index: FeedIndex,
        signals: TenantSignals,
        retention_ms: int,
        purge_interval_s: float = PURGE_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.index = index
        self.signals = signals
        self.retention_ms = retention_ms
        self.purge_interval_s = purge_interval_s
        self.clock = clock
        self.indexed = 0
        self.failing_since: float | None = None
        self.last_error = ""
        self.lag = LagTracker()
        self._writer: IndexWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._progress = asyncio.Condition()
        self._assigned = asyncio.Event()
        self._positions: dict[int, int] = {}
        self._stable: dict[int, int] = {}

    @property
    def following(self) -> bool:
        """Whether the indexer is assigned every partition of its topic and reading."""
        return self._assigned.is_set() and bool(self._positions)

    def records_behind(self) -> dict[int, int]:
        """Committed records not indexed yet, by partition, where the end is known (from
        the latest fetch: empty until the indexer has fetched)."""
        lag = {}
        for partition, end in self._stable.items():
            position = self._positions.get(partition)
            if position is not None:
                lag[partition] = max(0, end - position)
        return lag

    @property
    def skipped(self) -> int:
        """Records of ``changes`` not indexed: undecodable, unrenderable or refused."""
        return 0 if self._writer is None else self._writer.skipped

    def health(self) -> tuple[bool, str, dict[str, Any]]:
        """See :func:`index_health`; ``details`` also carries the indexed count."""
        ok, reason, details = index_health(
            time.monotonic(),
            failing_since=self.failing_since,
            last_error=self.last_error,
            behind_since=self.lag.behind_since(),
            skipped=self.skipped,
            last_skip="" if self._writer is None else self._writer.last_skip,
        )
        return ok, reason, {**details, "indexed": self.indexed}

    async def start(self) -> None:
        self._writer = IndexWriter(self.index)
        await self._on_writer("open")
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
        if self._writer is not None:
            await self._on_writer("close")
            self._writer.shutdown()
            self._writer = None

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
            ends: dict[int, int] = await asyncio.wait_for(
                self._on_writer("end_offsets"), max(0.1, deadline - loop.time())
            )
        except (FeedError, TimeoutError):
            return None
        return ends

    async def _on_writer(self, method: str, *args: Any) -> Any:
        if self._writer is None:
            raise FeedError("the feed indexer is not started")
        return await self._writer.call(method, *args)

    async def _run(self, body: Callable[[], Any]) -> None:
        failures = 0
        last_logged = float("-inf")
        while True:
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the feed must survive broker trouble
                now = time.monotonic()
                failures += 1
                if body == self._follow:
                    if self.failing_since is None:
                        self.failing_since = now
                    self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if now - last_logged >= FAILURE_LOG_INTERVAL_S:
                    log.exception(
                        "%s failed (%d time(s) since last logged); retrying every %.0fs",
                        body.__name__,
                        failures,
                        RETRY_S,
                    )
                    last_logged, failures = now, 0
                await asyncio.sleep(RETRY_S)

    async def _follow(self) -> None:
        # The writer process reads and indexes; this process only hears what each batch did.
        try:
            await self._on_writer("follow_start", self.bootstrap)
            self._assigned.set()
            while True:
                report: ReadReport = await self._on_writer("follow_step")
                self._positions, self._stable = report.positions, report.stable
                self.indexed += report.indexed
                self.failing_since, self.last_error = None, ""
                self.lag.observe(time.monotonic(), report.ends, report.positions)
                self.signals.notify(report.tenants)
                async with self._progress:
                    self._progress.notify_all()
        finally:
            self._assigned.clear()
            self._positions, self._stable = {}, {}
            with contextlib.suppress(Exception):
                await self._on_writer("follow_stop")

    async def purge_expired(self) -> int:
        """Delete every row older than retention now; returns how many."""
        cutoff_us = int((self.clock() * 1000 - self.retention_ms) * 1000)
        purged = 0
        while True:
            n = await self._on_writer("purge", cutoff_us)
            purged += n
            if n == 0:
                return purged

    async def _purge_periodically(self) -> None:
        while True:
            purged = await self.purge_expired()
            if purged:
                log.info("purged %d feed index rows older than retention", purged)
            await self._on_writer("optimize")
            await asyncio.sleep(self.purge_interval_s)
