"""A real ``changes`` topic, the events API running on it, and keys in the real key topic.

Change events are produced straight to ``changes`` with kafka-python and the project codec,
keyed by subject like the processors do, so these tests do not depend on the processors.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import change_events
from change_events import KEY_SPECS
from kafka import KafkaProducer

from changefeed.config import Settings
from events_api.access.key_topic import KeyStore
from events_api.access.keys import Role, new_key
from events_api.runtime import EventsApi, serve
from schemas.action_contract import subject_key
from schemas.codec import default_codec


def now_us() -> int:
    return time.time_ns() // 1000


def change_event(n: int, *, created_us: int | None = None, **fields: Any) -> dict[str, Any]:
    """A valid ``changefeed.ChangeEvent`` created now (or at ``created_us``), with a change id
    unique to the call."""
    created = created_us if created_us is not None else now_us()
    return change_events.change_event(n, created_us=created, unique_id=True, **fields)


class ChangePublisher:
    """Produces ChangeEvents to ``changes``; remembers the end offset of each partition."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic("changes")
        self.codec = default_codec()
        self.producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        self.ends: dict[int, int] = {}

    def publish(self, *changes: dict[str, Any]) -> list[tuple[int, int]]:
        futures = []
        for change in changes:
            key = subject_key(change["tenant_id"], change["subject_type"], change["subject_id"])
            value = self.codec.encode("changefeed.ChangeEvent", change)
            futures.append(self.producer.send(self.topic, key=key.encode(), value=value))
        self.producer.flush()
        positions = []
        for future in futures:
            meta = future.get(timeout=30)
            self.ends[meta.partition] = max(self.ends.get(meta.partition, 0), meta.offset + 1)
            positions.append((meta.partition, meta.offset))
        return positions

    def close(self) -> None:
        self.producer.close()


@dataclass
class RunningApi:
    settings: Settings
    api: EventsApi
    base_url: str
    session: aiohttp.ClientSession
    publisher: ChangePublisher
    keys: dict[str, str] = field(default_factory=dict)

    def headers(self, label: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[label]}"} if label else {}

    async def get(self, path: str, label: str | None = "acme-admin", **params: Any) -> Any:
        async with self.session.get(
            self.base_url + path, params=params, headers=self.headers(label)
        ) as response:
            return response.status, await response.json()

    async def publish(self, *changes: dict[str, Any]) -> list[tuple[int, int]]:
        """Publish and wait until the API's index holds them."""
        positions = self.publisher.publish(*changes)
        assert await self.api.indexer.wait_indexed(dict(self.publisher.ends), 30.0), (
            "the indexer did not reach the published offsets"
        )
        return positions


def create_keys(
    settings: Settings, specs: dict[str, tuple[str, Role, str | None]]
) -> dict[str, str]:
    """Create keys the way ``changefeed keys create`` does: records in the key topic."""
    store = KeyStore(settings)
    keys = {}
    for label, (tenant, role, user) in specs.items():
        key, record = new_key(tenant, role, user_id=user, name=label)
        store.put(record)
        keys[label] = key
    return keys


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[RunningApi]:
    keys = create_keys(settings, KEY_SPECS)
    api, runner, port = await serve(settings)
    assert await api.wait_ready(60.0), "the events API did not get ready"
    publisher = ChangePublisher(settings)
    session = aiohttp.ClientSession()
    try:
        yield RunningApi(settings, api, f"http://127.0.0.1:{port}", session, publisher, keys)
    finally:
        await session.close()
        publisher.close()
        await runner.cleanup()


class ThreadedApi:
    """The events API on its own event loop in a thread, for synchronous clients."""

    def __init__(self, settings: Settings) -> None:
        import asyncio
        import threading

        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.keys = create_keys(settings, KEY_SPECS)
        self.api, self.runner, port = self._run(serve(settings))
        self.base_url = f"http://127.0.0.1:{port}"
        assert self._run(self.api.wait_ready(60.0)), "the events API did not get ready"

    def _run(self, coro: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def wait_indexed(self, ends: dict[int, int]) -> None:
        assert self._run(self.api.indexer.wait_indexed(ends, 30.0)), "not indexed in time"

    def close(self) -> None:
        self._run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
