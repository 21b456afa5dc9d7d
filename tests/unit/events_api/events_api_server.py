"""The events API over a feed index filled in-process: HTTP without a broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from change_events import KEY_SPECS, T0

from events_api.access.keyring import KeyRing
from events_api.access.keys import ApiKeyRecord, new_key
from events_api.cursor import CursorSigner
from events_api.http import build_events_app, mount
from events_api.index import FeedIndex
from events_api.indexer import to_indexed
from events_api.service import FeedService
from events_api.signals import TenantSignals
from schemas.codec import default_codec

SEVEN_DAYS_MS = 7 * 86_400_000
NOW_S = T0 / 1e6 + 3600  # the tests' clock: an hour after the first event


@dataclass
class ApiUnderTest:
    client: TestClient
    index: FeedIndex
    signals: TenantSignals
    keys: dict[str, str]  # label -> key
    records: dict[str, ApiKeyRecord]
    ring: KeyRing
    offsets: dict[int, int]

    def add(self, partition: int, *changes: dict[str, Any]) -> None:
        """Index ``changes`` as the next records of ``partition`` and wake long polls."""
        codec = default_codec()
        rows = []
        for change in changes:
            offset = self.offsets.get(partition, 0)
            self.offsets[partition] = offset + 1
            rows.append(
                to_indexed(codec, partition, offset, codec.encode("changefeed.ChangeEvent", change))
            )
        self.signals.notify(self.index.add(rows, {partition: self.offsets[partition]})[0])

    def auth(self, label: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[label]}"}

    async def get(self, path: str, label: str | None = "acme-admin", **params: Any) -> Any:
        headers = self.auth(label) if label else {}
        response = await self.client.get(path, params=params, headers=headers)
        return response.status, await response.json()


@asynccontextmanager
async def api_under_test(tmp_path: Path) -> AsyncIterator[ApiUnderTest]:
    index = FeedIndex(tmp_path / "feed.sqlite3", "changes")
    index.open()
    signals = TenantSignals()
    keys: dict[str, str] = {}
    records: dict[str, ApiKeyRecord] = {}
    for label, (tenant, role, user) in KEY_SPECS.items():
        keys[label], records[label] = new_key(tenant, role, user_id=user, name=label)
    ring = KeyRing(list(records.values()))
    feed = FeedService(
        index=index,
        signals=signals,
        signer=CursorSigner(b"s" * 32),
        retention_ms=SEVEN_DAYS_MS,
        clock=lambda: NOW_S,
    )
    root = web.Application()
    mount(root, build_events_app(feed, ring))
    client = TestClient(TestServer(root))
    await client.start_server()
    try:
        yield ApiUnderTest(client, index, signals, keys, records, ring, {})
    finally:
        await client.close()
        feed.close()
        index.close()
