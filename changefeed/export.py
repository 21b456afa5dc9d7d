"""``changefeed replay --output DIR``: a window of a topic into files, resumable.

The window's bounds are taken once, when an export starts: each partition is read from the
first offset at or after ``--since`` up to the end offset at ``--until`` (or the tip at
start), so an export always ends, and a resumed export ends at the same offsets as the
run it continues.

Files are ``part-00000.<ext>``, ``part-00001.<ext>``, ... A file is written as
``<name>.inprogress`` and renamed when it is closed, which happens when it reaches
``max_file_bytes`` (roll), at the end, or on an interrupt (Ctrl-C / SIGINT). Each time a
file is closed the checkpoint ``DIR/_checkpoint.json`` is replaced atomically (temp file +
rename) with the bounds, the next offset to read per partition, the finished files and the
counts.

Resume (``--resume``) reads the checkpoint, deletes any ``.inprogress`` file (a run killed
without a chance to close it), and continues from the checkpoint's offsets with the next
file number. Every record up to the checkpoint is in a finished file and none after it, so
the files of an interrupted and resumed export hold exactly the records of an
uninterrupted one, none twice.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from kafka import TopicPartition
from kafka.errors import KafkaError

from changefeed.config import Settings
from changefeed.errors import ChangefeedError
from changefeed.export_formats import (
    EXTENSIONS,
    FileWriter,
    Format,
    UndecodableRecord,
    open_writer,
)
from changefeed.progress import Progress, human_bytes
from changefeed.replay import (
    ReplayReport,
    ReplayWindow,
    open_consumer,
    read_batches,
    record_name,
    topic_partitions,
    window_bounds,
)
from schemas.codec import default_codec

CHECKPOINT = "_checkpoint.json"
IN_PROGRESS = ".inprogress"
DEFAULT_MAX_FILE_BYTES = 128 * 1024 * 1024
CHECKPOINT_VERSION = 1


class ExportError(ChangefeedError):
    """The export directory or its checkpoint cannot be used as asked."""


@dataclass
class Checkpoint:
    source: str
    format: str
    window: dict[str, str | None]
    ends: dict[str, int]
    next: dict[str, int]
    files: list[str] = field(default_factory=list)
    read: int = 0
    written: int = 0
    bytes: int = 0
    skipped: int = 0  # records that do not decode as the topic's schema (Avro, Parquet)
    complete: bool = False
    version: int = CHECKPOINT_VERSION

    def save(self, directory: Path) -> None:
        fd, temp = tempfile.mkstemp(prefix=".checkpoint.", dir=directory)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(asdict(self), out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, directory / CHECKPOINT)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, directory: Path) -> Checkpoint | None:
        path = directory / CHECKPOINT
        if not path.exists():
            return None
        try:
            body = json.loads(path.read_text())
            if body.get("version") != CHECKPOINT_VERSION:
                raise ExportError(f"{path} was written by another version of changefeed")
            return cls(**body)
        except (ValueError, TypeError) as exc:
            raise ExportError(f"{path} is not a changefeed export checkpoint: {exc}") from exc


@dataclass
class ExportReport:
    directory: Path
    files: list[str]
    read: int
    written: int
    bytes: int
    seconds: float
    resumed: bool = False
    skipped: int = 0
    earliest_available: datetime | None = None

    def describe(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        skipped = ""
        if self.skipped:
            skipped = f"; {self.skipped:,} undecodable record(s) skipped"
        gone = ""
        if self.earliest_available is not None:
            gone = f"; history before {self.earliest_available.isoformat()} is gone (retention)"
        return (
            f"exported {self.written:,} of {self.read:,} records read to {len(self.files)} "
            f"file(s) in {self.directory} ({human_bytes(self.bytes)}) in {self.seconds:.1f}s, "
            f"{rate:,.0f} records/s{' (resumed)' if self.resumed else ''}{skipped}{gone}"
        )


def export(
    settings: Settings,
    window: ReplayWindow,
    *,
    source: str,
    directory: Path,
    fmt: Format,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    resume: bool = False,
    avro_codec: str = "snappy",
    progress_stream: IO[str] | None = None,
    stop_after: int | None = None,
) -> ExportReport:
    """Export the window of topic ``source`` into ``directory`` (see the module docstring).

    ``stop_after`` interrupts the run (as Ctrl-C does) once that many records were written
    in this run: for tests of resuming.
    """
    if max_file_bytes < 1024:
        raise ExportError("max file size must be at least 1 KiB")
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint.load(directory)
    name = record_name(settings, source)
    codec = default_codec()
    consumer = open_consumer(settings)
    replay_report = ReplayReport()
    try:
        partitions = topic_partitions(consumer, source)
        if resume:
            checkpoint = _resumable(checkpoint, directory, source, fmt)
        else:
            _check_fresh(checkpoint, directory)
            starts, ends = window_bounds(consumer, partitions, window, settings, replay_report)
            checkpoint = Checkpoint(
                source=source,
                format=fmt,
                window=_window_json(window),
                ends={str(tp.partition): offset for tp, offset in ends.items()},
                next={str(tp.partition): offset for tp, offset in starts.items()},
            )
            checkpoint.save(directory)
        if checkpoint.complete:
            return _report(directory, checkpoint, 0.0, resumed=True)
        stored_window = ReplayWindow(
            since=datetime.fromisoformat(str(checkpoint.window["since"])),
            until=_optional_time(checkpoint.window.get("until")),
            tenant=checkpoint.window.get("tenant"),
            event_type=checkpoint.window.get("event_type"),
        )
        run = _Run(directory, checkpoint, fmt, codec, name, max_file_bytes, avro_codec)
        starts_tp = {TopicPartition(source, int(p)): o for p, o in checkpoint.next.items()}
        ends_tp = {TopicPartition(source, int(p)): o for p, o in checkpoint.ends.items()}
        total = sum(max(0, ends_tp[tp] - starts_tp[tp]) for tp in starts_tp)
        progress = Progress(total, progress_stream)
        try:
            written_now = 0
            admits = stored_window.admits
            unfiltered = stored_window.tenant is None and stored_window.event_type is None
            positions = checkpoint.next
            for batch in read_batches(settings, starts_tp, ends_tp):
                partition = str(batch[0].partition)
                for record in batch:
                    positions[partition] = record.offset + 1  # saved when a file closes
                    checkpoint.read += 1
                    if unfiltered or admits(record.key, record.headers):
                        try:
                            run.write(record)
                        except UndecodableRecord:
                            checkpoint.skipped += 1  # never stops an export; counted
                            continue
                        written_now += 1
                        if written_now == stop_after:
                            raise KeyboardInterrupt
                progress.advance(checkpoint.read, run.bytes_total())
        except KeyboardInterrupt:
            run.close_file()  # a clean stop: every record read so far is in a finished file
            progress.finish()
            raise
        run.close_file()
        progress.finish()
        checkpoint.complete = True
        checkpoint.save(directory)
        report = _report(directory, checkpoint, progress.elapsed_s, resumed=resume)
        report.earliest_available = replay_report.earliest_available
        return report
    except KafkaError as exc:
        raise ExportError(f"export from {source} failed: {exc}") from exc
    finally:
        consumer.close()


class _Run:
    """The file being written and the rolling of files; updates the checkpoint."""

    def __init__(
        self,
        directory: Path,
        checkpoint: Checkpoint,
        fmt: Format,
        codec: Any,
        name: str | None,
        max_file_bytes: int,
        avro_codec: str,
    ) -> None:
        self.directory = directory
        self.checkpoint = checkpoint
        self.fmt = fmt
        self.codec = codec
        self.name = name
        self.max_file_bytes = max_file_bytes
        self.avro_codec = avro_codec
        self.writer: FileWriter | None = None
        self.path: Path | None = None
        self.written_in_file = 0

    def write(self, record: Any) -> None:
        if self.writer is None:
            number = len(self.checkpoint.files)
            final = self.directory / f"part-{number:05d}.{EXTENSIONS[self.fmt]}"
            self.path = final.with_name(final.name + IN_PROGRESS)
            self.writer = open_writer(
                self.fmt, self.path, self.codec, self.name, avro_codec=self.avro_codec
            )
            self.written_in_file = 0
        self.writer.write(record)
        self.written_in_file += 1
        if self.writer.bytes_written >= self.max_file_bytes:
            self.close_file()

    def bytes_total(self) -> int:
        return self.checkpoint.bytes + (self.writer.bytes_written if self.writer else 0)

    def close_file(self) -> None:
        """Finish the current file (if any) and record it, with the offsets, in the
        checkpoint; without a file open, save the offsets read so far."""
        if self.writer is not None and self.path is not None:
            self.writer.close()
            final = self.path.with_name(self.path.name[: -len(IN_PROGRESS)])
            os.replace(self.path, final)
            self.checkpoint.files.append(final.name)
            self.checkpoint.bytes += final.stat().st_size
            self.checkpoint.written += self.written_in_file
            self.writer = None
            self.path = None
        self.checkpoint.save(self.directory)


def _resumable(checkpoint: Checkpoint | None, directory: Path, source: str, fmt: str) -> Checkpoint:
    if checkpoint is None:
        raise ExportError(f"nothing to resume: {directory} has no {CHECKPOINT}")
    if checkpoint.source != source or checkpoint.format != fmt:
        raise ExportError(
            f"{directory} holds an export of {checkpoint.source} as {checkpoint.format}; "
            f"resume it with the same --source and --format"
        )
    for leftover in directory.glob(f"*{IN_PROGRESS}"):
        leftover.unlink()  # written after the checkpoint: its records are read again
    return checkpoint


def _check_fresh(checkpoint: Checkpoint | None, directory: Path) -> None:
    if checkpoint is not None:
        raise ExportError(
            f"{directory} already holds an export; continue it with --resume, or choose "
            "an empty directory"
        )
    if any(directory.glob("part-*")):
        raise ExportError(f"{directory} already holds part files; choose an empty directory")


def _window_json(window: ReplayWindow) -> dict[str, str | None]:
    return {
        "since": window.since.isoformat(),
        "until": window.until.isoformat() if window.until else None,
        "tenant": window.tenant,
        "event_type": window.event_type,
    }


def _optional_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _report(
    directory: Path, checkpoint: Checkpoint, seconds: float, *, resumed: bool
) -> ExportReport:
    return ExportReport(
        directory=directory,
        files=list(checkpoint.files),
        read=checkpoint.read,
        written=checkpoint.written,
        bytes=checkpoint.bytes,
        seconds=seconds,
        resumed=resumed,
        skipped=checkpoint.skipped,
    )
