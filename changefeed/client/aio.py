"""The asyncio client of the events API, on ``httpx.AsyncClient``.

The same methods, results, errors and retry rules as :class:`~changefeed.client.sync.Client`
(both go through :mod:`changefeed.client.protocol`), awaited; listings and the stream are
async iterators.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx

from changefeed.client import protocol
from changefeed.client.cursor_store import CursorStore
from changefeed.client.errors import Unavailable
from changefeed.client.models import ChangeEvent, Page, PollResult, SubjectState
from changefeed.client.protocol import StreamPosition, StreamState
from changefeed.client.retry import RETRYABLE_STATUSES, RetryPolicy, retry_after
from changefeed.client.sync import DEFAULT_POLL_TIMEOUT_S, DEFAULT_TIMEOUT_S, PAGE_LIMIT


class AsyncClient:
    """``async with AsyncClient(base_url, api_key) as client: ...``"""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout_s,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(
        self, url: str, params: dict[str, str] | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        last = ""
        for attempt in range(self.retry.attempts):
            wait_hint = None
            try:
                response = await self._http.get(
                    url, params=params, timeout=timeout_s or self.timeout_s
                )
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return protocol.json_body(response.content)
                if response.status_code not in RETRYABLE_STATUSES:
                    raise protocol.error_of(response.status_code, response.content)
                last = f"{response.status_code}: {response.text[:200]}"
                wait_hint = retry_after(response.headers.get("Retry-After"))
            if attempt + 1 < self.retry.attempts:
                await asyncio.sleep(self.retry.delay(attempt, wait_hint))
        raise Unavailable(
            f"the events API did not answer {url} after {self.retry.attempts} tries: {last}",
            self.retry.attempts,
        )

    async def page(
        self,
        *,
        cursor: str | None = None,
        limit: int = 100,
        order: str | None = None,
        **filters: Any,
    ) -> Page:
        params = protocol.query(
            filters if cursor is None else {}, cursor=cursor, limit=limit, order=order
        )
        return Page.from_json(await self._get("/v1/events", params))

    async def events(
        self, *, limit: int = PAGE_LIMIT, order: str | None = None, **filters: Any
    ) -> AsyncIterator[ChangeEvent]:
        page = await self.page(limit=limit, order=order, **filters)
        while True:
            for event in page.events:
                yield event
            if not page.has_more or page.next_cursor is None:
                return
            page = await self.page(cursor=page.next_cursor, limit=limit)

    async def poll(
        self, cursor: str, *, timeout_s: float = DEFAULT_POLL_TIMEOUT_S, limit: int = 100
    ) -> PollResult:
        params = protocol.query({}, cursor=cursor, timeout=f"{timeout_s:g}", limit=limit)
        body = await self._get("/v1/events/poll", params, timeout_s + self.timeout_s)
        return PollResult.from_json(body)

    async def stream(
        self,
        cursor: str | None = None,
        *,
        store: CursorStore | None = None,
        poll_timeout_s: float = DEFAULT_POLL_TIMEOUT_S,
        limit: int = 100,
    ) -> AsyncIterator[tuple[ChangeEvent, str]]:
        """See :meth:`changefeed.client.sync.Client.stream`; one difference: an async
        generator runs nothing before it is first iterated, so here ``"now"`` is the feed's
        tip when the first change is asked for. To follow from the moment of the call, pass
        ``cursor=await client.tip()``."""
        start = cursor or (store.load() if store is not None else None) or "now"
        state = StreamState(StreamPosition.decode(start))
        if state.cursor == "now":
            state.advance(StreamPosition(await self.tip()))
        while True:
            answer = await self.poll(state.cursor, timeout_s=poll_timeout_s, limit=limit)
            deliveries = state.accept(answer)
            if not deliveries and store is not None:
                store.save(state.position.encode())
            for change, after in deliveries:
                token = after.encode()
                yield change, token
                state.advance(after)
                if store is not None:
                    store.save(token)

    async def tip(self) -> str:
        """See :meth:`changefeed.client.sync.Client.tip`."""
        page = await self.page(cursor="now", limit=1)
        return page.next_cursor or "now"

    async def change(self, change_id: str) -> ChangeEvent:
        return ChangeEvent.from_json(await self._get(protocol.path("events", change_id)))

    async def request_changes(self, request_id: str) -> list[ChangeEvent]:
        body = await self._get(protocol.path("requests", request_id, "events"))
        return [ChangeEvent.from_json(e) for e in body.get("events", ())]

    async def subject(self, subject_type: str, subject_id: str) -> SubjectState:
        body = await self._get(protocol.path("subjects", subject_type, subject_id))
        return SubjectState.from_json(body)

    async def history(
        self, subject_type: str, subject_id: str, *, limit: int = PAGE_LIMIT
    ) -> AsyncIterator[ChangeEvent]:
        url = protocol.path("subjects", subject_type, subject_id, "history")
        after: int | None = None
        while True:
            body = await self._get(url, protocol.query({}, limit=limit, after_sequence=after))
            for event in body.get("events", ()):
                yield ChangeEvent.from_json(event)
            after = body.get("next_after_sequence")
            if not body.get("has_more") or after is None:
                return
