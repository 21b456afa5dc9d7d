"""Receivers on 127.0.0.1 that verify every delivery with the ``standardwebhooks`` package
(an implementation the project did not write), and the events API with webhooks, in-process.

A :class:`Receiver` answers as it is told: fail the first K attempts of each webhook id,
answer a fixed status, or sleep past the sender's timeout; it records every attempt and
every delivery it accepted, with the time it arrived.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import change_events
from aiohttp import web
from change_events import KEY_SPECS
from kafka import KafkaProducer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from changefeed.config import Settings, WebhookSettings
from events_api.access.key_topic import KeyStore
from events_api.access.keys import KeyScope, Role, new_key
from events_api.runtime import EventsApi, serve
from schemas.codec import default_codec
from webhooks.address_guard import Resolve, system_resolve
from webhooks.runtime import Webhooks

FAST = WebhookSettings(
    allow_networks=("127.0.0.0/8",),
    retry_schedule_s=(0.3, 0.3, 0.3),
    timeout_s=1.0,
    concurrency=8,
    pause_after_s=3600.0,
)


def change_event(n: int, **fields: Any) -> dict[str, Any]:
    """A ChangeEvent created now, with a change id unique to the call."""
    return change_events.change_event(
        n, created_us=time.time_ns() // 1000, unique_id=True, **fields
    )


class ChangePublisher:
    """Produces ChangeEvents straight to ``changes``, keyed by subject as the processors do."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic("changes")
        self.codec = default_codec()
        self.producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")

    def publish(self, *changes: dict[str, Any]) -> None:
        for change in changes:
            key = f"{change['tenant_id']}/{change['subject_type']}/{change['subject_id']}"
            value = self.codec.encode("changefeed.ChangeEvent", change)
            self.producer.send(self.topic, key=key.encode(), value=value)
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()


# Keys that manage webhooks carry the write scope; "acme-reader" is an admin key without it.
READ_ONLY = {"acme-reader"}


def create_keys(settings: Settings) -> dict[str, str]:
    store = KeyStore(settings)
    keys = {}
    specs = {**KEY_SPECS, "acme-reader": ("acme", Role.ADMIN, None)}
    for label, (tenant, role, user) in specs.items():
        scopes = (KeyScope.READ,) if label in READ_ONLY else (KeyScope.READ, KeyScope.WRITE)
        key, record = new_key(tenant, role, user_id=user, name=label, scopes=scopes)
        store.put(record)
        keys[label] = key
    return keys


def fast_settings(settings: Settings, **changes: Any) -> Settings:
    return settings.with_(webhooks=WebhookSettings(**{**FAST.__dict__, **changes}))


@dataclass
class Arrival:
    webhook_id: str
    body: dict[str, Any]
    at: float
    status: int


@dataclass
class Receiver:
    """An endpoint on 127.0.0.1 (start it with :meth:`start`)."""

    fail_first: int = 0
    flaky_share: float = 0.0  # the first attempt of this share of ids fails (by id hash)
    status: int = 204
    delay_s: float = 0.0
    location: str | None = None  # sent with the answer (redirects)
    secret: str | None = None
    attempts: list[Arrival] = field(default_factory=list)
    delivered: list[Arrival] = field(default_factory=list)
    bad_signatures: int = 0
    raw: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    _tries: dict[str, int] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        raw = await request.read()
        msg_id = request.headers.get("webhook-id", "")
        self.raw.append((dict(request.headers), raw))
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(raw, dict(request.headers))
            except WebhookVerificationError:
                self.bad_signatures += 1
                return web.Response(status=400)
        body = json.loads(raw)
        tries = self._tries[msg_id] = self._tries.get(msg_id, 0) + 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        flaky = tries == 1 and zlib.crc32(msg_id.encode()) % 1000 < self.flaky_share * 1000
        status = 500 if tries <= self.fail_first or flaky else self.status
        arrival = Arrival(msg_id, body, time.time(), status)
        self.attempts.append(arrival)
        if 200 <= status < 300:
            self.delivered.append(arrival)
        headers = {"Location": self.location} if self.location else None
        return web.Response(status=status, headers=headers)

    def ids(self) -> list[str]:
        return [a.webhook_id for a in self.delivered]


class ThreadedReceiver:
    """A :class:`Receiver` on its own event loop in a thread, for tests whose own code blocks
    (a worker subprocess, kafka-python)."""

    def __init__(self, receiver: Receiver) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.receiver = asyncio.run_coroutine_threadsafe(receiver.start(), self.loop).result(30)

    def snapshot(self) -> list[Arrival]:
        """The deliveries so far (copied on the receiver's loop)."""
        return asyncio.run_coroutine_threadsafe(self._copy(), self.loop).result(30)

    async def _copy(self) -> list[Arrival]:
        return list(self.receiver.delivered)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class WebhookApi:
    settings: Settings
    api: EventsApi
    webhooks: Webhooks
    base_url: str
    session: aiohttp.ClientSession
    publisher: ChangePublisher
    keys: dict[str, str]

    async def call(
        self, method: str, path: str, label: str = "acme-admin", body: Any = None, **params: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.keys[label]}"}
        async with self.session.request(
            method, self.base_url + path, json=body, params=params, headers=headers
        ) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None

    async def subscribe(
        self, receiver: Receiver, label: str = "acme-admin", **fields: Any
    ) -> dict[str, Any]:
        body = {"url": receiver.url, "event_types": ["*"], **fields}
        status, answer = await self.call("POST", "/v1/webhooks", label, body)
        assert status == 201, answer
        receiver.secret = answer["secret"]
        return answer

    async def subscribe_url(self, url: str) -> dict[str, Any]:
        status, answer = await self.call(
            "POST", "/v1/webhooks", body={"url": url, "event_types": ["*"]}
        )
        assert status == 201, answer
        return answer

    async def failed(self, **params: Any) -> dict[str, Any]:
        status, answer = await self.call("GET", "/v1/webhooks/failed", **params)
        assert status == 200, answer
        return answer


@asynccontextmanager
async def webhook_api(
    settings: Settings, resolve: Resolve = system_resolve
) -> AsyncIterator[WebhookApi]:
    keys = create_keys(settings)
    webhooks = Webhooks(settings, resolve=resolve, delivery="here")
    api, runner, port = await serve(settings, extend_api=webhooks.install)
    assert await api.wait_ready(60.0), "the events API did not get ready"
    publisher = ChangePublisher(settings)
    session = aiohttp.ClientSession()
    try:
        yield WebhookApi(
            settings, api, webhooks, f"http://127.0.0.1:{port}", session, publisher, keys
        )
    finally:
        await session.close()
        publisher.close()
        await runner.cleanup()


async def eventually(condition: Any, timeout_s: float, what: str) -> None:
    """Poll ``condition`` (sync or async) until it is true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)
