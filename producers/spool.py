"""The durable spool: an on-disk, append-only log of records not yet delivered to Kafka.

Contract
    * Records come out (:meth:`Spool.read_batch`) in the order they went in
      (:meth:`Spool.append`), across restarts of the process.
    * A record leaves the spool only when it is acknowledged (:meth:`Spool.ack`), which the
      publisher does after Kafka confirmed it. Reading alone never loses anything: a process
      killed between a send and its acknowledgement sends the record again after restart.
      Delivery from the spool is therefore at-least-once; downstream processors dedupe on
      ``event_id``, which makes the effect exactly-once.
    * One spool directory has one owner: an exclusive ``flock`` on ``<dir>/lock``.

Layout
    ``<dir>/segment-<id>.log`` files (format in :mod:`producers.spool_format`), rolled over
    at ``segment_bytes``; ``<dir>/cursor`` holds the position of the first unacknowledged
    record, replaced atomically (write, then rename) on every acknowledgement. Segments
    wholly before the cursor are deleted; once everything is acknowledged every file but
    the lock goes, so an empty directory means an empty spool.

Durability (fsync policy)
    Every append is written to the operating system before :meth:`append` returns, so a
    crash of the process (``kill -9``) loses nothing that was appended. Against a crash of
    the machine, data is ``fsync``-ed when a segment is rolled over or the spool closed, on
    each append when ``fsync_interval_s`` is 0, and otherwise by :meth:`sync_if_due` (and by
    an append) once ``fsync_interval_s`` has passed since the previous fsync: at most that
    much of the latest spooled data can be lost with the machine. The cursor is not
    fsync-ed: losing its latest version re-sends records, never drops them.

Crash recovery
    On open, every frame from the cursor on is checked. In the last segment, the first
    frame that is cut short or fails its CRC marks a torn write from a crash: it and
    everything after it are discarded (the file is truncated there) and appends continue
    from that point. In any earlier segment, which was fsync-ed whole when it was rolled
    over, a bad frame is corruption and raises :class:`SpoolCorruptError`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from producers.errors import SpoolCorruptError, SpoolError, SpoolLockedError
from producers.outgoing import OutgoingRecord
from producers.spool_format import (
    FRAME_HEADER,
    SEGMENT_MAGIC,
    FrameError,
    check_frame_header,
    decode_payload,
    encode_frame,
)

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024
_HEADER = len(SEGMENT_MAGIC)
_CURSOR = "cursor"
_LOCK = "lock"


class SpoolPosition(NamedTuple):
    """A byte offset in a segment; frames start and end at positions."""

    segment: int
    offset: int


@dataclass(frozen=True)
class SpoolEntry:
    """A record read from the spool; pass it to :meth:`Spool.ack` once Kafka confirmed it.

    ``ordinal`` counts records from the spool's head when it was opened, ``end`` is where
    the next frame starts: acknowledging an entry acknowledges every entry before it.
    """

    record: OutgoingRecord
    ordinal: int
    end: SpoolPosition


@dataclass(frozen=True)
class RecoveryReport:
    """What opening the spool found on disk."""

    pending: int
    segments: int
    torn_bytes: int


def segment_path(directory: Path, segment: int) -> Path:
    return directory / f"segment-{segment:012d}.log"


class Spool:
    """The spool of one directory; thread-safe (one internal lock).

    ``clock`` is injectable so tests can drive the fsync interval without waiting.
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if segment_bytes <= _HEADER + FRAME_HEADER.size:
            raise ValueError(f"segment_bytes must exceed {_HEADER + FRAME_HEADER.size}")
        self.directory = directory
        self._segment_bytes = segment_bytes
        self._fsync_interval_s = fsync_interval_s
        self._clock = clock
        self._mutex = threading.Lock()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create spool directory {directory}: {exc}") from exc
        self._lock_fd = _lock_directory(directory)
        self._segment_ends: dict[int, int] = {}  # closed segments -> their valid length
        self._readers: dict[int, int] = {}  # segment -> read-only fd
        self._write_fd: int | None = None
        self._write_segment = 0
        self._write_offset = _HEADER
        self._unsynced = False
        self._last_sync = clock()
        self._closed = False
        self._pending = 0
        self._ack = self._read = SpoolPosition(0, _HEADER)  # first unacknowledged / next to read
        self._ack_ordinal = self._read_ordinal = 0
        try:
            self.recovery = self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- state ------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Records appended and not yet acknowledged."""
        return self._pending

    def is_empty(self) -> bool:
        return self._pending == 0

    # -- append -----------------------------------------------------------------------------
    def append(self, record: OutgoingRecord) -> None:
        """Write ``record`` after every record already in the spool (see fsync policy)."""
        try:
            frame = encode_frame(record)
        except (FrameError, UnicodeError) as exc:
            raise SpoolError(f"record {record.event_id!r} cannot be spooled: {exc}") from exc
        with self._mutex:
            self._check_open()
            try:
                fd = self._writable_segment(len(frame))
                _write_all(fd, frame)
            except OSError as exc:
                raise SpoolError(
                    f"appending to the spool in {self.directory} failed: {exc}"
                ) from exc
            self._write_offset += len(frame)
            self._pending += 1
            self._unsynced = True
            self._sync_if_due_locked(force=self._fsync_interval_s <= 0)

    def sync_if_due(self) -> None:
        """fsync the segment being written if the fsync interval has passed since the last."""
        with self._mutex:
            if not self._closed:
                self._sync_if_due_locked(force=False)

    # -- read and acknowledge ---------------------------------------------------------------
    def read_batch(self, max_records: int, max_bytes: int = 4 * 1024 * 1024) -> list[SpoolEntry]:
        """Up to ``max_records`` entries after the last one read, oldest first.

        Reading moves a read position only; nothing is removed until :meth:`ack`.
        """
        entries: list[SpoolEntry] = []
        size = 0
        with self._mutex:
            self._check_open()
            while len(entries) < max_records and size < max_bytes:
                entry = self._read_one()
                if entry is None:
                    break
                entries.append(entry)
                size += len(entry.record.value)
        return entries

    def rewind(self) -> None:
        """Read again from the first unacknowledged record (after a failed re-send)."""
        with self._mutex:
            self._read = self._ack
            self._read_ordinal = self._ack_ordinal

    def ack(self, entry: SpoolEntry) -> None:
        """Remove ``entry`` and every entry before it from the spool, durably enough.

        The cursor file is replaced atomically; segments left wholly behind it are deleted.
        """
        with self._mutex:
            self._check_open()
            if entry.ordinal < self._ack_ordinal:
                return  # already acknowledged
            if entry.ordinal >= self._read_ordinal:
                raise SpoolError("cannot acknowledge an entry that was not read")
            self._pending -= entry.ordinal + 1 - self._ack_ordinal
            self._ack_ordinal = entry.ordinal + 1
            self._ack = entry.end
            try:
                if self._pending == 0:
                    self._reset_empty()
                else:
                    self._drop_segments_before(self._ack.segment)
                    _replace_file(
                        self.directory / _CURSOR, f"{self._ack.segment} {self._ack.offset}\n"
                    )
            except OSError as exc:
                raise SpoolError(f"recording progress in {self.directory} failed: {exc}") from exc

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        """fsync what was appended and release the directory; idempotent."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                if self._write_fd is not None:
                    if self._unsynced:
                        os.fsync(self._write_fd)
                    os.close(self._write_fd)
                    self._write_fd = None
                for fd in self._readers.values():
                    os.close(fd)
                self._readers.clear()
            finally:
                os.close(self._lock_fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals: recovery ----------------------------------------------------------------
    def _recover(self) -> RecoveryReport:
        segments = sorted(_segment_ids(self.directory))
        cursor = _read_cursor(self.directory / _CURSOR)
        if not segments:
            self._start_empty(next_segment=0)
            return RecoveryReport(pending=0, segments=0, torn_bytes=0)
        if cursor is None or cursor.segment not in segments:
            cursor = SpoolPosition(segments[0], _HEADER)
        for segment in [s for s in segments if s < cursor.segment]:
            segment_path(self.directory, segment).unlink()
        live = [s for s in segments if s >= cursor.segment]
        pending = 0
        torn = 0
        for index, segment in enumerate(live):
            last = index == len(live) - 1
            start = cursor.offset if segment == cursor.segment else _HEADER
            count, valid_end, size = self._scan_segment(segment, start, last=last)
            pending += count
            if segment == cursor.segment and cursor.offset > valid_end:
                cursor = SpoolPosition(segment, valid_end)  # cursor outlived its data
            if last:
                torn = size - valid_end
            else:
                self._segment_ends[segment] = valid_end
        if torn:
            log.warning(
                "spool %s: discarded %d bytes of a torn write at the end of segment %d",
                self.directory,
                torn,
                live[-1],
            )
        self._pending = pending
        if pending == 0:
            self._start_empty(next_segment=live[-1] + 1)
            self._remove_all_files()
            return RecoveryReport(pending=0, segments=0, torn_bytes=torn)
        self._ack = self._read = cursor
        self._ack_ordinal = self._read_ordinal = 0
        self._open_for_append(live[-1])
        return RecoveryReport(pending=pending, segments=len(live), torn_bytes=torn)

    def _scan_segment(self, segment: int, start: int, *, last: bool) -> tuple[int, int, int]:
        """``(valid frames, end of the last valid frame, file size)``; truncates a torn tail."""
        path = segment_path(self.directory, segment)
        data = path.read_bytes()
        if data[:_HEADER] != SEGMENT_MAGIC:
            if last and SEGMENT_MAGIC.startswith(data[:_HEADER]):
                path.write_bytes(SEGMENT_MAGIC)  # torn while being created
                return 0, _HEADER, len(data)
            raise SpoolCorruptError(f"{path} is not a spool segment (bad magic)")
        count, offset = 0, min(max(start, _HEADER), len(data))
        while offset < len(data):
            try:
                length, crc = check_frame_header(data[offset : offset + FRAME_HEADER.size])
                payload = data[offset + FRAME_HEADER.size : offset + FRAME_HEADER.size + length]
                if len(payload) < length:
                    raise FrameError("truncated payload")
                decode_payload(payload, crc)
            except (FrameError, UnicodeError) as exc:
                if not last:
                    raise SpoolCorruptError(f"{path} at byte {offset}: {exc}") from exc
                with open(path, "r+b") as torn_file:
                    torn_file.truncate(offset)
                    os.fsync(torn_file.fileno())
                return count, offset, len(data)
            offset += FRAME_HEADER.size + length
            count += 1
        return count, offset, len(data)

    def _start_empty(self, next_segment: int) -> None:
        self._pending = 0
        self._write_segment = next_segment
        self._write_offset = _HEADER
        self._ack = self._read = SpoolPosition(next_segment, _HEADER)
        self._ack_ordinal = self._read_ordinal = 0

    # -- internals: writing -----------------------------------------------------------------
    def _open_for_append(self, segment: int) -> None:
        path = segment_path(self.directory, segment)
        self._write_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._write_segment = segment
        self._write_offset = os.fstat(self._write_fd).st_size
        if self._write_offset == 0:
            _write_all(self._write_fd, SEGMENT_MAGIC)
            self._write_offset = _HEADER
            _fsync_directory(self.directory)

    def _writable_segment(self, frame_size: int) -> int:
        if self._write_fd is None:
            self._open_for_append(self._write_segment)
        elif self._write_offset + frame_size > self._segment_bytes and self._write_offset > _HEADER:
            self._roll_over()
        assert self._write_fd is not None
        return self._write_fd

    def _roll_over(self) -> None:
        assert self._write_fd is not None
        os.fsync(self._write_fd)
        os.close(self._write_fd)
        self._write_fd = None
        self._unsynced = False
        self._segment_ends[self._write_segment] = self._write_offset
        self._open_for_append(self._write_segment + 1)

    def _sync_if_due_locked(self, *, force: bool) -> None:
        if not self._unsynced or self._write_fd is None:
            return
        now = self._clock()
        if force or now - self._last_sync >= self._fsync_interval_s:
            try:
                os.fsync(self._write_fd)
            except OSError as exc:
                raise SpoolError(f"fsync of the spool in {self.directory} failed: {exc}") from exc
            self._unsynced = False
            self._last_sync = now

    # -- internals: reading -----------------------------------------------------------------
    def _read_one(self) -> SpoolEntry | None:
        position = self._read
        if position.segment == self._write_segment and position.offset >= self._write_offset:
            return None
        end_of_segment = self._segment_ends.get(position.segment)
        if end_of_segment is not None and position.offset >= end_of_segment:
            self._read = SpoolPosition(position.segment + 1, _HEADER)
            return self._read_one()
        fd = self._reader(position.segment)
        try:
            header = os.pread(fd, FRAME_HEADER.size, position.offset)
            length, crc = check_frame_header(header)
            payload = os.pread(fd, length, position.offset + FRAME_HEADER.size)
            record = decode_payload(payload, crc)
        except (OSError, FrameError, UnicodeError) as exc:
            raise SpoolCorruptError(
                f"reading segment {position.segment} at byte {position.offset}: {exc}"
            ) from exc
        end = SpoolPosition(position.segment, position.offset + FRAME_HEADER.size + length)
        entry = SpoolEntry(record=record, ordinal=self._read_ordinal, end=end)
        self._read = end
        self._read_ordinal += 1
        return entry

    def _reader(self, segment: int) -> int:
        fd = self._readers.get(segment)
        if fd is None:
            fd = os.open(segment_path(self.directory, segment), os.O_RDONLY)
            self._readers[segment] = fd
        return fd

    # -- internals: removal -----------------------------------------------------------------
    def _drop_segments_before(self, segment: int) -> None:
        end = self._segment_ends.get(segment)
        if end is not None and self._ack.offset >= end:
            # The cursor sits at the very end of a closed segment: it is wholly acknowledged.
            self._ack = SpoolPosition(segment + 1, _HEADER)
            if self._read.segment == segment:
                self._read = self._ack
            segment += 1
        for old in [s for s in self._segment_ends if s < segment]:
            self._forget_segment(old)
            segment_path(self.directory, old).unlink(missing_ok=True)

    def _reset_empty(self) -> None:
        next_segment = self._write_segment + 1
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
        self._unsynced = False
        self._remove_all_files()
        self._start_empty(next_segment)

    def _remove_all_files(self) -> None:
        for segment in list(self._segment_ends) + list(self._readers):
            self._forget_segment(segment)
        for segment in _segment_ids(self.directory):
            segment_path(self.directory, segment).unlink(missing_ok=True)
        (self.directory / _CURSOR).unlink(missing_ok=True)

    def _forget_segment(self, segment: int) -> None:
        self._segment_ends.pop(segment, None)
        fd = self._readers.pop(segment, None)
        if fd is not None:
            os.close(fd)

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError(f"the spool in {self.directory} is closed")


def _lock_directory(directory: Path) -> int:
    fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise SpoolLockedError(f"the spool in {directory} is in use by another publisher") from exc
    return fd


def _segment_ids(directory: Path) -> list[int]:
    ids = []
    for path in directory.glob("segment-*.log"):
        try:
            ids.append(int(path.stem.removeprefix("segment-")))
        except ValueError:
            continue
    return ids


def _read_cursor(path: Path) -> SpoolPosition | None:
    try:
        segment, offset = path.read_text().split()
        return SpoolPosition(int(segment), max(int(offset), _HEADER))
    except (FileNotFoundError, ValueError):
        return None


def _replace_file(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    """Make a newly created segment's directory entry durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
