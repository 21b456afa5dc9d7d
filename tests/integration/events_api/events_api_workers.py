"""Real ``changefeed worker`` processes (the processors and the events API they serve)."""

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

from changefeed.config import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Worker:
    """``python -m changefeed.cli worker`` with its own port and data directory."""

    def __init__(self, settings: Settings, name: str, log_dir: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        env = {
            **os.environ,
            "CHANGEFEED_BOOTSTRAP": settings.bootstrap,
            "CHANGEFEED_TOPIC_PREFIX": settings.topic_prefix,
            "CHANGEFEED_APP_ID": settings.app_id,
            "CHANGEFEED_PARTITIONS": str(settings.partitions),
            "CHANGEFEED_DATA_DIR": str(settings.data_dir / name),
            "CHANGEFEED_WORKER_PORT": str(self.port),
            "CHANGEFEED_SECRET": settings.secret.decode(),
        }
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "changefeed.cli", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def health(self) -> dict[str, Any]:
        try:
            _, _, body = http_get(f"{self.base_url}/healthz")
            parsed: dict[str, Any] = json.loads(body)
            return parsed
        except (OSError, ValueError):
            return {}

    def owns(self) -> list[str]:
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited: {self.log_path.read_text()[-3000:]}")
        health = self.health()
        if not health.get("ready"):
            return []
        return [p for p in health.get("partitions", []) if "subject_state-changelog" in p]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
