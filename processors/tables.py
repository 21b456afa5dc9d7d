"""The RocksDB tables the processors materialise, and how to read them.

Three Faust tables, named as in :data:`changefeed.topics.TABLE_CLEANUP`, each with a changelog
``<app_id>-<table>-changelog`` partitioned like ``actions``: ``subject_state`` (kept beyond
retention) and ``seen_events`` (the dedupe window; RocksDB drops entries older than
retention at compaction, the changelog's ``compact,delete`` policy does the same on Kafka) and
``schedules`` (kept beyond retention; see :mod:`processors.schedule_commands`).
Keys and values are raw bytes laid out as :mod:`processors.models` documents. A key is only
ever written from one partition: it names the subject, or an action of that subject.

Entries are written by the agent (see :class:`PartitionTables`): each write queues a
changelog record in the outbox under the source event's partition, which commits in the
same transaction as the event (see :mod:`processors.exactly_once`), and is kept in memory,
where the next actions read it, until just before that commit, when each partition's
pending writes go to its RocksDB database in one write batch.

The events API reads the current state of a subject here (:meth:`ChangeTables.subject_state`,
on the worker holding the subject's partition); everything else it serves comes from the
feed index.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import faust
import rocksdict

from changefeed.config import Settings
from processors import models
from processors.exactly_once import TransactionalOutbox
from processors.faust_adapter import ChangelogTable, open_partition_dbs, partition_db
from processors.models import Write
from schemas.schedules import Schedule

# RocksDB sized for a small worker: every table partition is its own database, each with its
# own memtables and block cache, so Faust's defaults (3 x 64 MB memtables, 2 GB cache each)
# would multiply into gigabytes. Point lookups go through the bloom filter first.
ROCKSDB_OPTIONS: dict[str, Any] = {
    "write_buffer_size": 2 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 32 * 1024 * 1024,
    "block_cache_size": 4 * 1024 * 1024,
    "block_cache_compressed_size": 0,
    "bloom_filter_size": 10,
    "max_open_files": 256,
}

RECOVERY_BUFFER_SIZE = 10_000


@dataclass(frozen=True)
class ChangeTables:
    """The app's tables, with the lookups the events API uses."""

    app: faust.App
    subject_state_table: faust.Table
    seen_events_table: faust.Table
    schedules_table: faust.Table

    def by_name(self) -> dict[str, faust.Table]:
        return {
            models.SUBJECT_STATE: self.subject_state_table,
            models.SEEN_EVENTS: self.seen_events_table,
            models.SCHEDULES: self.schedules_table,
        }

    def schedule(self, schedule_id: str) -> Schedule | None:
        """The schedule ``schedule_id`` if this worker holds its partition."""
        if not schedule_id or "\x00" in schedule_id:
            return None
        key = models.schedule_key(schedule_id)
        for db in open_partition_dbs(self.schedules_table):
            raw = db.get(key)
            if raw is not None:
                return Schedule.decode(raw)
        return None

    def subject_schedules(self, subject_key: str) -> list[Schedule]:
        """The live (not deleted) schedules of a subject this worker holds."""
        found: list[Schedule] = []
        prefix = models.subject_schedule_prefix(subject_key)
        for db in open_partition_dbs(self.schedules_table):
            for key in _keys_with_prefix(db, prefix):
                schedule = self.schedule(key[len(prefix) :].decode())
                if schedule is not None:
                    found.append(schedule)
        return sorted(found, key=lambda s: (s.created_at_us, s.schedule_id))

    def failed_schedules(self, tenant_id: str) -> list[Schedule]:
        """The tenant's schedules with a failed job, on this worker's partitions."""
        found: list[Schedule] = []
        prefix = models.failed_job_prefix(tenant_id)
        for db in open_partition_dbs(self.schedules_table):
            for key in _keys_with_prefix(db, prefix):
                schedule = self.schedule(key[len(prefix) :].decode())
                if schedule is not None and schedule.failed is not None:
                    found.append(schedule)
        return found

    def subject_state(self, subject_key: str) -> models.SubjectState | None:
        """The current state of ``tenant/subject_type/subject_id`` if this worker holds it."""
        key = subject_key.encode()
        for db in open_partition_dbs(self.subject_state_table):
            raw = db.get(key)
            if raw is not None:
                return models.SubjectState.decode(raw)
        return None


def _keys_with_prefix(db: Any, prefix: bytes) -> list[bytes]:
    keys: list[bytes] = []
    iterator = db.iter()
    iterator.seek(prefix)
    while iterator.valid():
        key = iterator.key()
        if not key.startswith(prefix):
            break
        keys.append(key)
        iterator.next()
    return keys


_TABLES: weakref.WeakKeyDictionary[faust.App, ChangeTables] = weakref.WeakKeyDictionary()


def define_tables(app: faust.App, settings: Settings) -> ChangeTables:
    """Declare the two tables on ``app`` (once per app) and return them."""
    existing = _TABLES.get(app)
    if existing is not None:
        return existing

    def table(name: str, help: str, **options: Any) -> faust.Table:
        declared = ChangelogTable(
            app,
            name=name,
            beacon=app.tables.beacon,
            key_type=bytes,  # bytes means the "raw" serializer, for keys and values alike
            value_type=bytes,
            partitions=settings.partitions,
            options={**ROCKSDB_OPTIONS, **options},
            recovery_buffer_size=RECOVERY_BUFFER_SIZE,
            help=help,
        )
        app.tables.add(declared)
        return declared

    tables = ChangeTables(
        app=app,
        subject_state_table=table(models.SUBJECT_STATE, "current state of every subject"),
        seen_events_table=table(
            models.SEEN_EVENTS,
            "event ids seen within retention",
            ttl=max(1, settings.retention_ms // 1000),
        ),
        schedules_table=table(models.SCHEDULES, "scheduled events of every subject"),
    )
    _TABLES[app] = tables
    return tables


def tables_of(app: faust.App) -> ChangeTables:
    """The tables :func:`processors.app.create_app` declared on ``app``."""
    return _TABLES[app]


class PartitionTables:
    """Read and write access to the tables of one source partition, for the agent.

    Writes are kept in memory (where reads find them first) and queued as changelog records
    in the outbox under the same partition, so a table entry commits (or aborts) with the
    event that caused it; :meth:`write_pending` puts what is pending into RocksDB, one write
    batch per partition, just before the transaction commits.
    """

    def __init__(self, tables: ChangeTables, outbox: TransactionalOutbox, partition: int) -> None:
        self.partition = partition
        self._outbox = outbox
        self._dbs: dict[str, Any] = {}
        self._changelogs: dict[str, str] = {}
        self._pending: dict[str, dict[bytes, bytes | None]] = {}
        for name, table in tables.by_name().items():
            self._dbs[name] = partition_db(table, partition)
            self._changelogs[name] = table.changelog_topic.get_topic_name()
            self._pending[name] = {}

    def get(self, table: str, key: bytes) -> bytes | None:
        pending = self._pending[table]
        if key in pending:
            return pending[key]
        value: bytes | None = self._dbs[table].get(key)
        return value

    def apply(self, writes: list[Write]) -> None:
        outbox = self._outbox
        partition = self.partition
        for write in writes:
            self._pending[write.table][write.key] = write.value
            outbox.add(partition, self._changelogs[write.table], partition, write.key, write.value)

    def write_pending(self) -> None:
        """Put the pending writes into RocksDB, one write batch per table."""
        for table, pending in self._pending.items():
            if not pending:
                continue
            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, value in pending.items():
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            self._dbs[table].write(batch)
            pending.clear()

    def pending_items(self, table: str) -> list[tuple[bytes, bytes | None]]:
        """Writes to ``table`` not yet in RocksDB."""
        return list(self._pending[table].items())

    def scan(self, table: str) -> Any:
        """An iterator over ``table``'s RocksDB entries of this partition (committed ones)."""
        return self._dbs[table].items()

    def discard_pending(self) -> None:
        """Forget writes that will not commit (the partition was given up)."""
        for pending in self._pending.values():
            pending.clear()
