"""Request durations of the events API, by route template and status."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from changefeed.config import Settings
from events_api.http import build_events_app, mount
from events_api.runtime import EventsApi


async def test_durations_by_route_template_and_status(tmp_path: Path) -> None:
    api = EventsApi(Settings(data_dir=tmp_path))  # never started: no broker needed
    api.keys.loaded = True
    root = web.Application()
    mount(root, build_events_app(api.feed, api.keys, timing=api.metrics.middleware()))
    async with TestClient(TestServer(root)) as client:
        for path in ("/v1/events/abc", "/v1/events/def%2Fghi", "/v1/nowhere", "/v1/events"):
            await client.get(path)
        await client.get("/v1/events", headers={"X-Api-Key": "cf_not_a_key"})
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(api.registry).decode())
        for s in family.samples
    }
    name = "changefeed_events_api_request_duration_seconds_count"
    assert samples[(name, (("route", "/v1/events/{change_id}"), ("status", "401")))] == 2
    assert samples[(name, (("route", "/v1/events"), ("status", "401")))] == 2
    assert samples[(name, (("route", "unmatched"), ("status", "401")))] == 1  # keys first
    assert not any("abc" in str(labels) or "ghi" in str(labels) for _, labels in samples)
    assert samples[("changefeed_long_poll_waiters", ())] == 0
