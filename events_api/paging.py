"""Cutting the feed into pages that resume exactly where the last one ended.

Guarantees (the OpenAPI descriptions repeat them for users):

* **No gap, no repeat.** Following ``next_cursor`` from any page delivers every event that
  matches the filter exactly once, including events indexed while the client was paging,
  in whatever order partitions happen to be indexed.
* **Order.** Within a page, events are in ``(created_at, partition, offset)`` order
  (ascending or descending). Across ascending pages, an event indexed late can carry an
  earlier ``created_at`` than events already delivered (seed 002: events follow completion
  time); it is delivered on the next page rather than lost.
* **Descending** pages read the feed as it stood at the first page, newest first; the
  listing ends (``next_cursor`` null) at the oldest retained event. New events are for
  ascending cursors and the long poll.

Why it holds: rows are ordered by ``(sort_us, id)`` and ``sort_us`` never decreases along a
partition (:mod:`events_api.index`), so the first N matching rows of the candidates
(rows beyond the cursor) are a prefix of each partition's candidates. After a full page
ending at row B, every row of partition ``p`` before the first row ordered after B was either
delivered or did not match, so the next position of ``p`` is that row's offset; after a
short page, it is the partition's indexed end. Both are read in the same snapshot as the
page, and rows indexed later get higher offsets, so they stay ahead of the cursor.
"""

from __future__ import annotations

from dataclasses import dataclass

from events_api.cursor import Cursor
from events_api.errors import Gone
from events_api.filters import FeedFilter, Order
from events_api.index import NO_LOWER, NO_UPPER, OFFSET_MASK, IndexReader, PartitionState
from events_api.scope import Scope

COUNT_CAP = 10_000
UNBOUNDED = OFFSET_MASK + 1


@dataclass(frozen=True)
class Page:
    """One page of events (their JSON bodies) and how to continue.

    ``page_cursor`` (ascending pages) asks for this same page again: the positions it was
    read from, bounded by each partition's indexed end at the time, so the same rows come
    back in the same order even after more was indexed. A consumer that handled part of a
    page resumes from it and skips what it handled, with nothing repeated or skipped.
    """

    bodies: list[str]
    next_cursor: Cursor | None
    has_more: bool
    remaining: int
    remaining_exact: bool
    page_cursor: Cursor | None = None


def tip(reader: IndexReader, order: Order, flt: FeedFilter) -> Cursor:
    """The cursor ``now``: ascending from the current end of every partition."""
    return Cursor(order, flt, {p: s.next_offset for p, s in reader.partitions().items()})


def read_page(
    reader: IndexReader,
    scope: Scope,
    flt: FeedFilter,
    order: Order,
    cursor: Cursor | None,
    limit: int,
    *,
    count: bool = True,
) -> Page:
    """The page after ``cursor`` (from the start of the selection when None)."""
    parts = reader.partitions()
    if order is Order.ASC:
        return _ascending(reader, scope, flt, parts, cursor, limit, count)
    return _descending(reader, scope, flt, parts, cursor, limit, count)


def _ascending(
    reader: IndexReader,
    scope: Scope,
    flt: FeedFilter,
    parts: dict[int, PartitionState],
    cursor: Cursor | None,
    limit: int,
    count: bool,
) -> Page:
    positions = dict(cursor.positions) if cursor is not None else {}
    bounded = cursor is not None and cursor.bounds is not None
    ranges: dict[int, tuple[int, int]] | None = None
    sort_from = NO_LOWER
    if cursor is not None:
        for partition, state in parts.items():
            position = positions.setdefault(partition, 0)
            if position < state.gone_below:
                raise Gone(
                    "this cursor points at events that are past the feed's retention and "
                    "have been purged; start again with start= or cursor=now"
                )
    # Where each partition's reading stops: its indexed end, or a page cursor's bound.
    ends = {
        p: (_bound(cursor, p) if bounded else s.next_offset)  # type: ignore[arg-type]
        for p, s in parts.items()
    }
    if bounded and any(parts[p].next_offset < end for p, end in ends.items()):
        # This worker's index has not yet read what the page was read from (the page came
        # from another worker): nothing yet, ask the same again.
        return Page([], cursor, True, 0, False, page_cursor=cursor)
    page_cursor = Cursor(Order.ASC, flt, dict(positions), dict(ends))
    if cursor is not None:
        ranges = {
            p: (pos, ends.get(p, pos) if bounded else UNBOUNDED) for p, pos in positions.items()
        }
        # Candidates of p have sort_us >= that of p's first row at the position.
        firsts = [reader.first_sort_from(p, pos) for p, pos in positions.items()]
        known = [s for s in firsts if s is not None]
        if not known:
            return _short_page([], flt, Order.ASC, ends, positions, page_cursor)
        sort_from = min(known)
    rows = reader.page(
        scope,
        flt,
        descending=False,
        ranges=ranges,
        sort_from=sort_from,
        sort_to=NO_UPPER,
        limit=limit + 1,
    )
    if len(rows) <= limit:
        bodies = [r.body for r in rows]
        return _short_page(bodies, flt, Order.ASC, ends, positions, page_cursor)
    rows = rows[:limit]
    last = rows[-1]
    following: dict[int, int] = {}
    for partition, end in ends.items():
        after = reader.first_offset_beyond(partition, last.sort_us, last.id, inclusive=False)
        nxt = end if after is None else min(after, end)
        following[partition] = max(positions.get(partition, 0), nxt)
    remaining, exact = _remaining(reader, scope, flt, following, last.sort_us, count)
    return Page(
        [r.body for r in rows],
        Cursor(Order.ASC, flt, following),
        True,
        remaining,
        exact,
        page_cursor,
    )


def _bound(cursor: Cursor, partition: int) -> int:
    bound = cursor.bound(partition)
    assert bound is not None
    return bound


def _short_page(
    bodies: list[str],
    flt: FeedFilter,
    order: Order,
    ends: dict[int, int],
    positions: dict[int, int],
    page_cursor: Cursor | None,
) -> Page:
    """The selection is exhausted: continue from each partition's indexed end (or bound)."""
    following = dict(positions)
    for partition, end in ends.items():
        following[partition] = max(following.get(partition, 0), end)
    return Page(bodies, Cursor(order, flt, following), False, 0, True, page_cursor)


def _remaining(
    reader: IndexReader,
    scope: Scope,
    flt: FeedFilter,
    positions: dict[int, int],
    sort_from: int,
    count: bool,
) -> tuple[int, bool]:
    if not count:
        return 0, False
    n = reader.count(
        scope,
        flt,
        ranges={p: (pos, UNBOUNDED) for p, pos in positions.items()},
        sort_from=sort_from,
        sort_to=NO_UPPER,
        cap=COUNT_CAP,
    )
    return n, n < COUNT_CAP


def _descending(
    reader: IndexReader,
    scope: Scope,
    flt: FeedFilter,
    parts: dict[int, PartitionState],
    cursor: Cursor | None,
    limit: int,
    count: bool,
) -> Page:
    if cursor is None:
        bounds = {p: s.next_offset for p, s in parts.items()}
    else:
        # A partition the cursor does not know appeared after it was issued: nothing there
        # belongs to the listing, which reads the feed as it stood at its first page.
        bounds = {p: cursor.positions.get(p, 0) for p in parts}
    lasts = [reader.last_sort_before(p, bound) for p, bound in bounds.items()]
    known = [s for s in lasts if s is not None]
    if not known:
        return Page([], None, False, 0, True)
    ranges = {p: (0, bound) for p, bound in bounds.items()}
    rows = reader.page(
        scope,
        flt,
        descending=True,
        ranges=ranges,
        sort_from=NO_LOWER,
        sort_to=max(known),
        limit=limit + 1,
    )
    if len(rows) <= limit:
        return Page([r.body for r in rows], None, False, 0, True)
    rows = rows[:limit]
    last = rows[-1]
    following = {}
    for partition, bound in bounds.items():
        at = reader.first_offset_beyond(partition, last.sort_us, last.id, inclusive=True)
        following[partition] = bound if at is None else min(bound, at)
    remaining, exact = (0, False)
    if count:
        remaining = reader.count(
            scope,
            flt,
            ranges={p: (0, b) for p, b in following.items()},
            sort_from=NO_LOWER,
            sort_to=last.sort_us,
            cap=COUNT_CAP,
        )
        exact = remaining < COUNT_CAP
    return Page([r.body for r in rows], Cursor(Order.DESC, flt, following), True, remaining, exact)
