"""The worker's web port while the tables restore, before the Faust app starts.

The bulk restore (:mod:`processors.restore`) runs before Faust's web server exists and can
take a minute. So that probes get an answer instead of a refused connection, a small
aiohttp server binds the same host and port meanwhile and answers:

* ``GET /healthz`` and ``GET /readyz``: 503 ``{"ready": false, "reason": "restoring",
  "reasons": ["restoring"], "progress": {...}}`` (records, offsets read of the total,
  changelogs done, seconds); reason ``starting`` before the restore begins (topics are
  ensured and the app is built first);
* ``GET /livez``: 200 ``{"alive": true}`` (the process is working, not stuck);
* ``GET /metrics``: ``changefeed_restore_records`` and ``changefeed_restore_progress_ratio``
  in the Prometheus text format;
* anything else: 503 ``{"error": "unavailable", "message": ...}`` (the events API is not
  served yet), never a refused connection.

It applies the worker's web limits (:mod:`changefeed.web_limits`).

:class:`StartupServer` runs it in a thread of its own (with its own event loop), so it
answers while the restore runs in the main thread and then while Faust starts; the worker
closes it just before Faust's web server binds the port
(:func:`~processors.faust_adapter.before_web_server_binds`), so a probe is refused at no
moment of the start.
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import choose_encoder

from changefeed.config import WebLimits
from changefeed.web_limits import LimitedAppRunner
from processors.restore_progress import RestoreReport

_REPORT = web.AppKey("report", RestoreReport)
_REGISTRY = web.AppKey("registry", CollectorRegistry)


def restoring_answer(report: RestoreReport) -> dict[str, object]:
    """The body of ``/healthz`` before Faust's web server answers."""
    if not report.started:
        return {
            "ready": False,
            "reason": "starting",
            "reasons": ["starting"],
            "checks": {"tables": {"ok": False, "detail": "the worker is starting"}},
        }
    return {
        "ready": False,
        "reason": "restoring",
        "reasons": ["restoring"],
        "checks": {"tables": {"ok": False, "detail": report.describe_progress()}},
        "progress": report.progress(),
    }


def startup_app(report: RestoreReport) -> web.Application:
    app = web.Application()
    app[_REPORT] = report
    registry = CollectorRegistry()
    Gauge(
        "changefeed_restore_records", "Changelog records restored so far", registry=registry
    ).set_function(lambda: report.records)
    Gauge(
        "changefeed_restore_progress_ratio",
        "Changelog offsets read out of those to read",
        registry=registry,
    ).set_function(lambda: float(report.progress()["percent"]) / 100.0)
    app[_REGISTRY] = registry
    app.router.add_get("/healthz", _health)
    app.router.add_get("/readyz", _health)
    app.router.add_get("/livez", _alive)
    app.router.add_get("/metrics", _metrics)
    app.router.add_route("*", "/{tail:.*}", _unavailable)
    return app


async def _health(request: web.Request) -> web.Response:
    return web.json_response(restoring_answer(request.app[_REPORT]), status=503)


async def _alive(request: web.Request) -> web.Response:
    return web.json_response({"alive": True})


async def _metrics(request: web.Request) -> web.Response:
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(request.app[_REGISTRY]), headers={"Content-Type": content_type})


async def _unavailable(request: web.Request) -> web.Response:
    message = "this worker is starting or restoring its tables; retry shortly (see /healthz)"
    return web.json_response(
        {"error": {"code": "unavailable", "message": message}},
        status=503,
        headers={"Retry-After": "5"},
    )


class StartupServer:
    """:func:`startup_app` on ``host``:``port``, served from a thread of its own, with
    ``limits`` (the settings' web limits; :class:`WebLimits`' defaults when not given).

    :meth:`start` returns once the port is bound (or raises what binding raised);
    :meth:`stop` closes the port and ends the thread, and may be called more than once.
    """

    def __init__(
        self, report: RestoreReport, host: str, port: int, limits: WebLimits | None = None
    ) -> None:
        self.report = report
        self.limits = limits or WebLimits()
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="startup-server", daemon=True)
        self._bound = threading.Event()
        self._failure: BaseException | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> StartupServer:
        self._thread.start()
        self._bound.wait()
        if self._failure is not None:
            self._thread.join()
            raise self._failure
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = LimitedAppRunner(startup_app(self.report), self.limits, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port)
            self._loop.run_until_complete(site.start())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of start()
            self._failure = exc
            self._bound.set()
            self._loop.close()
            return
        self._bound.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()
