"""The events API of one process, assembled from :class:`~changefeed.config.Settings`.

:class:`EventsApi` owns the feed index and its indexer, the key ring and its follower, and
the feed service, and the sink the write routes publish through (:mod:`events_api.writes`);
its aiohttp sub-application starts and stops them with the web server
that serves it (a Faust worker's, see :mod:`events_api.views`, or a standalone one, see
:func:`serve`, which tests and benchmarks use).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from changefeed.config import Settings
from events_api.access.key_topic import KeyFollower
from events_api.access.keyring import KeyRing
from events_api.cursor import CursorSigner
from events_api.http import build_events_app, mount
from events_api.index import FeedIndex
from events_api.indexer import FeedIndexer
from events_api.metrics import EventsApiMetrics
from events_api.service import FeedService
from events_api.signals import TenantSignals
from events_api.subjects import SubjectStates
from events_api.write_routes import NoScheduleTable, ScheduleTable, add_write_routes
from events_api.writes import ActionSink


def index_path(settings: Settings) -> Path:
    return settings.data_dir / "feed" / f"{settings.topic('changes')}.sqlite3"


class EventsApi:
    """``registry``: where the API's metrics go (default: a registry of its own)."""

    def __init__(
        self,
        settings: Settings,
        *,
        subjects: SubjectStates | None = None,
        registry: CollectorRegistry | None = None,
        schedules: ScheduleTable | None = None,
    ) -> None:
        topic = settings.topic("changes")
        self.settings = settings
        self.index = FeedIndex(index_path(settings), topic)
        self.signals = TenantSignals()
        self.keys = KeyRing()
        self.follower = KeyFollower(settings, self.keys)
        self.indexer = FeedIndexer(
            bootstrap=settings.bootstrap,
            topic=topic,
            index=self.index,
            signals=self.signals,
            retention_ms=settings.retention_ms,
        )
        self.feed = FeedService(
            index=self.index,
            signals=self.signals,
            signer=CursorSigner(settings.derived_key("cursor")),
            retention_ms=settings.retention_ms,
            subjects=subjects,
        )
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = EventsApiMetrics(self.registry, self.indexer, self.signals)
        self.sink = ActionSink(settings)
        self.schedules: ScheduleTable = schedules or NoScheduleTable()
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.indexer.start()
        await self.follower.start()

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        await self.follower.stop()
        await self.indexer.stop()
        if self.feed.subjects is not None:
            await self.feed.subjects.close()
        self.feed.close()

    async def wait_ready(self, timeout_s: float) -> bool:
        """Whether, within ``timeout_s``, the keys were loaded and the index reached the
        end of ``changes`` as it was when this call began."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if not await self.follower.catch_up(timeout_s):
            return False
        self.keys.loaded = True
        ends = await self.indexer.end_offsets(max(0.1, deadline - loop.time()))
        if ends is None:
            return False
        return await self.indexer.wait_indexed(ends, max(0.1, deadline - loop.time()))

    def web_app(self) -> web.Application:
        """The ``/v1`` sub-application, starting and stopping this API with its server."""
        app = build_events_app(self.feed, self.keys, timing=self.metrics.middleware())
        add_write_routes(app, self.sink, self.schedules, self.settings.source)

        async def lifecycle(_: web.Application) -> AsyncIterator[None]:
            await self.start()
            yield
            await self.stop()

        app.cleanup_ctx.append(lifecycle)
        return app


async def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    extend_api: Callable[[web.Application], None] | None = None,
) -> tuple[EventsApi, web.AppRunner, int]:
    """Run the events API alone on ``host``:``port`` (0: any free port); returns the API,
    the runner (``await runner.cleanup()`` stops everything) and the port. ``extend_api``
    as for :func:`events_api.views.register_events_api`."""
    api = EventsApi(settings)
    root = web.Application()
    events_app = api.web_app()
    if extend_api is not None:
        extend_api(events_app)
    mount(root, events_app, redirect_root=True)
    runner = web.AppRunner(root, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for address in runner.addresses:
        bound = int(address[1])
        break
    return api, runner, bound
