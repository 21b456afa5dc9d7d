"""``changefeed api``: the events API on its own, without processing.

Read capacity grows apart from processing: any number of API servers run beside the
workers, each with its own feed index of every ``changes`` partition (a SQLite file under
``$CHANGEFEED_DATA_DIR/api-<port>``, so an API server and a worker, or two API servers, on
one machine never share one), its own key ring, and the same cursors as every worker as
long as they share ``CHANGEFEED_SECRET`` (cursor keys derive from it).

A subject's current state is the processors' ``subject_state`` table, which only workers
hold. With ``CHANGEFEED_WORKER_URL`` set (any worker's base URL: it forwards to the worker
that owns the subject), ``GET /v1/subjects/{type}/{id}`` is forwarded there, with the
caller's key, and answers what a worker answers; a worker that does not answer makes it a
503 that says so. Without it, the state is derived from the subject's latest state-setting
change in this server's index: the same answer for every subject changed within retention
(older subjects show their latest change only).

Besides ``/v1``, ``/openapi.json`` and the explorer page (``/explorer``, where ``/`` leads)
it serves ``/healthz`` and ``/readyz`` (200 once the
keys are loaded and the index follows ``changes``, and while the index is neither stuck nor
lagging; 503 with the reasons otherwise), ``/livez`` and ``/metrics``
(:mod:`events_api.metrics`). It applies the same web limits as the worker
(:mod:`changefeed.web_limits`: header read timeout, connection cap).
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.exposition import choose_encoder
from yarl import URL

from changefeed.config import Settings
from changefeed.web_limits import LimitedAppRunner
from events_api.errors import Unavailable
from events_api.http import mount
from events_api.relay import Relay, key_headers
from events_api.runtime import EventsApi
from events_api.subjects import SubjectStateView

_API = web.AppKey("events_api", EventsApi)


class WorkerSubjectStates:
    """Subject states asked of a worker (which routes to the subject's owner itself)."""

    def __init__(self, worker_url: str) -> None:
        self.worker = URL(worker_url)
        self._relay = Relay()

    async def forward(self, request: web.Request, subject_key: str) -> web.StreamResponse | None:
        url = self.worker.join(URL(request.raw_path, encoded=True))
        try:
            return await self._relay.get(url, key_headers(request), str(self.worker))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(
                f"subject state comes from the workers, and {self.worker} did not answer "
                f"({type(exc).__name__}); retry shortly"
            ) from exc

    async def state(self, subject_key: str) -> SubjectStateView | None:
        raise Unavailable("subject state is forwarded to a worker; retry")  # pragma: no cover

    async def close(self) -> None:
        await self._relay.close()


@dataclass(frozen=True)
class Check:
    """One named readiness check of the API server: ``code`` short, ``reason`` for people."""

    name: str
    ok: bool
    code: str = ""
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"ok": self.ok, **({"reason": self.reason} if self.reason else {}), **self.details}


def api_checks(api: EventsApi) -> list[Check]:
    """The API server's readiness checks, in order; the first failing one is the reason."""
    keys = api.keys.loaded
    following = api.indexer.following
    index_ok, index_reason, index_details = api.indexer.health()
    return [
        Check("keys", keys, "" if keys else "starting", "" if keys else "loading the API keys"),
        Check(
            "index_following",
            following,
            "" if following else "starting",
            "" if following else "the feed index is not following changes yet",
        ),
        Check(
            "feed_index", index_ok, "" if index_ok else "feed_index", index_reason, index_details
        ),
    ]


def readiness(api: EventsApi) -> dict[str, object]:
    checks = api_checks(api)
    codes = list(dict.fromkeys(c.code for c in checks if not c.ok))
    return {
        "ready": not codes,
        "reason": codes[0] if codes else None,
        "reasons": codes,
        "checks": {c.name: c.body() for c in checks},
    }


async def _health(request: web.Request) -> web.Response:
    state = readiness(request.app[_API])
    return web.json_response(state, status=200 if state["ready"] else 503)


async def _alive(request: web.Request) -> web.Response:
    return web.json_response({"alive": True})


async def _metrics(request: web.Request) -> web.Response:
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encode(request.app[_API].registry)
    return web.Response(body=body, headers={"Content-Type": content_type})


def api_settings(settings: Settings, port: int) -> Settings:
    """Settings of an API server on ``port``: its index apart from any worker's."""
    return settings.with_(data_dir=settings.data_dir / f"api-{port}")


def standalone_app(settings: Settings, worker_url: str | None) -> tuple[EventsApi, web.Application]:
    """The root application of an API server (``/v1``, OpenAPI, health, metrics)."""
    subjects = WorkerSubjectStates(worker_url) if worker_url else None
    api = EventsApi(settings, subjects=subjects)
    root = web.Application()
    root[_API] = api
    mount(root, api.web_app(), redirect_root=True)
    root.router.add_get("/healthz", _health)
    root.router.add_get("/readyz", _health)
    root.router.add_get("/livez", _alive)
    root.router.add_get("/metrics", _metrics)
    return api, root


def run_api_server(settings: Settings, *, host: str, port: int, worker_url: str | None) -> int:
    """Serve the events API on ``host``:``port`` until SIGTERM / Ctrl-C; returns 0."""
    return asyncio.run(_serve(api_settings(settings, port), host, port, worker_url))


async def _serve(settings: Settings, host: str, port: int, worker_url: str | None) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _, root = standalone_app(settings, worker_url)
    runner = LimitedAppRunner(root, settings.web_limits, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await web.TCPSite(runner, host, port).start()
        forwarding = (
            f"subject state from {worker_url}" if worker_url else "subject state from the index"
        )
        print(f"events API on http://{host}:{port} ({forwarding})", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0
