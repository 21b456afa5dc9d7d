"""A real worker with keys that may write, an HTTP client for it, and ``changes`` read back.

Changes are read from the topic itself (``read_committed``), so counting them tells how
many times an occurrence or a generated event really reached the feed.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from worker_process import WorkerProcess, wait_until

from changefeed.config import Settings
from events_api.access.key_topic import KeyStore
from events_api.access.keys import KeyScope, Role, new_key
from schemas.codec import default_codec

READ_WRITE = (KeyScope.READ, KeyScope.WRITE)


def create_key(
    settings: Settings,
    tenant: str,
    *,
    scopes: tuple[KeyScope, ...] = READ_WRITE,
    role: Role = Role.ADMIN,
    user: str | None = None,
) -> str:
    key, record = new_key(tenant, role, user_id=user, name=f"{tenant}-{role}", scopes=scopes)
    KeyStore(settings).put(record)
    return key


class Client:
    """Synchronous JSON calls to a worker's events API with one key."""

    def __init__(self, worker: WorkerProcess, key: str) -> None:
        self.worker = worker
        self.key = key

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(
            self.worker.base_url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.key}",
                "Content-Type": "application/json",
                **(headers or {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def get(self, path: str) -> tuple[int, Any]:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return self.call("POST", path, body, **kwargs)

    def wait_for(self, path: str, condition: Any, timeout_s: float = 60.0) -> Any:
        """GET ``path`` until ``condition(body)`` holds (200 only); the last body."""
        last: list[Any] = [None]

        def check() -> bool:
            status, body = self.get(path)
            last[0] = (status, body)
            return status == 200 and bool(condition(body))

        try:
            wait_until(check, timeout_s, f"{path} to satisfy the condition")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer: {last[0]}") from None
        return last[0][1]


class ChangesReader:
    """Every committed record of ``changes`` so far, decoded."""

    def __init__(self, settings: Settings) -> None:
        self.codec = default_codec()
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            group_id=None,
        )
        self.partitions = [
            TopicPartition(settings.topic("changes"), p) for p in range(settings.partitions)
        ]
        self.consumer.assign(self.partitions)
        self.consumer.seek_to_beginning(*self.partitions)
        self.changes: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        ends = self.consumer.end_offsets(self.partitions)
        deadline = time.monotonic() + 30
        while any(self.consumer.position(tp) < ends[tp] for tp in self.partitions):
            if time.monotonic() > deadline:
                raise AssertionError("changes could not be read to the end")
            for records in self.consumer.poll(timeout_ms=500).values():
                for record in records:
                    self.changes.append(self.codec.decode(record.value, "changefeed.ChangeEvent"))
        return self.changes

    def close(self) -> None:
        self.consumer.close()
