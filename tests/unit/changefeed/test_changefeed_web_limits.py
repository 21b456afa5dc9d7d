"""Web servers close half-sent requests after the header timeout and cap connections."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from changefeed.config import WebLimits
from changefeed.web_limits import LimitedAppRunner


async def _serve(limits: WebLimits) -> tuple[LimitedAppRunner, int]:
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", hello)
    runner = LimitedAppRunner(app, limits, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


async def _closed_within(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(), timeout_s)
    except TimeoutError:
        return False
    return data == b"" or data.startswith(b"HTTP/1.1 4")


async def test_half_sent_headers_are_closed_after_the_timeout() -> None:
    runner, port = await _serve(WebLimits(header_timeout_s=1.0, max_connections=100))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        await writer.drain()
        began = time.monotonic()
        assert await _closed_within(reader, 10.0)
        assert 0.5 <= time.monotonic() - began < 5.0
        writer.close()
        # A complete request is still answered.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5.0)).startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        await runner.cleanup()


async def test_connections_beyond_the_cap_are_closed_at_once() -> None:
    runner, port = await _serve(WebLimits(header_timeout_s=30.0, max_connections=3))
    held = []
    try:
        for _ in range(3):
            held.append(await asyncio.open_connection("127.0.0.1", port))
        await asyncio.sleep(0)  # let the server register them
        for _ in range(50):
            if runner.server is not None and len(runner.server.connections) == 3:
                break
            await asyncio.sleep(0.02)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed_within(reader, 5.0)
        assert runner.refused == 1
        writer.close()
    finally:
        for _, w in held:
            w.close()
        await runner.cleanup()
