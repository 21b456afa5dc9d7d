"""Bulk restore of the tables from their changelogs, before the worker starts.

At every start the local table files are discarded (:mod:`processors.exactly_once` says
why) and must be rebuilt from the committed changelogs. Faust can do that itself, one event
at a time through its stream machinery, at a few thousand records per second: minutes for a
few million dedupe ids. This module reads the changelogs in bulk (aiokafka, ``read_committed``,
so records of aborted transactions are skipped), writes them in RocksDB write batches into
the very files Faust opens, and records in each file the offset it got to, the way Faust's
store does (its "persisted offset"). Faust's recovery then reads only what was committed
after that offset.

Every partition of every changelog is restored, whether or not this worker will be assigned
it: a worker that is not assigned a partition ignores its file, and one assigned it later
reads from the recorded offset on.

Progress (:class:`RestoreReport`: records written, offsets read out of the total to read,
changelogs done) is updated as the restore goes, for the worker's health answers during
the restore, and logged at INFO at least every :data:`PROGRESS_LOG_S` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiokafka
import faust
import rocksdict

from changefeed.config import Settings
from processors.errors import ProcessingError
from processors.restore_progress import RestoreReport

__all__ = ["RestoreError", "RestoreReport", "restore", "restore_tables"]

log = logging.getLogger(__name__)

FETCH_TIMEOUT_MS = 1000
PROGRESS_LOG_S = 10.0
# The offset key faust.stores.rocksdb.Store keeps in every partition file.
OFFSET_KEY = b"__faust\x00offset__"


class RestoreError(ProcessingError):
    """The changelogs could not be read to the end."""


def restore_tables(
    app: faust.App,
    settings: Settings,
    *,
    timeout_s: float = 3600.0,
    report: RestoreReport | None = None,
) -> RestoreReport:
    """Fill the app's local table files from the committed changelogs; blocks until done.
    ``report`` (if given) shows the progress meanwhile, to other threads too."""
    return asyncio.run(restore(app, settings, timeout_s=timeout_s, report=report))


async def restore(
    app: faust.App,
    settings: Settings,
    *,
    timeout_s: float = 3600.0,
    report: RestoreReport | None = None,
) -> RestoreReport:
    """:func:`restore_tables` in a running event loop; ``report`` is updated as it goes."""
    report = report if report is not None else RestoreReport()
    ticker = asyncio.create_task(_log_progress(report))
    try:
        return await _restore(app, settings, timeout_s, report)
    finally:
        ticker.cancel()


async def _log_progress(report: RestoreReport) -> None:
    while True:
        await asyncio.sleep(PROGRESS_LOG_S)
        log.info(report.describe_progress())


async def _restore(
    app: faust.App, settings: Settings, timeout_s: float, report: RestoreReport
) -> RestoreReport:
    began = report.began = time.monotonic()
    report.started = True
    stores = {table.changelog_topic.get_topic_name(): table.data for table in app.tables.values()}
    consumer = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=2 * 1024 * 1024,
        fetch_max_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    report.changelogs = len(stores)
    dbs: dict[tuple[str, int], Any] = {}
    deadline = time.monotonic() + timeout_s
    try:
        everything = [
            aiokafka.TopicPartition(topic, p)
            for topic in stores
            for p in range(settings.partitions)
        ]
        firsts = await consumer.beginning_offsets(everything)
        lasts = await consumer.end_offsets(everything)
        report.offsets_total = sum(max(0, lasts[tp] - firsts[tp]) for tp in everything)
        log.info(report.describe_progress())
        # One changelog at a time: the consumer prefetches for every assigned partition, so
        # this bounds what sits decoded in memory to one table's partitions.
        for topic in stores:
            partitions = [aiokafka.TopicPartition(topic, p) for p in range(settings.partitions)]
            await _restore_topic(consumer, partitions, stores[topic], dbs, report, deadline)
            report.changelogs_done += 1
        for key, offset in report.last_offsets.items():
            dbs[key].put(OFFSET_KEY, str(offset).encode())
    finally:
        await consumer.stop()
        for db in dbs.values():
            db.flush()  # no write-ahead log: what is not flushed is not on disk
            db.close()
    report.seconds = time.monotonic() - began
    report.done = True
    log.info(report.describe())
    return report


async def _restore_topic(
    consumer: aiokafka.AIOKafkaConsumer,
    partitions: list[aiokafka.TopicPartition],
    store: Any,
    dbs: dict[tuple[str, int], Any],
    report: RestoreReport,
    deadline: float,
) -> None:
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    ends = await consumer.end_offsets(partitions)  # last stable offsets
    begins = await consumer.beginning_offsets(partitions)
    pending = {tp for tp in partitions if ends[tp] > 0}
    while pending:
        if time.monotonic() > deadline:
            raise RestoreError(f"changelogs not read to the end by the deadline: {pending}")
        batches = await consumer.getmany(*pending, timeout_ms=FETCH_TIMEOUT_MS)
        for tp, records in batches.items():
            if not records:
                continue
            db = dbs.get((tp.topic, tp.partition))
            if db is None:
                db = dbs[(tp.topic, tp.partition)] = _open(store, tp.partition)
            batch = rocksdict.WriteBatch(raw_mode=True)
            for record in records:
                if record.value is None:
                    batch.delete(record.key)
                else:
                    batch.put(record.key, record.value)
            db.write(batch)
            report.records += len(records)
            report.last_offsets[(tp.topic, tp.partition)] = records[-1].offset
        for tp in list(pending):
            position = await consumer.position(tp)
            report.offsets_read[(tp.topic, tp.partition)] = max(0, position - begins[tp])
            if position >= ends[tp]:
                pending.discard(tp)


def _open(store: Any, partition: int) -> Any:
    path = store.partition_path(partition)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = store.rocksdb_options.open(path)
    options = rocksdict.WriteOptions()
    options.disable_wal = True
    db.set_write_options(options)
    return db
