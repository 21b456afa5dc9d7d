"""The events API on a real ``changes`` topic: list, filters, cursors, long poll, retention."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from events_api_harness import RunningApi, change_event, now_us, running_api

from changefeed.config import Settings
from changefeed.topics import ensure_topics

MINUTE_US = 60_000_000


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[RunningApi]:
    async with running_api(settings) as running:
        yield running


def event_ids(body: dict) -> list[str]:  # type: ignore[type-arg]
    return [e["event_id"] for e in body["events"]]


async def test_list_filter_and_page_across_partitions(api: RunningApi) -> None:
    t = now_us()
    changes = [
        change_event(i, subject_id=str(i % 7), created_us=t + i, user=f"u-{i % 2 + 1}")
        for i in range(40)
    ]
    changes += [change_event(100 + i, tenant="globex", subject_id=str(i)) for i in range(5)]
    positions = await api.publish(*changes)
    assert len({p for p, _ in positions}) == 2, "the subjects should land on both partitions"

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str] = {"limit": "7", **({"cursor": cursor} if cursor else {})}
        status, page = await api.get("/v1/events", **params)
        assert status == 200, page
        seen += event_ids(page)
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert sorted(seen) == sorted(f"ev-acme-{i}" for i in range(40))
    assert len(seen) == len(set(seen))

    _, mine = await api.get("/v1/events", "acme-u2", limit=1000)
    assert sorted(event_ids(mine)) == sorted(f"ev-acme-{i}" for i in range(40) if i % 2 == 1)
    _, typed = await api.get("/v1/events", subject_type="expense_report", subject_id="3")
    assert sorted(event_ids(typed)) == sorted(f"ev-acme-{i}" for i in range(40) if i % 7 == 3)


async def test_cursor_keeps_up_while_events_keep_arriving(api: RunningApi) -> None:
    delivered: list[str] = []
    status, first = await api.get("/v1/events", cursor="now")
    assert status == 200 and first["events"] == []
    cursor = first["next_cursor"]
    for batch in range(5):
        await api.publish(*[change_event(batch * 10 + i, subject_id=str(i)) for i in range(10)])
        _, page = await api.get("/v1/events", cursor=cursor, limit=6)
        delivered += event_ids(page)
        cursor = page["next_cursor"]
    while True:
        _, page = await api.get("/v1/events", cursor=cursor, limit=6)
        delivered += event_ids(page)
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert sorted(delivered) == sorted(f"ev-acme-{i}" for i in range(50))
    assert len(delivered) == len(set(delivered))


async def test_long_poll_wakes_up_when_an_event_is_committed(api: RunningApi) -> None:
    await api.publish(change_event(1))
    _, listing = await api.get("/v1/events")
    began = time.monotonic()
    poll = asyncio.create_task(
        api.get("/v1/events/poll", cursor=listing["next_cursor"], timeout="30")
    )
    await asyncio.sleep(0.3)  # let the poll reach its wait; it must not answer before the commit
    assert not poll.done()
    api.publisher.publish(change_event(2, subject_id="2"))
    status, body = await asyncio.wait_for(poll, 10)
    assert status == 200 and body["message"] == "new_change" and event_ids(body) == ["ev-acme-2"]
    assert time.monotonic() - began < 10
    status, again = await api.get("/v1/events/poll", cursor=body["next_cursor"], timeout="0.5")
    assert again["message"] == "reconnect" and again["events"] == []


async def test_fetch_by_id_request_and_subject(api: RunningApi) -> None:
    first = change_event(1, request_id="req-1", subject_id="s", current={"n": 1})
    second = change_event(2, request_id="req-1", subject_id="t", action="delete", sequence=0)
    await api.publish(first, second)
    status, event = await api.get(f"/v1/events/{first['change_id']}")
    assert status == 200 and event["event_id"] == "ev-acme-1"
    assert event["current_payload"] == {"n": 1}
    _, by_request = await api.get("/v1/requests/req-1/events")
    assert sorted(event_ids(by_request)) == ["ev-acme-1", "ev-acme-2"]
    _, subject = await api.get("/v1/subjects/expense_report/t")
    assert subject["deleted"] is True and subject["latest_change"]["event_id"] == "ev-acme-2"
    _, history = await api.get("/v1/subjects/expense_report/s/history")
    assert event_ids(history) == ["ev-acme-1"]


@pytest.fixture
def short_retention(settings: Settings) -> Settings:
    short = settings.with_(retention_ms=60_000)
    ensure_topics(short)
    return short


async def test_retention_gone_is_410(short_retention: Settings) -> None:
    async with running_api(short_retention) as api:
        old = now_us() - 2 * MINUTE_US
        await api.publish(*[change_event(i, created_us=old + i) for i in range(3)])
        await api.publish(change_event(9, subject_id="9"))
        _, page = await api.get("/v1/events", limit=1)
        assert page["has_more"]
        assert await api.api.indexer.purge_expired() == 3
        status, body = await api.get("/v1/events", cursor=page["next_cursor"])
        assert status == 410 and body["error"]["code"] == "gone"
        assert "retention" in body["error"]["message"]
        status, body = await api.get("/v1/events", start="2020-01-01T00:00:00Z")
        assert status == 410 and "keeps 1 minute" in body["error"]["message"]
        _, fresh = await api.get("/v1/events")
        assert event_ids(fresh) == ["ev-acme-9"]
