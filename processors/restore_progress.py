"""Progress of the bulk table restore (:mod:`processors.restore`), shared with the server
that answers health probes meanwhile (:mod:`processors.startup_server`).

Kept apart from the restore itself so that the worker's port can answer before the heavy
imports (Faust, the Kafka client, RocksDB) are done: this module needs the standard
library only. The restore updates a :class:`RestoreReport` from the main thread; the
startup server reads it from its own thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RestoreReport:
    """Where a restore is (while it runs) or what it did (once done)."""

    records: int = 0
    seconds: float = 0.0
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    offsets_total: int = 0
    """Offsets to read over every changelog partition (records, plus transaction markers
    and compacted gaps), known once the restore has asked for the changelogs' ends."""
    offsets_read: dict[tuple[str, int], int] = field(default_factory=dict)
    changelogs: int = 0
    changelogs_done: int = 0
    began: float = field(default_factory=time.monotonic)
    started: bool = False
    """Whether the restore has begun (before: the worker is still starting)."""
    done: bool = False

    def describe(self) -> str:
        rate = self.records / self.seconds if self.seconds else 0.0
        return f"restored {self.records} changelog records in {self.seconds:.1f}s ({rate:,.0f}/s)"

    def progress(self) -> dict[str, Any]:
        """The figures health answers show while restoring."""
        read = sum(self.offsets_read.copy().values())  # copy: read from another thread
        elapsed = time.monotonic() - self.began
        return {
            "records": self.records,
            "offsets_read": read,
            "offsets_total": self.offsets_total,
            "percent": round(100.0 * read / self.offsets_total, 1) if self.offsets_total else 0.0,
            "changelogs_done": self.changelogs_done,
            "changelogs": self.changelogs,
            "seconds": round(elapsed, 1),
        }

    def describe_progress(self) -> str:
        p = self.progress()
        return (
            f"restoring tables: {p['records']:,} records, {p['percent']:.1f}% of "
            f"{p['offsets_total']:,} changelog offsets, {p['changelogs_done']}/"
            f"{p['changelogs']} changelogs, {p['seconds']:.0f}s"
        )
