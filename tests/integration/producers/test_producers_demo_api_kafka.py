"""The demo API and the load generator with the real publisher, on the real broker."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from producers_read_back import read_actions

from changefeed.config import Settings
from producers.demo_api.server import create_demo_app
from producers.loadgen import LoadProfile, LoadTally, generate_actions, publish_direct
from producers.loadgen_http import drive_demo_api_async
from producers.publisher import Publisher

HEADERS = {"X-Tenant-Id": "acme", "X-Api-Key": "sk_test_123", "X-User-Id": "u-1"}


@pytest.fixture
def publisher(settings: Settings, tmp_path: Path) -> Iterator[Publisher]:
    with Publisher(settings, spool_dir=tmp_path / "spool") as real:
        yield real


@pytest.fixture
async def client(settings: Settings, publisher: Publisher) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_demo_app(settings, publisher))) as test_client:
        yield test_client


async def test_an_approval_puts_one_event_per_object_under_one_request_id_on_actions(
    client: TestClient, settings: Settings
) -> None:
    project = await (await client.post("/v1/projects", json={"name": "P"}, headers=HEADERS)).json()
    report = await (
        await client.post(
            "/v1/expense_reports", json={"project_id": project["id"], "title": "T"}, headers=HEADERS
        )
    ).json()
    for amount in (12.5, 40.0, 7.25):
        created = await client.post(
            "/v1/expenses",
            json={"expense_report_id": report["id"], "amount": amount},
            headers=HEADERS,
        )
        assert created.status == 201
    response = await client.post(
        f"/v1/expense_reports/{report['id']}/approve",
        headers={**HEADERS, "X-Request-Id": "approve-42"},
    )
    assert response.status == 200
    event_ids = response.headers["X-Event-Ids"].split(",")
    assert len(event_ids) == 4

    records = await asyncio.to_thread(
        read_actions,
        settings.bootstrap,
        settings.topic("actions"),
        until=lambda got: {r.action["event_id"] for r in got} >= set(event_ids),
    )
    approval = [r for r in records if r.action["request_id"] == "approve-42"]
    assert sorted(r.action["event_id"] for r in approval) == sorted(event_ids)
    assert Counter(r.action["event_type"] for r in approval) == {
        "expense_report:updated": 1,
        "expense:updated": 3,
    }
    for record in approval:
        action = record.action
        assert json.loads(action["payload"])["status"] == "approved"
        assert action["actor"]["user_id"] == "u-1"
        assert action["actor"]["api_key_fingerprint"].startswith("hmac-sha256:")
        assert record.key == f"acme/{action['subject_type']}/{action['subject_id']}".encode()
        assert record.headers["ce_id"].decode() == action["event_id"]
        assert record.headers["ce_type"].decode() == action["event_type"]
    assert len(records) == 9  # project, report, 3 expenses, then the 4 of the approval


async def test_loadgen_over_http_drives_the_demo_api_into_kafka(
    client: TestClient, settings: Settings
) -> None:
    profile = LoadProfile(
        rate=400, duration_s=0.5, tenants=2, duplicate_rate=0.1, out_of_order_rate=0.1, seed=7
    )
    summary = await drive_demo_api_async(str(client.make_url("/")), profile)
    assert summary.errors == 0, summary.error_samples
    assert summary.requests >= profile.total
    assert summary.sent >= summary.requests
    records = await asyncio.to_thread(  # off the loop: deferred events publish meanwhile
        read_actions,
        settings.bootstrap,
        settings.topic("actions"),
        until=lambda got: len(got) >= summary.sent,
    )
    assert len(records) == summary.sent
    distinct = {r.action["event_id"] for r in records}
    assert len(distinct) == summary.sent - summary.duplicates


def test_loadgen_publishing_directly_delivers_the_generated_actions(
    settings: Settings, publisher: Publisher
) -> None:
    profile = LoadProfile(rate=2000, duration_s=1, tenants=3, seed=11)
    summary = publish_direct(profile, publisher, source=settings.source)
    assert (summary.errors, summary.spooled) == (0, 0)
    tally = LoadTally()
    start = datetime(2024, 1, 1, tzinfo=UTC)
    expected = list(generate_actions(profile, tally=tally, start_at=start))
    records = read_actions(
        settings.bootstrap, settings.topic("actions"), until=lambda got: len(got) >= len(expected)
    )
    assert len(records) == summary.sent == len(expected)
    assert {r.action["event_id"] for r in records} == tally.event_ids  # same seed, same ids
    assert summary.duplicates == tally.duplicates > 0
