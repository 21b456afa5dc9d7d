"""Everything the processors need of faust-streaming's and aiokafka's private parts.

The processors build on Faust (app, agents, tables, recovery, web views, table routing) but
change four of its mechanisms, and each change has to reach past Faust's public API. They
all live here, so that an upgrade of either library is checked in one place:
:data:`TESTED_VERSIONS` names the versions this module was written against, and
:func:`check_versions` (called when the worker starts, and by a unit test) refuses others
with a message saying what to re-check.

1. **Batches instead of events** (:class:`BatchingConsumer`). Faust's fetch loop hands
   every record to its topic conductor through a per-message ``wait_first`` (two awaitables
   and an ``asyncio.wait`` per record), then through a queue to the agent's stream, one
   event at a time: a ceiling of about 5,000 records/s on a 2-core machine before any work.
   The consumer here keeps Faust's group membership, assignment, pausing, seeking and
   recovery as they are, but records of a *batched* source topic (registered with
   :func:`batch_source`) go to the agent as one :class:`FetchedBatch` per fetch. Records of
   every other topic still take Faust's path. A fetch that arrives across a rebalance is
   dropped, and its batched partitions are rewound to the first dropped record, since
   Faust's seek to the committed offsets leaves a partition that has none past them.
2. **Commits that follow processed offsets** (:meth:`BatchingConsumer.force_commit`). Faust
   commits what its streams acknowledged; batches bypass the streams, so every commit Faust
   asks for (its timer, a rebalance, a stop) is handed to the transaction manager, which
   commits the offsets the agent marked processed (see :mod:`processors.exactly_once`).
3. **Transactional producers** (:func:`transactional_producer`): the outbox appends records
   to aiokafka batches of the producer that belongs to the source partition.
4. **Table storage and recovery**: the RocksDB database of one table partition
   (:func:`partition_db`, :func:`open_partition_dbs`), stores opened without RocksDB's own
   write-ahead log (:class:`ChangelogTable`), and a recovery whose changelog ends come
   from the broker (:class:`CommittedTableManager`).
5. **Web server limits** (:func:`limit_web_server`): Faust's aiohttp web driver builds its
   ``AppRunner`` with no way to pass server options; it is replaced before the server
   starts by one that applies :class:`~changefeed.config.WebLimits` (header read timeout,
   connection cap, see :mod:`changefeed.web_limits`).
6. **What the consumer knows of a partition** (:func:`fetch_state`): position, highwater
   and last stable offset from aiokafka's subscription state, for health and lag; and the
   moment Faust's web server binds its port (:func:`before_web_server_binds`), so that the
   server answering during the restore hands the port over without a gap.
7. **A fetch that never holds back a busy topic** (:class:`_ConsumerThread`). Faust builds
   its aiokafka consumer with ``fetch_max_wait_ms=1500``. aiokafka leaves out of a fetch
   request the partitions that still hold fetched records, so while the agent works
   through a backlog the request in flight can name only quiet partitions (a changelog,
   the assignor's topic): the broker then holds it the full 1.5 s, and ``actions`` waits
   behind it. Measured: at 2,700 actions/s, fetches stalled 1 s out of every 1.75 s, and
   changes became readable ~1.5 s after they were published. The worker's consumer waits
   :data:`FETCH_MAX_WAIT_MS` instead.
8. **Quiet logs** (:meth:`BatchingConsumer._commit_handler`,
   :func:`quiet_library_logs`): the commit and livelock timers run without mode's
   "Timer ... is overlapping" warning (a commit that takes longer than the commit interval
   is expected under load: the next one simply starts later), and retriable conditions
   the clients recover from by themselves are logged at INFO, not WARNING/ERROR.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import aiokafka
import faust
import rocksdict
from faust.exceptions import ConsumerNotStarted
from faust.stores import rocksdb
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import Service
from yarl import URL

from changefeed.config import WebLimits
from processors.errors import ProcessingError

log = logging.getLogger(__name__)

TESTED_VERSIONS: Mapping[str, str] = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}
"""The library versions whose private parts this module was written against."""


class UnsupportedLibraryVersion(ProcessingError):
    """An installed library differs from the version this adapter was written for."""


def installed_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in TESTED_VERSIONS}


def check_versions() -> None:
    """Refuse library versions whose private parts this module has not been checked against."""
    wrong = {
        name: version
        for name, version in installed_versions().items()
        if version != TESTED_VERSIONS[name]
    }
    if wrong:
        found = ", ".join(f"{name} {version}" for name, version in sorted(wrong.items()))
        wanted = ", ".join(f"{name} {version}" for name, version in TESTED_VERSIONS.items())
        raise UnsupportedLibraryVersion(
            f"processors/faust_adapter.py was written for {wanted}, but {found} is installed: "
            "re-check each private attribute it uses against the new version, then update "
            "TESTED_VERSIONS (or install the tested versions)"
        )


# -- 1. batches -------------------------------------------------------------------------


@dataclass
class FetchedBatch:
    """The records of one fetch for one batched source topic, by partition, in offset order.

    ``epoch`` is the exactly-once epoch current when the fetch was made: a rebalance moves
    it on, and the agent drops batches of an earlier epoch (their partitions may have moved).
    Partitions are aiokafka ``TopicPartition`` objects (equal to Faust's ``TP``), which is
    what committing offsets in a transaction asks for.
    Records are aiokafka ``ConsumerRecord`` objects (``topic``, ``partition``, ``offset``,
    ``timestamp``, ``key``, ``value``, ``headers``).
    """

    epoch: int
    parts: list[tuple[TP, list[Any]]] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(records) for _, records in self.parts)


EpochSource = Callable[[], int]


@dataclass
class _BatchedSource:
    channel: faust.ChannelT[Any]
    epoch: EpochSource


_SOURCES_ATTR = "_changefeed_batched_sources"


def batch_source(
    app: faust.App, topic: str, channel: faust.ChannelT[Any], epoch: EpochSource
) -> None:
    """Send the records of ``topic`` to ``channel`` as :class:`FetchedBatch` values."""
    sources: dict[str, _BatchedSource] = app.__dict__.setdefault(_SOURCES_ATTR, {})
    sources[topic] = _BatchedSource(channel, epoch)


def batched_topics(app: faust.App) -> set[str]:
    """The topics registered with :func:`batch_source` (the processors' source topics)."""
    return set(_batched_sources(app))


def _batched_sources(app: faust.App) -> dict[str, _BatchedSource]:
    sources: dict[str, _BatchedSource] = app.__dict__.get(_SOURCES_ATTR, {})
    return sources


FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold a fetch of the worker's consumer with nothing to return."""


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with the worker consumer's fetch wait lowered."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its Fetcher.
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise ProcessingError(
                "aiokafka.AIOKafkaConsumer no longer keeps _fetch_max_wait_ms; re-check "
                "processors/faust_adapter.py against the installed aiokafka"
            )
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class BatchingConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, with batched source topics and commits of processed offsets.

    The fetch loop replaces ``Consumer._drain_messages`` (faust/transport/consumer.py):
    the same fetch (``_wait_next_records``: active partitions only, flow control, the
    consumer thread), the same rules for what a fetch may deliver (nothing while flow is
    stopped, where Faust seeks back to the committed offsets instead; nothing from an older
    generation; nothing below the read offset), then one :class:`FetchedBatch` per batched
    topic, put on its channel (whose queue applies back-pressure and is cleared by Faust's
    flow control on a rebalance). Other topics' records go through Faust's callback, one by
    one, as before.
    """

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # noqa: C901 - one loop, read whole
        callback = self.callback
        read_offset = self._read_offset
        sources = _batched_sources(self.app)
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                epochs = {topic: source.epoch() for topic, source in sources.items()}
                generation = self.app.consumer_generation_id
                records, _ = await self._wait_next_records(1.0)
                await asyncio.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active or generation != self.app.consumer_generation_id:
                    # Fetched across a rebalance: dropped, to be fetched again. Faust seeks
                    # back to the committed offsets, but a partition with no committed offset
                    # yet would keep a position past the dropped records: those of batched
                    # topics are rewound first (the committed offset, where there is one,
                    # then wins).
                    await self._rewind_dropped(records, sources)
                    if not self.flow_active:
                        await self.perform_seek()
                    continue
                batches: dict[str, FetchedBatch] = {}
                for tp, fetched in records.items():
                    floor = read_offset.get(tp)
                    if floor is not None and fetched and fetched[0].offset < floor:
                        fetched = [record for record in fetched if record.offset >= floor]
                    if not fetched:
                        continue
                    source = sources.get(tp.topic)
                    if source is not None:
                        batch = batches.get(tp.topic)
                        if batch is None:
                            batch = batches[tp.topic] = FetchedBatch(epochs[tp.topic])
                        batch.parts.append((tp, fetched))
                        read_offset[tp] = fetched[-1].offset + 1
                        continue
                    for record in fetched:
                        await callback(self._to_message(tp, record))
                        read_offset[tp] = record.offset
                for topic, batch in batches.items():
                    channel = sources[topic].channel
                    await _wait_for_subscriber(channel)
                    await channel.put(batch)  # type: ignore[arg-type]
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    async def _rewind_dropped(
        self, records: Mapping[TP, list[Any]], sources: Mapping[str, Any]
    ) -> None:
        """Seek each batched partition of ``records`` back to its first record, unless
        something (a seek of Faust's) moved its position since the fetch."""
        assigned = self.assignment()
        for tp, fetched in records.items():
            if not fetched or tp.topic not in sources or tp not in assigned:
                continue
            state = fetch_state(self.app, tp)
            if state is not None and state.position == fetched[-1].offset + 1:
                await self.seek(tp, fetched[0].offset)

    @Service.task
    async def _commit_handler(self) -> None:
        # Faust's runs on mode's itertimer, which warns "Timer commit is overlapping" each
        # time a commit outlasts the interval (0.1 s): routine under load, and the next
        # commit starts when this one ends either way. Same cadence, without the warning.
        interval = self.commit_interval
        await self.sleep(interval)
        while not self.should_stop:
            await self.commit()
            await self.sleep(interval)

    @Service.task
    async def _commit_livelock_detector(self) -> None:
        # Faust checks here that every assigned partition's stream received events lately;
        # batched topics bypass the streams, so the check can only misfire for them. The
        # agent's own progress is what health reports (processors.health).
        return

    async def force_commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Commit what the agents processed, whatever Faust's acknowledgements say."""
        if self.app.client_only:
            return False
        committed: bool = await self.transactions.commit(
            {}, start_new_transaction=start_new_transaction
        )
        return committed


async def _wait_for_subscriber(channel: faust.ChannelT[Any]) -> None:
    # A channel drops what is put on it while no stream iterates it; the agent subscribes
    # when it starts, before the first assignment, so this only waits in a restart.
    while channel.subscriber_count == 0:  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)


class BatchingApp(faust.App):
    """A :class:`faust.App` whose transport uses :class:`BatchingConsumer` and
    ``transaction_manager``."""

    transaction_manager: type[Any] | None = None

    def _new_transport(self) -> Any:
        transport = super()._new_transport()
        transport.Consumer = BatchingConsumer
        if self.transaction_manager is not None:
            transport.TransactionManager = self.transaction_manager
        return transport


# -- 6. fetch state ----------------------------------------------------------------------


@dataclass(frozen=True)
class FetchState:
    """What the consumer knows of one assigned partition (None: not known yet).

    ``highwater`` and ``last_stable`` come from the latest fetch response, so both are None
    until the consumer has fetched the partition since it was assigned.
    """

    position: int | None
    highwater: int | None
    last_stable: int | None

    @property
    def end(self) -> int | None:
        """Where reading ends: the last stable offset under ``read_committed``."""
        return self.last_stable if self.last_stable is not None else self.highwater


def assigned_partitions(app: faust.App) -> set[TP]:
    """The consumer's assignment; empty while the consumer thread has not started."""
    consumer = app._consumer  # type: ignore[attr-defined]
    if consumer is None:
        return set()  # never built: asking app.consumer would build one
    try:
        return set(consumer.assignment())
    except ConsumerNotStarted:
        return set()


def fetch_state(app: faust.App, tp: TP) -> FetchState | None:
    """The consumer's view of ``tp``; None when the consumer is not running or not assigned."""
    try:
        consumer = app.consumer._thread._consumer  # type: ignore[attr-defined]
        if consumer is None:
            return None
        subscription = consumer._subscription.subscription
        if subscription is None or subscription.assignment is None:
            return None
        state = subscription.assignment.state_value(aiokafka.TopicPartition(tp.topic, tp.partition))
    except (AttributeError, KeyError):
        return None
    if state is None:
        return None
    position = state.position if state.has_valid_position else None
    return FetchState(position=position, highwater=state.highwater, last_stable=state.lso)


def before_web_server_binds(app: faust.App, callback: Callable[[], None]) -> None:
    """Call ``callback`` right before Faust's web server binds its port (every time).

    ``Web.start_server`` (faust/web/drivers/aiohttp.py) first sets up its application,
    which starts what is mounted on it (the events API starts its index writer process: a
    second or so), then creates the site and binds: the callback runs between the two.
    """
    web = app.web
    create_site = web._create_site  # type: ignore[attr-defined]

    def create_site_after_callback() -> Any:
        callback()
        return create_site()

    web._create_site = create_site_after_callback  # type: ignore[attr-defined]


# -- 7. quiet logs ------------------------------------------------------------------------


@dataclass(frozen=True)
class RetriableNotice:
    """A library log record that reports a condition the client retries by itself."""

    logger: str
    pattern: re.Pattern[str]
    why: str


RETRIABLE_NOTICES: tuple[RetriableNotice, ...] = (
    RetriableNotice(
        "aiokafka.consumer.group_coordinator",
        re.compile(r"GroupCoordinatorNotAvailableError|CoordinatorNotAvailable"),
        "a fresh broker creates __consumer_offsets on the first group request; the "
        "client asks again until the coordinator is there",
    ),
    RetriableNotice(
        "aiokafka.producer.sender",
        re.compile(r"NotEnoughReplicas|NOT_ENOUGH_REPLICAS"),
        "Kafka 4.1 answers the first produce of a transaction with NOT_ENOUGH_REPLICAS "
        "while it verifies the transaction (KIP-890); the producer retries at once",
    ),
)
"""Records logged at WARNING/ERROR by aiokafka for conditions it retries on its own; they
are lowered to INFO (never dropped). When the condition persists the client raises
(delivery timeout, coordinator timeout) and that error is logged where it is handled."""


class RetriableToInfo(logging.Filter):
    """Lowers matching records of one logger to INFO; every other record passes unchanged."""

    def __init__(self, notices: tuple[RetriableNotice, ...]) -> None:
        super().__init__()
        self.notices = notices

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO and record.levelno < logging.CRITICAL:
            message = record.getMessage()
            if any(n.pattern.search(message) for n in self.notices):
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_library_logs() -> None:
    """Install :class:`RetriableToInfo` on the loggers of :data:`RETRIABLE_NOTICES` (once)."""
    by_logger: dict[str, list[RetriableNotice]] = {}
    for notice in RETRIABLE_NOTICES:
        by_logger.setdefault(notice.logger, []).append(notice)
    for name, notices in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, RetriableToInfo) for f in logger.filters):
            logger.addFilter(RetriableToInfo(tuple(notices)))


# -- 3. transactional producers ---------------------------------------------------------


def transactional_producer(app: faust.App, transactional_id: str) -> Any | None:
    """The aiokafka producer Faust keeps for ``transactional_id``, or None (stopped)."""
    return app.producer._transaction_producers.get(transactional_id)  # type: ignore[attr-defined]


def transaction_lock(app: faust.App, transactional_id: str) -> asyncio.Lock:
    """The lock Faust's producer holds while it begins, commits or aborts that transaction."""
    lock: asyncio.Lock = app.producer._trn_locks[transactional_id]  # type: ignore[attr-defined]
    return lock


# -- 4. tables --------------------------------------------------------------------------


def partition_db(table: faust.Table, partition: int) -> Any:
    """The rocksdict database of one partition of ``table`` (opened on first use)."""
    return table.data._db_for_partition(partition)  # type: ignore[attr-defined]


def open_partition_dbs(table: faust.Table) -> list[Any]:
    """The databases of ``table`` this worker has opened (its assigned partitions)."""
    return list(table.data._dbs.values())  # type: ignore[attr-defined]


class UnloggedRocksDBStore(rocksdb.Store):
    """Faust's RocksDB store without RocksDB's own write-ahead log.

    The local files are discarded at every worker start and rebuilt from the changelogs
    (see :mod:`processors.exactly_once`), so a second log on disk would only cost time.
    """

    def _open_for_partition(self, partition: int) -> Any:
        db = super()._open_for_partition(partition)
        options = rocksdict.WriteOptions()
        options.disable_wal = True
        db.set_write_options(options)
        return db


class ChangelogTable(faust.Table):
    """A Faust table whose RocksDB store is :class:`UnloggedRocksDBStore`."""

    def _new_store_by_url(self, url: str | URL) -> Any:
        if URL(str(url)).scheme != "rocksdb":
            return super()._new_store_by_url(url)
        return UnloggedRocksDBStore(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            options=self.options,
        )


HighwaterSource = Callable[[faust.App, set[TP]], Awaitable[dict[TP, int]]]


class CommittedRecovery(Recovery):
    """Faust's recovery, aiming at the last committed record instead of an unreachable marker.

    Faust reads the highwater of a changelog, under transactions, from the last stable
    offset its consumer saw in a fetch response. Right after a rebalance no fetch has
    happened for the newly assigned partitions, so it reads ``-1`` and then refuses to start
    ("persisted offset is higher than the highwater"). :attr:`ends` (set by
    :class:`CommittedTableManager`) asks the broker instead.
    """

    ends: HighwaterSource

    async def _build_highwaters(
        self, consumer: Any, tps: set[TP], destination: Any, title: str
    ) -> None:
        last = await self.ends(self.app, set(tps))
        destination.clear()
        for tp, offset in last.items():
            destination[tp] = offset  # a Counter: update() would add
        self.log.info("%s changelogs end with committed records at %r", title, last)


def committed_table_manager(ends: HighwaterSource) -> type[TableManager]:
    """A table manager class whose recovery takes changelog ends from ``ends``."""

    class CommittedTableManager(TableManager):
        @property
        def recovery(self) -> Recovery:
            if self._recovery is None:
                recovery = CommittedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
                recovery.ends = ends
                self._recovery = recovery
            return self._recovery

    return CommittedTableManager


def limit_web_server(app: faust.App, limits: WebLimits) -> None:
    """Make ``app``'s web server apply ``limits`` (call before the worker starts)."""
    from changefeed.web_limits import LimitedAppRunner

    web = app.web
    web._runner = LimitedAppRunner(web.web_app, limits, access_log=None)  # type: ignore[attr-defined]
