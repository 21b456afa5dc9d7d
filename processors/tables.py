"""The RocksDB tables the processors materialise, and how to read them.

Five Faust tables, named as in :data:`changefeed.topics.TABLE_CLEANUP`, each with a changelog
``<app_id>-<table>-changelog`` partitioned like ``actions``. Keys and values are raw bytes
laid out as :mod:`processors.models` documents. Entries are written by the agent (see
:class:`PartitionTables`): straight into the RocksDB database of the source event's
partition, plus a changelog record that commits in the same transaction as the event (see
:mod:`processors.exactly_once`). A key is therefore only ever written from one partition:
every key embeds something that lives on exactly one partition (the subject, or a change id
derived from an action of that subject).

Lookup contract, for the events API (:class:`ChangeTables`):

* :meth:`ChangeTables.change_by_id` - one ChangeEvent dict by ``change_id``.
* :meth:`ChangeTables.changes_for_request` - every ChangeEvent of one API request, which
  may have touched subjects on several partitions: the index key is
  ``request_id NUL change_id``, so each partition writes only its own keys, and the lookup
  scans the prefix ``request_id NUL`` in every partition this worker holds. Sorted by
  ``(subject_changed_at, change_id)``.
* :meth:`ChangeTables.subject_state` - the current :class:`~processors.models.SubjectState`
  of ``tenant/subject_type/subject_id`` (kept beyond retention).
* :meth:`ChangeTables.subject_history` - the subject's ChangeEvents within retention, in the
  order they were recorded (``subject_sequence``), late ones included.

Lookups read the partitions assigned to *this* worker. With several workers, a key may live
on another one; route by the partition of the subject key (Kafka's default partitioner) or
ask every worker. Indexes and dedupe ids expire with ``settings.retention_ms``: the agent
purges local entries as they age out, and the changelogs (``compact,delete``) drop them
with the same retention.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import faust
import rocksdict
from faust.stores import rocksdb
from yarl import URL

from changefeed.config import Settings
from processors import models
from processors.exactly_once import TransactionalOutbox
from processors.pipeline import CHANGE_EVENT_SCHEMA, Codec, Write

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
    """The app's five tables, with the lookups the events API uses."""

    app: faust.App
    codec: Codec
    subject_state_table: faust.Table
    seen_events_table: faust.Table
    change_by_id_table: faust.Table
    changes_by_request_table: faust.Table
    subject_history_table: faust.Table

    def by_name(self) -> dict[str, faust.Table]:
        return {
            models.SUBJECT_STATE: self.subject_state_table,
            models.SEEN_EVENTS: self.seen_events_table,
            models.CHANGE_BY_ID: self.change_by_id_table,
            models.CHANGES_BY_REQUEST: self.changes_by_request_table,
            models.SUBJECT_HISTORY: self.subject_history_table,
        }

    def change_by_id(self, change_id: str) -> dict[str, Any] | None:
        raw = _get_any(self.change_by_id_table, change_id.encode())
        return self.codec.decode(raw, CHANGE_EVENT_SCHEMA) if raw is not None else None

    def changes_for_request(self, request_id: str) -> list[dict[str, Any]]:
        prefix = models.request_prefix(request_id)
        changes = []
        for key, _ in _scan_all(self.changes_by_request_table, prefix):
            change_id = key[len(prefix) :].decode()
            change = self.change_by_id(change_id)
            if change is not None:
                changes.append(change)
        changes.sort(key=lambda c: (c["subject_changed_at"], c["change_id"]))
        return changes

    def subject_state(self, subject_key: str) -> models.SubjectState | None:
        raw = _get_any(self.subject_state_table, subject_key.encode())
        return models.SubjectState.decode(raw) if raw is not None else None

    def subject_history(self, subject_key: str) -> list[dict[str, Any]]:
        changes = []
        for _, value in _scan_all(self.subject_history_table, models.history_prefix(subject_key)):
            entry = models.HistoryEntry.decode(value)
            change = self.change_by_id(entry.change_id)
            if change is not None:
                changes.append(change)
        return changes


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


_TABLES: weakref.WeakKeyDictionary[faust.App, ChangeTables] = weakref.WeakKeyDictionary()


def define_tables(app: faust.App, settings: Settings, codec: Codec) -> ChangeTables:
    """Declare the five tables on ``app`` (once per app) and return them."""
    existing = _TABLES.get(app)
    if existing is not None:
        return existing

    def table(name: str, help: str) -> faust.Table:
        declared = ChangelogTable(
            app,
            name=name,
            beacon=app.tables.beacon,
            key_type=bytes,  # bytes means the "raw" serializer, for keys and values alike
            value_type=bytes,
            partitions=settings.partitions,
            options=dict(ROCKSDB_OPTIONS),
            recovery_buffer_size=RECOVERY_BUFFER_SIZE,
            help=help,
        )
        app.tables.add(declared)
        return declared

    tables = ChangeTables(
        app=app,
        codec=codec,
        subject_state_table=table(models.SUBJECT_STATE, "current state of every subject"),
        seen_events_table=table(models.SEEN_EVENTS, "event ids seen within retention"),
        change_by_id_table=table(models.CHANGE_BY_ID, "change events by change_id"),
        changes_by_request_table=table(models.CHANGES_BY_REQUEST, "change ids by request_id"),
        subject_history_table=table(models.SUBJECT_HISTORY, "each subject's changes"),
    )
    _TABLES[app] = tables
    return tables


def tables_of(app: faust.App) -> ChangeTables:
    """The tables :func:`processors.app.create_app` declared on ``app``."""
    return _TABLES[app]


class PartitionTables:
    """Read and write access to the tables of one source partition, for the agent.

    Reads and writes go straight to that partition's RocksDB database; every write also
    queues a changelog record in the outbox under the same partition, so the table entry
    commits (or aborts) with the event that caused it. :meth:`forget` deletes locally only:
    it is for entries past retention, which the changelog's own retention drops as well.
    """

    def __init__(self, tables: ChangeTables, outbox: TransactionalOutbox, partition: int) -> None:
        self.partition = partition
        self._outbox = outbox
        self._dbs: dict[str, Any] = {}
        self._changelogs: dict[str, str] = {}
        for name, table in tables.by_name().items():
            self._dbs[name] = _partition_db(table, partition)
            self._changelogs[name] = table.changelog_topic.get_topic_name()

    def get(self, table: str, key: bytes) -> bytes | None:
        value: bytes | None = self._dbs[table].get(key)
        return value

    def scan(self, table: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return scan_prefix(self._dbs[table], prefix)

    def apply(self, writes: list[Write]) -> None:
        outbox = self._outbox
        partition = self.partition
        for write in writes:
            db = self._dbs[write.table]
            if write.value is None:
                db.delete(write.key)
            else:
                db.put(write.key, write.value)
            outbox.add(partition, self._changelogs[write.table], partition, write.key, write.value)

    def forget(self, table: str, key: bytes) -> None:
        self._dbs[table].delete(key)


def _partition_db(table: faust.Table, partition: int) -> Any:
    # faust.stores.rocksdb.Store keeps one rocksdict database per partition.
    return table.data._db_for_partition(partition)  # type: ignore[attr-defined]


def _open_dbs(table: faust.Table) -> list[Any]:
    return list(table.data._dbs.values())  # type: ignore[attr-defined]


def scan_prefix(db: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    for key, value in db.items(from_key=prefix):
        if not key.startswith(prefix):
            return
        yield key, value


def _get_any(table: faust.Table, key: bytes) -> bytes | None:
    for db in _open_dbs(table):
        value: bytes | None = db.get(key)
        if value is not None:
            return value
    return None


def _scan_all(table: faust.Table, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    for db in _open_dbs(table):
        yield from scan_prefix(db, prefix)
