"""The bulk restore reports its progress: in health answers and, periodically, in the log."""

from __future__ import annotations

import asyncio
import logging

import pytest

from processors import restore
from processors.restore import RestoreReport


def test_progress_counts_offsets_read_of_the_total() -> None:
    report = RestoreReport(records=90, offsets_total=200, changelogs=4, changelogs_done=1)
    report.offsets_read[("a-changelog", 0)] = 60
    report.offsets_read[("a-changelog", 1)] = 40
    progress = report.progress()
    assert progress["offsets_read"] == 100 and progress["percent"] == 50.0
    assert RestoreReport().progress()["percent"] == 0.0  # nothing to restore yet


def test_the_log_hears_of_progress_periodically(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(restore, "PROGRESS_LOG_S", 0.01)
    report = RestoreReport(offsets_total=10, changelogs=1)

    async def restoring() -> None:
        ticker = asyncio.create_task(restore._log_progress(report))
        for n in range(5):
            report.records = n
            await asyncio.sleep(0.02)
        ticker.cancel()

    with caplog.at_level(logging.INFO, logger="processors.restore"):
        asyncio.run(restoring())
    lines = [r.getMessage() for r in caplog.records if r.name == "processors.restore"]
    assert len(lines) >= 3
    assert all(line.startswith("restoring tables: ") for line in lines)
    assert lines[0] != lines[-1]  # the figures move


def test_progress_is_logged_at_least_every_ten_seconds() -> None:
    assert restore.PROGRESS_LOG_S <= 10.0
