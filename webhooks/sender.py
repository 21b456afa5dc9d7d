"""One HTTP attempt of a delivery: POST the body, signed, to an address the guard permits.

Redirects are never followed (a 3xx is a failed attempt). Each attempt has a total timeout.
The connection goes to an address the guard checked when the name was resolved
(:class:`~webhooks.address_guard.GuardedResolver`); a literal IP in the URL is checked
before every attempt. The answer's body is read (up to a small limit) and dropped, so the
connection can be reused.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import aiohttp

from webhooks.address_guard import AddressGuard, GuardedResolver, Resolve, system_resolve
from webhooks.errors import TargetRefused

USER_AGENT = "changefeed-webhooks/1"
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class AttemptResult:
    status: int | None
    error: str | None


class Sender:
    def __init__(
        self, guard: AddressGuard, timeout_s: float, resolve: Resolve = system_resolve
    ) -> None:
        self.guard = guard
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.timeout_s = timeout_s
        self._resolver = GuardedResolver(guard, resolve)
        self._session: aiohttp.ClientSession | None = None
        # URL -> why the guard refuses it ("" when it does not): a URL's literal address
        # never changes; names are checked by the resolver at every connection.
        self._checked: dict[str, str] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=self._resolver, limit=0, ttl_dns_cache=10, enable_cleanup_closed=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                headers={"User-Agent": USER_AGENT},
                auto_decompress=False,
                trust_env=False,
            )
        return self._session

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> AttemptResult:
        refused = self._checked.get(url)
        if refused is None:
            try:
                self.guard.check_url(url)
                refused = ""
            except TargetRefused as exc:
                refused = f"address guard: {exc}"
            if len(self._checked) > 10_000:
                self._checked.clear()
            self._checked[url] = refused
        if refused:
            return AttemptResult(None, refused)
        try:
            async with self._client().post(
                url,
                data=body,
                headers={**headers, "Content-Type": "application/json"},
                allow_redirects=False,
            ) as answer:
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    await answer.content.read(MAX_ANSWER_BYTES)
                return AttemptResult(answer.status, None)
        except TimeoutError:
            return AttemptResult(None, f"timed out after {self.timeout_s:g}s")
        except aiohttp.ClientConnectorError as exc:
            return AttemptResult(None, f"cannot connect: {exc.os_error}")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return AttemptResult(None, f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
