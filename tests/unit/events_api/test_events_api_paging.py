"""Paging over the feed index: no gap, no repeat, whatever arrives between pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from events_api_rows import T0, indexed, position
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events_api.cursor import Cursor
from events_api.errors import Gone
from events_api.filters import FeedFilter, Order
from events_api.index import FeedIndex
from events_api.paging import read_page, tip
from events_api.scope import Scope

ACME = Scope("acme")


@pytest.fixture
def index(tmp_path: Path) -> Iterator[FeedIndex]:
    idx = FeedIndex(tmp_path / "feed.sqlite3", "changes")
    idx.open()
    yield idx
    idx.close()


def page(
    index: FeedIndex,
    cursor: Cursor | None,
    limit: int,
    *,
    scope: Scope = ACME,
    flt: FeedFilter | None = None,
    order: Order = Order.ASC,
):  # type: ignore[no-untyped-def]
    with index.reading() as reader:
        return read_page(reader, scope, flt or FeedFilter(), order, cursor, limit)


def drain(index: FeedIndex, cursor: Cursor | None, limit: int, **kw) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    seen: list[tuple[int, int]] = []
    while True:
        result = page(index, cursor, limit, **kw)
        seen += [position(b) for b in result.bodies]
        cursor = result.next_cursor
        if not result.has_more:
            return seen


def test_pages_are_ordered_by_time_then_position(index: FeedIndex) -> None:
    index.add(
        [
            indexed(0, 0, created_us=T0 + 30),
            indexed(1, 0, created_us=T0 + 10),
            indexed(1, 1, created_us=T0 + 30),
            indexed(0, 1, created_us=T0 + 40),
        ],
        {0: 2, 1: 2},
    )
    first = page(index, None, 3)
    assert [position(b) for b in first.bodies] == [(1, 0), (0, 0), (1, 1)]
    assert first.has_more and first.remaining == 1 and first.remaining_exact
    second = page(index, first.next_cursor, 3)
    assert [position(b) for b in second.bodies] == [(0, 1)]
    assert not second.has_more


def test_a_clock_stepping_back_does_not_open_a_gap(index: FeedIndex) -> None:
    # Offsets 0 and 1 of partition 0 carry decreasing created_at: paging still follows offsets.
    index.add([indexed(0, 0, created_us=T0 + 50), indexed(0, 1, created_us=T0 + 5)], {0: 2})
    index.add([indexed(1, 0, created_us=T0 + 20)], {1: 1})
    # (0, 1) sorts at 50, with its predecessor, but keeps its own created_at for filters.
    assert drain(index, None, 1) == [(1, 0), (0, 0), (0, 1)]
    assert index.max_regression_us == 45
    assert drain(index, None, 1, flt=FeedFilter(end_us=T0 + 10)) == [(0, 1)]
    assert drain(index, None, 1, flt=FeedFilter(start_us=T0 + 10)) == [(1, 0), (0, 0)]


def test_a_late_partition_is_delivered_after_not_lost(index: FeedIndex) -> None:
    index.add([indexed(0, 0, created_us=T0 + 100)], {0: 1})
    first = page(index, None, 10)
    assert [position(b) for b in first.bodies] == [(0, 0)]
    # Partition 1 is indexed later, with earlier timestamps.
    index.add([indexed(1, 0, created_us=T0 + 1), indexed(1, 1, created_us=T0 + 2)], {1: 2})
    second = page(index, first.next_cursor, 10)
    assert [position(b) for b in second.bodies] == [(1, 0), (1, 1)]


def test_a_page_cursor_gives_the_same_page_after_a_late_partition_is_indexed(
    index: FeedIndex,
) -> None:
    """The page read before partition 1 caught up comes back unchanged from its page cursor,
    while the plain cursor it was read from now answers something else."""
    index.add([indexed(0, n, created_us=T0 + 100 + n) for n in range(3)], {0: 3})
    index.add([indexed(1, 0, created_us=T0 + 1)], {1: 1})
    start = page(index, None, 1).next_cursor  # after (1, 0)
    first = page(index, start, 2)
    assert [position(b) for b in first.bodies] == [(0, 0), (0, 1)]
    index.add([indexed(1, n, created_us=T0 + 2 + n) for n in range(1, 4)], {1: 4})
    assert [position(b) for b in page(index, start, 2).bodies] == [(1, 1), (1, 2)]
    again = page(index, first.page_cursor, 2)
    assert [position(b) for b in again.bodies] == [(0, 0), (0, 1)]
    assert again.next_cursor == first.next_cursor
    # Continuing from there delivers the rest once: what followed, and what was late.
    rest = drain(index, again.next_cursor, 2)
    assert sorted(rest) == [(0, 2), (1, 1), (1, 2), (1, 3)]


def test_a_page_cursor_from_an_index_that_is_ahead_waits_here(index: FeedIndex) -> None:
    """A page cursor read on a worker whose index is further on answers nothing here (ask
    again) rather than part of that page."""
    index.add([indexed(0, 0, created_us=T0 + 1)], {0: 1})
    ahead = Cursor(Order.ASC, FeedFilter(), {0: 0}, {0: 2})
    waiting = page(index, ahead, 10)
    assert waiting.bodies == [] and waiting.has_more and waiting.next_cursor == ahead
    index.add([indexed(0, 1, created_us=T0 + 2), indexed(0, 2, created_us=T0 + 3)], {0: 3})
    caught_up = page(index, ahead, 10)
    assert [position(b) for b in caught_up.bodies] == [(0, 0), (0, 1)]
    assert caught_up.next_cursor is not None and caught_up.next_cursor.positions == {0: 2}


def test_other_tenants_and_users_are_invisible(index: FeedIndex) -> None:
    index.add(
        [
            indexed(0, 0, tenant="acme", user="u-1"),
            indexed(0, 1, tenant="globex", user="u-1"),
            indexed(0, 2, tenant="acme", user="u-2"),
        ],
        {0: 3},
    )
    assert drain(index, None, 10) == [(0, 0), (0, 2)]
    assert drain(index, None, 10, scope=Scope("acme", "u-2")) == [(0, 2)]
    assert drain(index, None, 10, scope=Scope("initech")) == []


def test_filters_select_in_sql(index: FeedIndex) -> None:
    index.add(
        [
            indexed(0, 0, event_type="expense_report:updated", criticality=1, code=10),
            indexed(0, 1, event_type="expense:updated", criticality=2, code=10_001),
            indexed(0, 2, event_type="expense_report:deleted", criticality=3, code=10),
            indexed(0, 3, event_type="expense_report[x]:created", criticality=3, code=10),
        ],
        {0: 4},
    )
    by = lambda **kw: drain(index, None, 10, flt=FeedFilter(**kw))  # noqa: E731
    assert by(event_type="expense_report:*") == [(0, 0), (0, 2)]
    assert by(event_type="*:updated") == [(0, 0), (0, 1)]
    assert by(event_type="expense_report[x]:*") == [(0, 3)]
    assert by(event_type="expense:updated") == [(0, 1)]
    assert by(criticality=(2, 3)) == [(0, 1), (0, 2), (0, 3)]
    assert by(code=(10_001,)) == [(0, 1)]


def test_time_range_is_on_created_at(index: FeedIndex) -> None:
    index.add([indexed(0, i, created_us=T0 + i * 10) for i in range(5)], {0: 5})
    assert drain(index, None, 2, flt=FeedFilter(start_us=T0 + 10, end_us=T0 + 40)) == [
        (0, 1),
        (0, 2),
        (0, 3),
    ]
    assert drain(index, None, 2, flt=FeedFilter(start_us=T0 + 35)) == [(0, 4)]


def test_now_starts_at_the_tip(index: FeedIndex) -> None:
    index.add([indexed(0, 0), indexed(1, 0)], {0: 1, 1: 1})
    with index.reading() as reader:
        now = tip(reader, Order.ASC, FeedFilter())
    assert page(index, now, 10).bodies == []
    index.add([indexed(1, 1, created_us=T0 + 1)], {1: 2})
    assert [position(b) for b in page(index, now, 10).bodies] == [(1, 1)]


def test_descending_reads_the_feed_as_of_the_first_page(index: FeedIndex) -> None:
    index.add([indexed(i % 2, i // 2, created_us=T0 + i) for i in range(7)], {0: 4, 1: 3})
    first = page(index, None, 3, order=Order.DESC)
    assert [position(b) for b in first.bodies] == [(0, 3), (1, 2), (0, 2)]
    index.add([indexed(0, 4, created_us=T0 + 100)], {0: 5})
    rest = drain(index, first.next_cursor, 3, order=Order.DESC)
    assert rest == [(1, 1), (0, 1), (1, 0), (0, 0)]
    last = page(index, first.next_cursor, 10, order=Order.DESC)
    assert last.next_cursor is None and not last.has_more


def test_a_cursor_behind_the_purge_is_gone(index: FeedIndex) -> None:
    index.add([indexed(0, i, created_us=T0 + i) for i in range(4)], {0: 4})
    first = page(index, None, 1)
    assert index.purge(cutoff_us=T0 + 2) == 2
    with pytest.raises(Gone, match="retention"):
        page(index, first.next_cursor, 1)
    assert drain(index, None, 10) == [(0, 2), (0, 3)]


def test_offsets_never_read_count_as_gone(index: FeedIndex) -> None:
    index.begin_partitions({0: 100})
    index.add([indexed(0, 100)], {0: 101})
    with pytest.raises(Gone):
        page(index, Cursor(Order.ASC, FeedFilter(), {0: 50}), 10)
    assert drain(index, Cursor(Order.ASC, FeedFilter(), {0: 100}), 10) == [(0, 100)]


# -- property: random interleavings of inserts and page reads ----------------------------

PARTITIONS = 3
step = st.one_of(
    st.tuples(
        st.just("insert"),
        st.integers(0, PARTITIONS - 1),
        st.lists(
            st.tuples(
                st.integers(0, 40),  # created_at delta: not monotonic on purpose
                st.sampled_from(["acme", "globex"]),
                st.sampled_from(["a:x", "b:y"]),
            ),
            min_size=1,
            max_size=4,
        ),
    ),
    st.tuples(st.just("read"), st.integers(1, 4), st.just(None)),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(step, max_size=30),
    event_type=st.sampled_from([None, "a:x", "*:y"]),
)
def test_union_of_pages_is_every_row_once(
    tmp_path_factory: pytest.TempPathFactory, steps: list, event_type: str | None
) -> None:
    index = FeedIndex(tmp_path_factory.mktemp("feed") / "feed.sqlite3", "changes")
    index.open()
    try:
        flt = FeedFilter(event_type=event_type)
        offsets = [0] * PARTITIONS
        inserted: list[tuple[int, int]] = []
        delivered: list[tuple[int, int]] = []
        cursor: Cursor | None = None
        for kind, arg, rows in steps:
            if kind == "insert":
                batch = []
                for delta, tenant, etype in rows:
                    off = offsets[arg]
                    offsets[arg] += 1 + (delta % 3 == 0)  # gaps, as control records leave
                    batch.append(
                        indexed(arg, off, created_us=T0 + delta, tenant=tenant, event_type=etype)
                    )
                    if tenant == "acme" and (
                        event_type in (None, etype)
                        or (event_type == "*:y" and etype.endswith(":y"))
                    ):
                        inserted.append((arg, off))
                index.add(batch, {arg: offsets[arg]})
            else:
                result = page(index, cursor, arg, flt=flt)
                delivered += [position(b) for b in result.bodies]
                cursor = result.next_cursor
        delivered += drain(index, cursor, 5, flt=flt)
        assert len(delivered) == len(set(delivered)), "an event was delivered twice"
        assert sorted(delivered) == sorted(inserted), "an event was never delivered"
        for partition in range(PARTITIONS):
            mine = [off for p, off in delivered if p == partition]
            assert mine == sorted(mine), "a partition was delivered out of offset order"
    finally:
        index.close()


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.lists(st.tuples(st.integers(0, PARTITIONS - 1), st.integers(0, 40)), max_size=25),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("insert"), st.integers(0, PARTITIONS - 1), st.integers(0, 40)),
            st.tuples(st.just("read"), st.integers(1, 4), st.just(0)),
        ),
        max_size=25,
    ),
    first_limit=st.integers(1, 4),
)
def test_descending_pages_cover_the_feed_as_of_the_first_page_once(
    tmp_path_factory: pytest.TempPathFactory,
    before: list[tuple[int, int]],
    steps: list[tuple[str, int, int]],
    first_limit: int,
) -> None:
    index = FeedIndex(tmp_path_factory.mktemp("feed") / "feed.sqlite3", "changes")
    index.open()
    try:
        offsets = [0] * PARTITIONS

        def insert(partition: int, delta: int) -> tuple[int, int]:
            off = offsets[partition]
            offsets[partition] += 1
            index.add([indexed(partition, off, created_us=T0 + delta)], {partition: off + 1})
            return partition, off

        existing = [insert(p, d) for p, d in before]
        first = page(index, None, first_limit, order=Order.DESC)
        delivered = [position(b) for b in first.bodies]
        cursor = first.next_cursor
        for kind, arg, delta in steps:
            if kind == "insert":
                insert(arg, delta)
            elif cursor is not None:
                result = page(index, cursor, arg, order=Order.DESC)
                delivered += [position(b) for b in result.bodies]
                cursor = result.next_cursor
        if cursor is not None:
            delivered += drain(index, cursor, 3, order=Order.DESC)
        assert len(delivered) == len(set(delivered))
        assert sorted(delivered) == sorted(existing)
    finally:
        index.close()


def test_paging_while_another_thread_indexes(index: FeedIndex) -> None:
    import random
    import threading

    total = 3000
    rng = random.Random(7)
    done = threading.Event()

    def write() -> None:
        offsets = [0, 0, 0]
        for _ in range(0, total, 50):
            partition = rng.randrange(3)
            batch = []
            for _ in range(50):
                batch.append(
                    indexed(partition, offsets[partition], created_us=T0 + rng.randrange(1000))
                )
                offsets[partition] += 1
            index.add(batch, {partition: offsets[partition]})
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    delivered: list[tuple[int, int]] = []
    cursor: Cursor | None = None
    while True:
        finished = done.is_set()
        result = page(index, cursor, 37)
        delivered += [position(b) for b in result.bodies]
        cursor = result.next_cursor
        if finished and not result.has_more:
            break
    writer.join()
    assert len(delivered) == total == len(set(delivered))
