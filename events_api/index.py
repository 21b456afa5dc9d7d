"""The feed index: every ``changes`` record this worker has read, queryable by filter.

One SQLite database (WAL, so readers never wait for the indexer) under
``<data_dir>/feed/``, holding one row per record with a column for every filter, and the
event already rendered as API JSON, so that serving a page is reading strings. The JSON
lives in a table of its own (``bodies``): the filter rows stay small and dense, so a query
that filters on a column no index holds (or counts what remains) reads a few pages instead
of every event's kilobyte of JSON. The main time index also carries the filter columns, so
that a scan of a tenant's events in time order, and the count of what remains after a page,
never leave the index.

Row identity is the record's position: ``id = partition << 40 | offset``, so a partition's
rows form one ``id`` range in offset order. Rows are ordered by ``(sort_us, id)``, where
``sort_us`` is ``created_at`` raised where needed so that it never decreases along a
partition (``created_at`` is stamped by whichever worker processed the record, and clocks
can step back). That monotony is what lets a page, cut by ``(sort_us, id)``, be a prefix of
each partition, and what lets one ``(sort_us, id)`` bound translate into per-partition
offsets (see :mod:`events_api.paging`).

Per partition the index keeps ``next_offset`` (everything before it has been read, written
in the same transaction as the rows) and ``gone_below`` (offsets below it are not, or no
longer, here: never read because Kafka had deleted them, or purged past retention).

Files: the folder is 0700 and the database, WAL and shared-memory files 0600, readable by
the worker's user only (:meth:`FeedIndex.open` sets them, for existing files too).

Thread use: one writer (the indexer's thread) and any number of reader threads, each with
its own connection; a reader sees one consistent snapshot per :meth:`FeedIndex.reading`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from events_api.errors import FeedIndexError
from events_api.filters import FeedFilter, glob_of
from events_api.scope import Scope

SCHEMA_VERSION = "3"
PARTITION_SHIFT = 40
OFFSET_MASK = (1 << PARTITION_SHIFT) - 1
NO_LOWER = -(1 << 62)
NO_UPPER = 1 << 62
WAL_CHECKPOINT_PAGES = 4000
"""Pages (16 MB) the WAL may hold before the writer copies them into the database. Inserts
rewrite the same index pages batch after batch; checkpointing less often writes each of them
to the database once for several batches (measured: ~10 % less writer CPU per row than
SQLite's default of 1000)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS partitions (
    part INTEGER PRIMARY KEY,
    next_offset INTEGER NOT NULL,
    gone_below INTEGER NOT NULL,
    last_sort_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    part INTEGER NOT NULL,
    sort_us INTEGER NOT NULL,
    created_us INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    change_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    user_id TEXT,
    criticality INTEGER NOT NULL,
    code INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    late INTEGER NOT NULL,
    action TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bodies (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ix_tenant_time ON events (
    tenant, sort_us, created_us, user_id, event_type, subject_type, criticality, code
);
CREATE INDEX IF NOT EXISTS ix_tenant_user_time ON events (tenant, user_id, sort_us);
CREATE INDEX IF NOT EXISTS ix_tenant_type_time ON events (tenant, event_type, sort_us);
CREATE INDEX IF NOT EXISTS ix_tenant_subject ON events (tenant, subject_type, subject_id, seq);
CREATE INDEX IF NOT EXISTS ix_tenant_request ON events (tenant, request_id);
CREATE INDEX IF NOT EXISTS ix_change ON events (change_id);
CREATE INDEX IF NOT EXISTS ix_part_time ON events (part, sort_us);
"""


_INSERT_EVENT = (
    "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_BODY = "INSERT OR REPLACE INTO bodies VALUES (?, ?)"
_ROW_ERRORS = (
    UnicodeEncodeError,
    OverflowError,
    ValueError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
)
"""What SQLite raises for one row it cannot take (bad text, an integer past 64 bits), as
opposed to a failure of the database itself."""


def row_id(partition: int, offset: int) -> int:
    return (partition << PARTITION_SHIFT) + offset


def split_id(rid: int) -> tuple[int, int]:
    return rid >> PARTITION_SHIFT, rid & OFFSET_MASK


@dataclass(slots=True)
class IndexedEvent:
    """One ``changes`` record as the index stores it; ``body`` is its API JSON."""

    partition: int
    offset: int
    created_us: int
    tenant_id: str
    change_id: str
    request_id: str
    event_type: str
    subject_type: str
    subject_id: str
    user_id: str | None
    criticality: int
    code: int
    subject_sequence: int
    late: bool
    action: str
    body: str


@dataclass(frozen=True)
class PartitionState:
    next_offset: int
    gone_below: int
    last_sort_us: int


@dataclass(frozen=True)
class Row:
    id: int
    sort_us: int
    body: str

    @property
    def partition(self) -> int:
        return self.id >> PARTITION_SHIFT

    @property
    def offset(self) -> int:
        return self.id & OFFSET_MASK


class FeedIndex:
    """The SQLite file of one ``changes`` topic; see the module docstring for the contract."""

    def __init__(self, path: Path, topic: str, *, cache_mb: int = 64, mmap_mb: int = 256) -> None:
        self.path = path
        self.topic = topic
        self._cache_kib = cache_mb * 1024
        self._mmap_bytes = mmap_mb * 1024 * 1024
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._last_sort: dict[int, int] = {}
        self._max_regression = 0

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Create or check the database; one built for another topic or layout is rebuilt."""
        try:
            self._restrict_files()
            conn = self._connect()
            conn.executescript("PRAGMA journal_mode=WAL;")
            self._restrict_files()  # the WAL and shared-memory files now exist too
            meta = self._meta(conn)
            if meta and (meta.get("topic") != self.topic or meta.get("schema") != SCHEMA_VERSION):
                conn.executescript(
                    "DROP TABLE IF EXISTS events; DROP TABLE IF EXISTS bodies;"
                    "DROP TABLE IF EXISTS partitions; DROP TABLE IF EXISTS meta;"
                )
            conn.executescript(_SCHEMA)
            with self._transaction(conn):
                conn.executemany(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                    [("topic", self.topic), ("schema", SCHEMA_VERSION), ("max_regression", "0")],
                )
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self._writer = conn
            self._max_regression = int(self._meta(conn)["max_regression"])
            self._last_sort = {p: s.last_sort_us for p, s in self.partitions().items()}
        except sqlite3.Error as exc:
            raise FeedIndexError(f"cannot open the feed index {self.path}: {exc}") from exc

    def _restrict_files(self) -> None:
        """The index holds tenants' events: its folder 0700, its files 0600 (owner only),
        whatever the umask, and for an index created before this rule too."""
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = self.path.with_name(self.path.name + suffix)
            if path.exists():
                os.chmod(path, 0o600)

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA cache_size=-{self._cache_kib}")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute(f"PRAGMA mmap_size={self._mmap_bytes}")
        return conn

    @staticmethod
    def _meta(conn: sqlite3.Connection) -> dict[str, str]:
        try:
            return dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError:
            return {}

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- writing (the indexer's thread) --------------------------------------------------

    @property
    def max_regression_us(self) -> int:
        """The most any row's ``sort_us`` exceeds its ``created_at`` (0 with sane clocks)."""
        return self._max_regression

    def adopt_max_regression(self, value: int) -> None:
        """Take the writer's figure when it lives in another process (see the indexer)."""
        self._max_regression = max(self._max_regression, value)

    def begin_partitions(self, starts: dict[int, int]) -> None:
        """Record where reading of partitions new to the index begins (their first
        offset): offsets below were never read, so they count as gone."""
        with self._write_lock, self._transaction(self._conn_w()):
            self._conn_w().executemany(
                "INSERT OR IGNORE INTO partitions (part, next_offset, gone_below, last_sort_us)"
                " VALUES (?, ?, ?, ?)",
                [(p, o, o, NO_LOWER) for p, o in starts.items()],
            )
            for p in starts:
                self._last_sort.setdefault(p, NO_LOWER)

    def skip_to(self, partition: int, offset: int) -> None:
        """Kafka no longer holds offsets below ``offset`` that the index has not read:
        continue from there, and count what was skipped as gone."""
        with self._write_lock, self._transaction(self._conn_w()):
            self._conn_w().execute(
                "UPDATE partitions SET next_offset = max(next_offset, ?),"
                " gone_below = max(gone_below, ?) WHERE part = ?",
                (offset, offset, partition),
            )

    def add(
        self, events: Iterable[IndexedEvent], next_offsets: dict[int, int]
    ) -> tuple[set[str], list[tuple[IndexedEvent, Exception]]]:
        """Insert ``events`` (in offset order per partition) and advance ``next_offsets``,
        atomically; returns the tenants that received events, and the events SQLite refused
        (with why): a row it cannot store is left out, the rest of the batch is stored, so
        one record never blocks the feed. Errors of the database itself (I/O, locks) raise
        :class:`FeedIndexError` and store nothing."""
        events = list(events)
        try:
            return self._add(events, next_offsets, one_by_one=False), []
        except _ROW_ERRORS:
            pass
        refused: list[tuple[IndexedEvent, Exception]] = []
        return self._add(events, next_offsets, one_by_one=True, refused=refused), refused

    def _add(
        self,
        events: list[IndexedEvent],
        next_offsets: dict[int, int],
        *,
        one_by_one: bool,
        refused: list[tuple[IndexedEvent, Exception]] | None = None,
    ) -> set[str]:
        rows = []
        bodies = []
        tenants: set[str] = set()
        last_sort = dict(self._last_sort)
        regression = self._max_regression
        for ev in events:
            sort_us = max(ev.created_us, last_sort.get(ev.partition, NO_LOWER))
            rows.append(
                (
                    row_id(ev.partition, ev.offset),
                    ev.partition,
                    sort_us,
                    ev.created_us,
                    ev.tenant_id,
                    ev.change_id,
                    ev.request_id,
                    ev.event_type,
                    ev.subject_type,
                    ev.subject_id,
                    ev.user_id,
                    ev.criticality,
                    ev.code,
                    ev.subject_sequence,
                    int(ev.late),
                    ev.action,
                )
            )
            bodies.append((row_id(ev.partition, ev.offset), ev.body))
            if not one_by_one:
                last_sort[ev.partition] = sort_us
                regression = max(regression, sort_us - ev.created_us)
                tenants.add(ev.tenant_id)
        conn = self._conn_w()
        try:
            with self._write_lock, self._transaction(conn):
                if one_by_one:
                    for ev, row, body in zip(events, rows, bodies, strict=True):
                        sort_us = max(ev.created_us, last_sort.get(ev.partition, NO_LOWER))
                        row = (*row[:2], sort_us, *row[3:])
                        conn.execute("SAVEPOINT row")
                        try:
                            conn.execute(_INSERT_EVENT, row)
                            conn.execute(_INSERT_BODY, body)
                        except _ROW_ERRORS as exc:
                            conn.execute("ROLLBACK TO row")
                            conn.execute("RELEASE row")
                            assert refused is not None
                            refused.append((ev, exc))
                            continue
                        conn.execute("RELEASE row")
                        last_sort[ev.partition] = sort_us
                        regression = max(regression, sort_us - ev.created_us)
                        tenants.add(ev.tenant_id)
                else:
                    conn.executemany(_INSERT_EVENT, rows)
                    conn.executemany(_INSERT_BODY, bodies)
                conn.executemany(
                    "INSERT INTO partitions (part, next_offset, gone_below, last_sort_us)"
                    " VALUES (?, ?, 0, ?) ON CONFLICT (part) DO UPDATE SET"
                    " next_offset = max(next_offset, excluded.next_offset),"
                    " last_sort_us = max(last_sort_us, excluded.last_sort_us)",
                    [(p, o, last_sort.get(p, NO_LOWER)) for p, o in next_offsets.items()],
                )
                if regression != self._max_regression:
                    conn.execute(
                        "UPDATE meta SET value = ? WHERE key = 'max_regression'", (str(regression),)
                    )
        except _ROW_ERRORS:
            raise
        except sqlite3.Error as exc:
            raise FeedIndexError(f"writing the feed index failed: {exc}") from exc
        self._last_sort = last_sort
        self._max_regression = regression
        return tenants

    def purge(self, cutoff_us: int, chunk: int = 20_000) -> int:
        """Delete up to ``chunk`` rows per partition older than ``cutoff_us``; returns how
        many. Call it again while it returns a positive count."""
        conn = self._conn_w()
        deleted = 0
        try:
            for partition in list(self.partitions()):
                with self._write_lock, self._transaction(conn):
                    (last,) = conn.execute(
                        "SELECT max(id) FROM (SELECT id FROM events WHERE part = ?"
                        " AND sort_us < ? ORDER BY sort_us LIMIT ?)",
                        (partition, cutoff_us, chunk),
                    ).fetchone()
                    if last is None:
                        continue
                    span = (row_id(partition, 0), last)
                    cur = conn.execute("DELETE FROM events WHERE id >= ? AND id <= ?", span)
                    conn.execute("DELETE FROM bodies WHERE id >= ? AND id <= ?", span)
                    deleted += cur.rowcount
                    conn.execute(
                        "UPDATE partitions SET gone_below = max(gone_below, ?) WHERE part = ?",
                        ((last & OFFSET_MASK) + 1, partition),
                    )
        except sqlite3.Error as exc:
            raise FeedIndexError(f"purging the feed index failed: {exc}") from exc
        return deleted

    def optimize(self) -> None:
        """Refresh the query planner's statistics, from a sample (cheap at any size), so it
        keeps choosing the index that fits each filter as the data grows."""
        with self._write_lock:
            self._conn_w().execute("PRAGMA analysis_limit=1000")
            self._conn_w().execute("ANALYZE")

    def _conn_w(self) -> sqlite3.Connection:
        if self._writer is None:
            raise FeedIndexError("the feed index is not open")
        return self._writer

    # -- reading (any thread) -------------------------------------------------------------

    def partitions(self) -> dict[int, PartitionState]:
        with self.reading() as reader:
            return reader.partitions()

    @contextmanager
    def reading(self) -> Iterator[IndexReader]:
        """A consistent snapshot of the index for this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        conn.execute("BEGIN")
        try:
            yield IndexReader(conn, self._max_regression)
        except sqlite3.Error as exc:
            raise FeedIndexError(f"reading the feed index failed: {exc}") from exc
        finally:
            conn.execute("COMMIT")


class IndexReader:
    """Queries over one snapshot. Every event query is bounded by a :class:`Scope`."""

    def __init__(self, conn: sqlite3.Connection, max_regression_us: int) -> None:
        self._conn = conn
        self._max_regression = max_regression_us

    def partitions(self) -> dict[int, PartitionState]:
        rows = self._conn.execute(
            "SELECT part, next_offset, gone_below, last_sort_us FROM partitions"
        ).fetchall()
        return {p: PartitionState(n, g, s) for p, n, g, s in rows}

    # Positions within one partition, for turning a (sort_us, id) bound into offsets.

    def first_sort_from(self, partition: int, offset: int) -> int | None:
        """``sort_us`` of the first row of ``partition`` at or after ``offset``."""
        row = self._conn.execute(
            "SELECT sort_us FROM events WHERE id >= ? AND id < ? ORDER BY id LIMIT 1",
            (row_id(partition, offset), row_id(partition + 1, 0)),
        ).fetchone()
        return None if row is None else int(row[0])

    def last_sort_before(self, partition: int, offset: int) -> int | None:
        """``sort_us`` of the last row of ``partition`` before ``offset``."""
        row = self._conn.execute(
            "SELECT sort_us FROM events WHERE id >= ? AND id < ? ORDER BY id DESC LIMIT 1",
            (row_id(partition, 0), row_id(partition, offset)),
        ).fetchone()
        return None if row is None else int(row[0])

    def first_offset_beyond(
        self, partition: int, sort_us: int, rid: int, *, inclusive: bool
    ) -> int | None:
        """Offset of the first row of ``partition`` ordered after ``(sort_us, rid)`` (or at
        it, with ``inclusive``)."""
        op = ">=" if inclusive else ">"
        row = self._conn.execute(
            f"SELECT id FROM events WHERE part = ? AND sort_us = ? AND id {op} ?"
            " ORDER BY id LIMIT 1",
            (partition, sort_us, rid),
        ).fetchone()
        if row is None:
            row = self._conn.execute(
                "SELECT id FROM events WHERE part = ? AND sort_us > ? ORDER BY sort_us, id LIMIT 1",
                (partition, sort_us),
            ).fetchone()
        return None if row is None else int(row[0]) & OFFSET_MASK

    # Event queries.

    def page(
        self,
        scope: Scope,
        flt: FeedFilter,
        *,
        descending: bool,
        ranges: dict[int, tuple[int, int]] | None,
        sort_from: int,
        sort_to: int,
        limit: int,
    ) -> list[Row]:
        """Up to ``limit`` rows of ``scope`` matching ``flt``, within the per-partition
        offset ``ranges`` (``[low, high)``; None: everything) and ``sort_from <= sort_us <=
        sort_to``, in ``(sort_us, id)`` order."""
        where, params = self._where(scope, flt, ranges, sort_from, sort_to)
        direction = "DESC" if descending else "ASC"
        order = f"ORDER BY sort_us {direction}, id {direction}"
        outer = f"ORDER BY q.sort_us {direction}, q.id {direction}"
        sql = _with_bodies(f"SELECT id, sort_us FROM events WHERE {where} {order} LIMIT ?", outer)
        return [Row(*r) for r in self._conn.execute(sql, (*params, limit))]

    def count(
        self,
        scope: Scope,
        flt: FeedFilter,
        *,
        ranges: dict[int, tuple[int, int]] | None,
        sort_from: int,
        sort_to: int,
        cap: int,
    ) -> int:
        """How many rows :meth:`page` would select without a limit, counting at most
        ``cap``."""
        where, params = self._where(scope, flt, ranges, sort_from, sort_to)
        sql = f"SELECT count(*) FROM (SELECT 1 FROM events WHERE {where} LIMIT ?)"
        (n,) = self._conn.execute(sql, (*params, cap)).fetchone()
        return int(n)

    def by_change_id(self, scope: Scope, change_id: str) -> str | None:
        where, params = _scope_where(scope)
        inner = (
            f"SELECT id, sort_us FROM events WHERE change_id = ? AND {where} ORDER BY id LIMIT 1"
        )
        row = self._conn.execute(_with_bodies(inner, ""), (change_id, *params)).fetchone()
        return None if row is None else str(row[2])

    def by_request(self, scope: Scope, request_id: str, limit: int) -> list[str]:
        where, params = _scope_where(scope)
        order = "ORDER BY sort_us, id"
        inner = f"SELECT id, sort_us FROM events WHERE request_id = ? AND {where} {order} LIMIT ?"
        outer = "ORDER BY q.sort_us, q.id"
        rows = self._conn.execute(_with_bodies(inner, outer), (request_id, *params, limit))
        return [str(r[2]) for r in rows]

    def subject_history(
        self, scope: Scope, subject_type: str, subject_id: str, after_sequence: int, limit: int
    ) -> list[str]:
        """The subject's changes in the order they were recorded (``subject_sequence``)."""
        where, params = _scope_where(scope)
        inner = (
            f"SELECT id, seq AS sort_us FROM events WHERE {where} AND subject_type = ?"
            " AND subject_id = ? AND seq > ? ORDER BY seq, id LIMIT ?"
        )
        rows = self._conn.execute(
            _with_bodies(inner, "ORDER BY q.sort_us, q.id"),
            (*params, subject_type, subject_id, after_sequence, limit),
        )
        return [str(r[2]) for r in rows]

    def latest_of_subject(
        self, scope: Scope, subject_type: str, subject_id: str, *, state_only: bool = False
    ) -> str | None:
        """The subject's most recently recorded change (with ``state_only``: the newest one
        that set its state, i.e. not late and not custom)."""
        where, params = _scope_where(scope)
        extra = " AND late = 0 AND action != 'custom'" if state_only else ""
        inner = (
            f"SELECT id, sort_us FROM events WHERE {where} AND subject_type = ?"
            f" AND subject_id = ?{extra} ORDER BY seq DESC, id DESC LIMIT 1"
        )
        row = self._conn.execute(
            _with_bodies(inner, ""), (*params, subject_type, subject_id)
        ).fetchone()
        return None if row is None else str(row[2])

    def latest_per_subject(
        self, scope: Scope, subject_type: str | None, limit: int, skip: int
    ) -> tuple[list[str], int]:
        """The newest change of each subject, newest first, and how many subjects there
        are (Kantata's most_recent)."""
        where, params = _scope_where(scope)
        if subject_type is not None:
            where += " AND subject_type = ?"
            params = (*params, subject_type)
        grouped = (
            f"SELECT id, sort_us, max(seq) FROM events WHERE {where}"
            " GROUP BY subject_type, subject_id"
        )
        order = "ORDER BY sort_us DESC, id DESC"
        inner = f"SELECT id, sort_us FROM ({grouped}) {order} LIMIT ? OFFSET ?"
        outer = "ORDER BY q.sort_us DESC, q.id DESC"
        rows = self._conn.execute(_with_bodies(inner, outer), (*params, limit, skip))
        bodies = [str(r[2]) for r in rows]
        (total,) = self._conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM events WHERE {where}"
            " GROUP BY subject_type, subject_id)",
            params,
        ).fetchone()
        return bodies, int(total)

    def _where(
        self,
        scope: Scope,
        flt: FeedFilter,
        ranges: dict[int, tuple[int, int]] | None,
        sort_from: int,
        sort_to: int,
    ) -> tuple[str, tuple[object, ...]]:
        clauses, params = _scope_where(scope)
        parts = [clauses]
        args: list[object] = list(params)
        if flt.start_us is not None:
            # sort_us >= created_at, so this bound only helps the index, it drops nothing.
            sort_from = max(sort_from, flt.start_us)
            parts.append("created_us >= ?")
            args.append(flt.start_us)
        if flt.end_us is not None:
            # sort_us - created_at never exceeds max_regression: again only for the index.
            sort_to = min(sort_to, flt.end_us + self._max_regression)
            parts.append("created_us < ?")
            args.append(flt.end_us)
        if sort_from > NO_LOWER:
            parts.append("sort_us >= ?")
            args.append(sort_from)
        if sort_to < NO_UPPER:
            parts.append("sort_us <= ?")
            args.append(sort_to)
        if flt.event_type is not None:
            if flt.event_type_is_pattern:
                parts.append("event_type GLOB ?")
                args.append(glob_of(flt.event_type))
            else:
                parts.append("event_type = ?")
                args.append(flt.event_type)
        for column, value in (
            ("subject_type", flt.subject_type),
            ("subject_id", flt.subject_id),
            ("user_id", flt.user_id),
            ("request_id", flt.request_id),
        ):
            if value is not None:
                parts.append(f"{column} = ?")
                args.append(value)
        for column, values in (("criticality", flt.criticality), ("code", flt.code)):
            if values:
                parts.append(f"{column} IN ({','.join('?' * len(values))})")
                args.extend(values)
        if ranges is not None:
            spans = []
            for partition, (low, high) in sorted(ranges.items()):
                if low < high:
                    spans.append("(id >= ? AND id < ?)")
                    args.extend((row_id(partition, low), row_id(partition, high)))
            parts.append(f"({' OR '.join(spans)})" if spans else "0")
        return " AND ".join(parts), tuple(args)


def _with_bodies(inner: str, order: str) -> str:
    """``inner`` (selecting ``id, sort_us``) with each row's JSON body added, in ``order``
    (over ``q.sort_us``/``q.id``); bodies are read for the selected rows only."""
    return (
        "SELECT q.id, q.sort_us, (SELECT body FROM bodies WHERE bodies.id = q.id)"
        f" FROM ({inner}) AS q {order}"
    )


def _scope_where(scope: Scope) -> tuple[str, tuple[object, ...]]:
    if scope.user_id is None:
        return "tenant = ?", (scope.tenant_id,)
    return "tenant = ? AND user_id = ?", (scope.tenant_id, scope.user_id)
