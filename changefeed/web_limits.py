"""Limits every changefeed web server applies to its connections (worker and demo API).

Two rules, so that clients that never finish a request cannot pile up open files:

* **Header read timeout**: a connection must deliver a complete request head within
  ``header_timeout_s`` of connecting (and of its previous response, for a kept-alive
  connection), or it is closed. Trickling bytes does not extend the deadline. A request in
  progress (a long poll, for one) is not affected. This is aiohttp's keep-alive timer, which
  since 3.10 also runs from the moment a connection opens and closes a connection whose
  handler is idle: set to the header timeout, it closes exactly the half-sent requests and
  idle kept-alive connections.
* **Connection cap**: at most ``max_connections`` open connections per server (per worker
  process); a connection beyond it is closed at once, and that is logged at most once every
  ten seconds.

:class:`LimitedAppRunner` is an ``aiohttp.web.AppRunner`` with both; :func:`serve_app`
runs an aiohttp application with it until SIGINT/SIGTERM (what ``web.run_app`` does, which
cannot take a custom runner).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

from aiohttp import web

from changefeed.config import WebLimits

log = logging.getLogger(__name__)

CAP_LOG_INTERVAL_S = 10.0


class LimitedAppRunner(web.AppRunner):
    """An ``AppRunner`` whose server applies :class:`WebLimits`; see the module doc."""

    def __init__(self, app: web.Application, limits: WebLimits, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=limits.header_timeout_s, **kwargs)
        self.limits = limits
        self.refused = 0
        self._last_refusal_log = 0.0

    async def setup(self) -> None:
        await super().setup()
        server = self.server
        assert server is not None
        admit = server.connection_made

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            if len(server.connections) >= self.limits.max_connections:
                self._refuse(transport)
                return
            admit(handler, transport)

        server.connection_made = connection_made  # type: ignore[method-assign]

    def _refuse(self, transport: asyncio.Transport) -> None:
        self.refused += 1
        transport.close()
        now = time.monotonic()
        if now - self._last_refusal_log >= CAP_LOG_INTERVAL_S:
            self._last_refusal_log = now
            log.warning(
                "connection refused: %d open, the cap (%d refused so far)",
                self.limits.max_connections,
                self.refused,
            )


def serve_app(app: web.Application, host: str, port: int, limits: WebLimits) -> None:
    """Serve ``app`` on ``host:port`` with ``limits`` until SIGINT or SIGTERM."""

    async def run() -> None:
        runner = LimitedAppRunner(app, limits, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(run())
