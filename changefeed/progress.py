"""A progress line for long jobs (exports, reprocessing) and the summary they end with.

On a terminal, :class:`Progress` redraws one line on stderr at most five times a second:
records done (of the total when known), bytes written, rate and time left. Anywhere else
(a pipe, a file, a test) it draws nothing, so logs hold only the summary line. The decision
(what the line says) is :func:`progress_line`, a pure function.
"""

from __future__ import annotations

import sys
import time
from typing import IO

REDRAW_S = 0.2


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def progress_line(records: int, total: int | None, written: int, elapsed_s: float) -> str:
    rate = records / elapsed_s if elapsed_s > 0 else 0.0
    done = f"{records:,}" if not total else f"{records:,}/{total:,} records"
    if not total:
        done += " records"
    eta = ""
    if total and rate > 0 and records < total:
        eta = f", ETA {human_seconds((total - records) / rate)}"
    return f"{done}, {human_bytes(written)}, {rate:,.0f} records/s{eta}"


class Progress:
    """Counts records and bytes; draws :func:`progress_line` when ``stream`` is a TTY."""

    def __init__(self, total: int | None = None, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total = total
        self.records = 0
        self.bytes = 0
        self.began = time.monotonic()
        self._drawn_at = 0.0

    def advance(self, records: int, written: int) -> None:
        self.records = records
        self.bytes = written
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._drawn_at >= REDRAW_S:
            self._drawn_at = now
            line = progress_line(records, self.total, written, now - self.began)
            self.stream.write("\r\x1b[2K" + line)
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self._drawn_at:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.began
