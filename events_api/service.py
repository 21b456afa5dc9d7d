"""The events API's operations, independent of HTTP: each returns a JSON document.

:class:`FeedService` bounds every read by the caller's :class:`~events_api.scope.Scope`
(tenant, and user for user keys), runs index reads on a small pool of reader threads (the
event loop only waits), and writes event bodies into documents as the index stores them,
already rendered. Long polls wait on :class:`~events_api.signals.TenantSignals`: a
waiting client costs a coroutine, not a thread.

Retention: a first page whose ``start`` (or ``end``) lies before ``now - retention`` gets 410
Gone, with a minute of tolerance for clients computing "7 days ago" with a skewed clock; a
cursor whose positions were purged gets 410 from :mod:`events_api.paging`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from events_api.cursor import Cursor, CursorSigner
from events_api.errors import BadRequest, Forbidden, Gone, NotFound
from events_api.events import parse_json_text, rfc3339_micros
from events_api.filters import FeedFilter, ListParams, Order
from events_api.index import FeedIndex, IndexReader
from events_api.paging import Page, read_page, tip
from events_api.scope import Scope
from events_api.signals import TenantSignals
from events_api.subjects import SubjectStates, SubjectStateView, state_from_change
from schemas.action_contract import subject_key as contract_subject_key

T = TypeVar("T")
NOW = "now"
HORIZON_TOLERANCE_US = 60_000_000
MAX_REQUEST_EVENTS = 1000
READER_THREADS = 4


class FeedService:
    def __init__(
        self,
        *,
        index: FeedIndex,
        signals: TenantSignals,
        signer: CursorSigner,
        retention_ms: int,
        subjects: SubjectStates | None = None,
        clock: Callable[[], float] = time.time,
        reader_threads: int = READER_THREADS,
    ) -> None:
        self.index = index
        self.signals = signals
        self.signer = signer
        self.retention_ms = retention_ms
        self.subjects = subjects
        self.clock = clock
        self._readers = ThreadPoolExecutor(reader_threads, thread_name_prefix="feed-reader")

    def close(self) -> None:
        self._readers.shutdown(wait=False, cancel_futures=True)

    async def read(self, fn: Callable[[IndexReader], T]) -> T:
        """Run ``fn`` on a reader thread, over one consistent snapshot of the index."""

        def run() -> T:
            with self.index.reading() as reader:
                return fn(reader)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._readers, run)
        except Gone as exc:  # a purged cursor position: say where the feed now begins
            exc.details.setdefault("horizon", rfc3339_micros(self._horizon_us()))
            raise

    def _horizon_us(self) -> int:
        """Events created before this instant are past retention."""
        return int(self.clock() * 1_000_000) - self.retention_ms * 1000

    # -- the feed --------------------------------------------------------------------------

    async def list_events(self, scope: Scope, params: ListParams) -> str:
        cursor, flt, order = self._resolve(scope, params)
        limit = params.limit

        def page_of(reader: IndexReader) -> Page:
            start = tip(reader, order, flt) if cursor is NOW else cursor
            assert start is None or isinstance(start, Cursor)
            return read_page(reader, scope, flt, order, start, limit)

        page = await self.read(page_of)
        meta = {
            "count": len(page.bodies),
            "has_more": page.has_more,
            "remaining": page.remaining,
            "remaining_exact": page.remaining_exact,
            "order": order.value,
            "next_cursor": self._token(page.next_cursor, scope),
        }
        return _document(meta, "events", page.bodies)

    async def poll(self, scope: Scope, params: ListParams) -> str:
        """Seed 004's long poll: as soon as events follow the cursor, ``new_change`` with
        them; ``reconnect`` when ``timeout`` passes without any."""
        resolved, flt, order = self._resolve(scope, params)
        if order is not Order.ASC:
            raise BadRequest(
                "long polling follows ascending cursors; this one is descending",
                parameter="cursor",
            )
        cursor: Cursor | None = None if resolved is NOW else resolved  # type: ignore[assignment]
        limit = params.limit
        loop = asyncio.get_running_loop()
        deadline = loop.time() + params.timeout_s

        def page_after(reader: IndexReader) -> Page:
            start = cursor if cursor is not None else tip(reader, Order.ASC, flt)
            return read_page(reader, scope, flt, Order.ASC, start, limit, count=False)

        while True:
            woken = self.signals.watch(scope.tenant_id)
            page = await self.read(page_after)
            cursor = page.next_cursor
            if page.bodies:
                meta = {
                    "message": "new_change",
                    "count": len(page.bodies),
                    "retry_timeout": params.timeout_s,
                    "next_cursor": self._token(cursor, scope),
                    "page_cursor": self._token(page.page_cursor, scope),
                }
                return _document(meta, "events", page.bodies)
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self.signals.wait(woken, remaining):
                meta = {
                    "message": "reconnect",
                    "count": 0,
                    "retry_timeout": params.timeout_s,
                    "next_cursor": self._token(cursor, scope),
                }
                return _document(meta, "events", [])

    def _resolve(
        self, scope: Scope, params: ListParams
    ) -> tuple[Cursor | str | None, FeedFilter, Order]:
        """The cursor (or ``now``, or None for the first page), filter and order to use."""
        _check_user_filter(scope, params.filter)
        if params.cursor is None:
            self._check_horizon(params.filter)
            return None, params.filter, params.order
        if params.cursor == NOW:
            if params.order is Order.DESC:
                raise BadRequest(
                    "cursor=now reads forward from the tip; it takes order=asc", parameter="order"
                )
            return NOW, params.filter, Order.ASC
        cursor = self.signer.decode(params.cursor, scope)
        if params.filter_given and params.filter != cursor.filter:
            raise BadRequest(
                f"this cursor continues the filters {cursor.filter.describe()}; send the same "
                "filters, or none, with it",
                parameter="cursor",
            )
        if params.order_given and params.order is not cursor.order:
            raise BadRequest(f"this cursor pages in {cursor.order.value} order", parameter="order")
        return cursor, cursor.filter, cursor.order

    def _check_horizon(self, flt: FeedFilter) -> None:
        horizon_us = self._horizon_us()
        for name, value in (("start", flt.start_us), ("end", flt.end_us)):
            if value is not None and value < horizon_us - HORIZON_TOLERANCE_US:
                raise Gone(
                    f"{name} is before {rfc3339_micros(horizon_us)}: events before then are "
                    f"gone; the feed keeps {describe_duration(self.retention_ms)}",
                    horizon=rfc3339_micros(horizon_us),
                )

    def _token(self, cursor: Cursor | None, scope: Scope) -> str | None:
        return None if cursor is None else self.signer.encode(cursor, scope)

    # -- single events and groups ---------------------------------------------------------

    def read_inline(self, fn: Callable[[IndexReader], T]) -> T:
        """Run ``fn`` on the calling (event loop) thread: for point lookups by a unique
        index, which take microseconds, a hop to a reader thread costs more than the query
        and, under the interpreter lock's switch interval, adds milliseconds to the tail."""
        with self.index.reading() as reader:
            return fn(reader)

    async def get_event(self, scope: Scope, change_id: str) -> str:
        body = self.read_inline(lambda r: r.by_change_id(scope, change_id))
        if body is None:
            raise NotFound(
                f"no change event {change_id} for this key within the feed's "
                f"{describe_duration(self.retention_ms)} of retention"
            )
        return body

    async def request_events(self, scope: Scope, request_id: str) -> str:
        bodies = await self.read(lambda r: r.by_request(scope, request_id, MAX_REQUEST_EVENTS))
        if not bodies:
            raise NotFound(f"no change events of request {request_id} for this key")
        return _document({"request_id": request_id, "count": len(bodies)}, "events", bodies)

    async def subject_history(
        self, scope: Scope, subject_type: str, subject_id: str, after: int, limit: int
    ) -> str:
        bodies = await self.read(
            lambda r: r.subject_history(scope, subject_type, subject_id, after, limit + 1)
        )
        if not bodies and after < 0:
            raise NotFound(
                f"no changes of {subject_type} {subject_id} for this key within retention"
            )
        has_more = len(bodies) > limit
        bodies = bodies[:limit]
        next_after = json.loads(bodies[-1])["subject_sequence"] if has_more else None
        meta = {
            "subject_type": subject_type,
            "subject_id": subject_id,
            "count": len(bodies),
            "has_more": has_more,
            "next_after_sequence": next_after,
        }
        return _document(meta, "events", bodies)

    async def latest_per_subject(
        self, scope: Scope, subject_type: str | None, page: int, limit: int
    ) -> str:
        skip = (page - 1) * limit
        bodies, total = await self.read(
            lambda r: r.latest_per_subject(scope, subject_type, limit, skip)
        )
        meta = {
            "count": len(bodies),
            "meta": {
                "count": total,
                "page_count": -(-total // limit),
                "page_number": page,
                "page_size": limit,
            },
        }
        return _document(meta, "events", bodies)

    async def subject(self, scope: Scope, subject_type: str, subject_id: str) -> str:
        """Current state (admin keys only) and the latest change of one subject."""
        if not scope.is_admin:
            raise Forbidden(
                "a subject's current state is for admin keys; user keys read their own "
                "events, e.g. /v1/subjects/{type}/{id}/history"
            )
        latest = await self.read(lambda r: r.latest_of_subject(scope, subject_type, subject_id))
        view: SubjectStateView | None
        if self.subjects is not None:
            view = await self.subjects.state(subject_key(scope, subject_type, subject_id))
        else:
            setter = await self.read(
                lambda r: r.latest_of_subject(scope, subject_type, subject_id, state_only=True)
            )
            view = None if setter is None else state_from_change(json.loads(setter))
        if view is None and latest is None:
            raise NotFound(f"no subject {subject_type} {subject_id} in this tenant")
        meta: dict[str, Any] = {"subject_type": subject_type, "subject_id": subject_id}
        if view is not None:
            meta.update(
                deleted=view.deleted,
                state=parse_json_text(view.payload),
                version=view.version,
                changed_at=view.changed_at,
                sequence=view.sequence,
            )
        else:  # only custom events so far: no state
            meta.update(deleted=False, state=None, version=None, changed_at=None, sequence=None)
        head = json.dumps(meta, separators=(",", ":"), ensure_ascii=False)
        return f'{head[:-1]},"latest_change":{latest or "null"}}}'


def subject_key(scope: Scope, subject_type: str, subject_id: str) -> str:
    """The subject's key in the processors' tables and on Kafka: ``tenant/type/id``, each
    part escaped (:func:`schemas.action_contract.subject_key`)."""
    return contract_subject_key(scope.tenant_id, subject_type, subject_id)


def _check_user_filter(scope: Scope, flt: FeedFilter) -> None:
    if scope.user_id is not None and flt.user_id not in (None, scope.user_id):
        raise Forbidden("a user key reads its own user's events only; drop the user filter")


def _document(meta: dict[str, Any], name: str, bodies: list[str]) -> str:
    """``meta`` as a JSON object with the pre-rendered ``bodies`` as array ``name``."""
    head = json.dumps(meta, separators=(",", ":"), ensure_ascii=False)
    joint = "," if meta else ""
    return f'{head[:-1]}{joint}"{name}":[{",".join(bodies)}]}}'


def describe_duration(ms: int) -> str:
    for unit, size in (("day", 86_400_000), ("hour", 3_600_000), ("minute", 60_000)):
        if ms % size == 0:
            n = ms // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{ms / 1000:g} seconds"
