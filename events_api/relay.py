"""Passing an API request on to another worker: the caller's key, one shared session, and
the answer handed back as it came (marked with the worker that served it)."""

from __future__ import annotations

import contextlib

import aiohttp
from aiohttp import web
from yarl import URL

SERVED_BY = "X-Changefeed-Served-By"
FORWARD_TIMEOUT_S = 10.0
PASSED_ON = ("Authorization", "X-Api-Key")


def key_headers(request: web.Request) -> dict[str, str]:
    """The caller's credentials, to present to the other worker."""
    return {h: request.headers[h] for h in PASSED_ON if h in request.headers}


class Relay:
    """One client session for the requests a component passes on (opened on first use).
    Connection errors and timeouts (``aiohttp.ClientError``, ``TimeoutError``) reach the
    caller, which says what did not answer."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
            )
        return self._session

    async def get(self, url: URL, headers: dict[str, str], served_by: str) -> web.Response:
        """GET ``url`` and answer what it answered, not to be cached."""
        async with self.session().get(url, headers=headers) as answer:
            body = await answer.read()
            status, content_type = answer.status, answer.content_type
        return web.Response(
            body=body,
            status=status,
            content_type=content_type,
            headers={SERVED_BY: served_by, "Cache-Control": "no-store"},
        )

    async def close(self) -> None:
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
