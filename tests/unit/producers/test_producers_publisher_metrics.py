"""The demo API's ``/metrics``: the publisher's spool depth and results, for Prometheus."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from changefeed.config import Settings
from producers.demo_api.server import create_demo_app
from producers.publisher import PublisherStats
from producers.publisher_metrics import PublisherCollector


class Sink:
    def publish_async(self, action: object, on_delivery: object = None) -> None:
        pass


async def test_demo_api_serves_publisher_metrics(tmp_path: Path) -> None:
    stats = PublisherStats(
        published=10, delivered=6, spooled=4, drained=1, failed=0, spool_pending=3, spooling=True
    )
    registry = CollectorRegistry()
    registry.register(PublisherCollector(lambda: stats))
    app = create_demo_app(
        Settings(data_dir=tmp_path), Sink(), fingerprint=lambda key: "fp", registry=registry
    )
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        text = await response.text()
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("changefeed_publisher_spool_depth", ())] == 3
    assert samples[("changefeed_publisher_spooling", ())] == 1
    assert samples[("changefeed_publisher_actions_total", (("result", "spooled"),))] == 4
    assert samples[("changefeed_publisher_actions_total", (("result", "delivered"),))] == 6
