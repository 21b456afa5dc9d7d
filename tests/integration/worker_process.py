"""A real ``changefeed worker`` in a subprocess, for the integration tests of every part."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from changefeed.broker.local import pid_alive
from changefeed.config import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)


class WorkerProcess:
    """``changefeed worker`` in a subprocess, with its log in ``log_dir``."""

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        *,
        port: int | None = None,
        name: str = "worker",
        data_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.env = {
            **os.environ,
            "CHANGEFEED_BOOTSTRAP": settings.bootstrap,
            "CHANGEFEED_TOPIC_PREFIX": settings.topic_prefix,
            "CHANGEFEED_APP_ID": settings.app_id,
            "CHANGEFEED_PARTITIONS": str(settings.partitions),
            "CHANGEFEED_DATA_DIR": str(data_dir or settings.data_dir),
            "CHANGEFEED_WORKER_PORT": str(self.port),
            "CHANGEFEED_RETENTION_MS": str(settings.retention_ms),
            "CHANGEFEED_REDACT_PATHS": ",".join(settings.redact_paths),
            "CHANGEFEED_REDACT_KEYS": ",".join(settings.redact_keys),
            "CHANGEFEED_HTTP_HEADER_TIMEOUT_S": str(settings.web_limits.header_timeout_s),
            "CHANGEFEED_HTTP_MAX_CONNECTIONS": str(settings.web_limits.max_connections),
            "CHANGEFEED_SECRET": settings.secret.decode(),
        }

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.log"

    def start(self) -> WorkerProcess:
        self.starts += 1
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "changefeed.cli", "worker", "--loglevel", "info"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                body: dict[str, Any] = json.loads(r.read())
                return body
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def metrics(self) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics.json", timeout=5) as r:
            body: dict[str, int] = json.loads(r.read())
            return body

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited ({self.process.returncode}): {self.tail()}")
            health = self.health()
            return bool(health and health.get("ready"))

        wait_until(ready, timeout_s, f"the worker to be ready; log: {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed or committed. The worker's
        children (the feed index writer) must leave with it: asserted."""
        if self.process is not None and self.process.poll() is None:
            children = self.children()
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
            wait_until(
                lambda: not any(pid_alive(child) for child in children),
                10,
                f"the children {children} of the killed worker to exit",
            )

    def children(self) -> list[int]:
        """Process ids of the worker's direct children."""
        assert self.process is not None
        pid = self.process.pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except OSError:
            return []
        return [int(child) for child in text.split()]

    def stop(self) -> int:
        """SIGTERM, the graceful stop; returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return self.process.returncode

    def tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]
