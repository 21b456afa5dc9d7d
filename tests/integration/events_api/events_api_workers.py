"""Real ``changefeed worker`` processes (the processors and the events API they serve)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from worker_process import WorkerProcess, wait_until

from changefeed.config import Settings

__all__ = ["Worker", "http_get", "wait_until"]


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Worker(WorkerProcess):
    """A worker with its own port, data directory and log, started at once."""

    def __init__(self, settings: Settings, name: str, log_dir: Path) -> None:
        super().__init__(settings, log_dir, name=name, data_dir=settings.data_dir / name)
        self.start()

    def owns(self) -> list[str]:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited: {self.tail(3000)}")
        health = self.health() or {}
        if not health.get("ready"):
            return []
        return [p for p in health.get("partitions", []) if "subject_state-changelog" in p]
