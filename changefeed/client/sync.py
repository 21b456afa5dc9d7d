"""The blocking client of the events API, on ``httpx.Client``.

Every method sends one request (or a series of pages), retrying per
:class:`~changefeed.client.retry.RetryPolicy` when the API answers 502/503/504 or does not
answer; any other error answer raises its typed error at once (see
:mod:`changefeed.client.errors`). :meth:`Client.stream` never ends on its own: it long-polls,
resumes after ``reconnect``, and retries through restarts of the worker; see
:mod:`changefeed.client.protocol` for why its positions never skip nor repeat an event.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx

from changefeed.client import protocol
from changefeed.client.cursor_store import CursorStore
from changefeed.client.errors import Unavailable
from changefeed.client.models import ChangeEvent, Page, PollResult, SubjectState
from changefeed.client.protocol import StreamPosition, StreamState
from changefeed.client.retry import RETRYABLE_STATUSES, RetryPolicy, retry_after

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_POLL_TIMEOUT_S = 30.0
PAGE_LIMIT = 1000
_TRANSIENT = (httpx.TransportError,)


class Client:
    """``Client(base_url, api_key)``; use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout_s,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- requests ------------------------------------------------------------------------

    def _get(
        self, url: str, params: dict[str, str] | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        last = ""
        for attempt in range(self.retry.attempts):
            wait_hint = None
            try:
                response = self._http.get(url, params=params, timeout=timeout_s or self.timeout_s)
            except _TRANSIENT as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return protocol.json_body(response.content)
                if response.status_code not in RETRYABLE_STATUSES:
                    raise protocol.error_of(response.status_code, response.content)
                last = f"{response.status_code}: {response.text[:200]}"
                wait_hint = retry_after(response.headers.get("Retry-After"))
            if attempt + 1 < self.retry.attempts:
                time.sleep(self.retry.delay(attempt, wait_hint))
        raise Unavailable(
            f"the events API did not answer {url} after {self.retry.attempts} tries: {last}",
            self.retry.attempts,
        )

    # -- the feed ------------------------------------------------------------------------

    def page(
        self,
        *,
        cursor: str | None = None,
        limit: int = 100,
        order: str | None = None,
        **filters: Any,
    ) -> Page:
        """One page of the listing; pass its ``next_cursor`` back as ``cursor``."""
        params = protocol.query(
            filters if cursor is None else {}, cursor=cursor, limit=limit, order=order
        )
        return Page.from_json(self._get("/v1/events", params))

    def events(
        self, *, limit: int = PAGE_LIMIT, order: str | None = None, **filters: Any
    ) -> Iterator[ChangeEvent]:
        """Every event matching ``filters`` (``start``, ``end``, ``event_type``...), paged."""
        page = self.page(limit=limit, order=order, **filters)
        while True:
            yield from page.events
            if not page.has_more or page.next_cursor is None:
                return
            page = self.page(cursor=page.next_cursor, limit=limit)

    def poll(
        self, cursor: str, *, timeout_s: float = DEFAULT_POLL_TIMEOUT_S, limit: int = 100
    ) -> PollResult:
        """One long poll: ``new_change`` with events after ``cursor``, or ``reconnect``."""
        params = protocol.query({}, cursor=cursor, timeout=f"{timeout_s:g}", limit=limit)
        return PollResult.from_json(
            self._get("/v1/events/poll", params, timeout_s + self.timeout_s)
        )

    def stream(
        self,
        cursor: str | None = None,
        *,
        store: CursorStore | None = None,
        poll_timeout_s: float = DEFAULT_POLL_TIMEOUT_S,
        limit: int = 100,
    ) -> Iterator[tuple[ChangeEvent, str]]:
        """Changes forever, each with the position to resume after it.

        ``cursor``: ``"now"`` (what happens from this call on: the feed's tip is read here,
        before the first change is asked for), a ``next_cursor``, or a position this stream
        handed out; default: what ``store`` holds, else ``"now"``. With ``store``, the
        position after a change is saved once the caller's loop body for that change has
        finished (when the next change is asked for): a change whose handling raised is
        delivered again on resume (at least once). A loop left with ``break`` saves nothing
        for its last change: save the position it was handed.
        """
        start = cursor or (store.load() if store is not None else None) or "now"
        state = StreamState(StreamPosition.decode(start))
        if state.cursor == "now":
            state.advance(StreamPosition(self.tip()))
        return self._follow(state, store, poll_timeout_s, limit)

    def _follow(
        self,
        state: StreamState,
        store: CursorStore | None,
        poll_timeout_s: float,
        limit: int,
    ) -> Iterator[tuple[ChangeEvent, str]]:
        while True:
            answer = self.poll(state.cursor, timeout_s=poll_timeout_s, limit=limit)
            deliveries = state.accept(answer)
            if not deliveries and store is not None:
                store.save(state.position.encode())
            for change, after in deliveries:
                token = after.encode()
                yield change, token
                state.advance(after)
                if store is not None:
                    store.save(token)

    def tip(self) -> str:
        """A concrete cursor at the feed's tip: what follows it is what happens from now on.
        Unlike ``"now"``, it keeps meaning this instant when it is used later."""
        page = self.page(cursor="now", limit=1)
        return page.next_cursor or "now"

    # -- single events and subjects ------------------------------------------------------

    def change(self, change_id: str) -> ChangeEvent:
        return ChangeEvent.from_json(self._get(protocol.path("events", change_id)))

    def request_changes(self, request_id: str) -> list[ChangeEvent]:
        body = self._get(protocol.path("requests", request_id, "events"))
        return [ChangeEvent.from_json(e) for e in body.get("events", ())]

    def subject(self, subject_type: str, subject_id: str) -> SubjectState:
        return SubjectState.from_json(
            self._get(protocol.path("subjects", subject_type, subject_id))
        )

    def history(
        self, subject_type: str, subject_id: str, *, limit: int = PAGE_LIMIT
    ) -> Iterator[ChangeEvent]:
        """The subject's changes within retention, oldest first, page by page."""
        url = protocol.path("subjects", subject_type, subject_id, "history")
        after: int | None = None
        while True:
            params = protocol.query({}, limit=limit, after_sequence=after)
            body = self._get(url, params)
            for event in body.get("events", ()):
                yield ChangeEvent.from_json(event)
            after = body.get("next_after_sequence")
            if not body.get("has_more") or after is None:
                return
