"""The worker's port while its tables restore: health with progress, never a refusal."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from processors.restore import RestoreReport
from processors.startup_server import StartupServer, startup_app


@pytest.fixture
async def restoring() -> AsyncIterator[tuple[TestClient, RestoreReport]]:
    report = RestoreReport(
        records=1_500, offsets_total=4_000, changelogs=5, changelogs_done=2, started=True
    )
    report.offsets_read[("t-changelog", 0)] = 1_000
    async with TestClient(TestServer(startup_app(report))) as client:
        yield client, report


async def test_health_is_503_restoring_with_progress(
    restoring: tuple[TestClient, RestoreReport],
) -> None:
    client, report = restoring
    for path in ("/healthz", "/readyz"):
        response = await client.get(path)
        body = await response.json()
        assert response.status == 503
        assert body["ready"] is False and body["reason"] == "restoring"
        assert body["reasons"] == ["restoring"]
        progress = body["progress"]
        assert progress["records"] == 1_500
        assert progress["offsets_read"] == 1_000 and progress["offsets_total"] == 4_000
        assert progress["percent"] == 25.0
        assert (progress["changelogs_done"], progress["changelogs"]) == (2, 5)
    report.records = 3_000  # the answer follows the restore as it goes
    assert (await (await client.get("/healthz")).json())["progress"]["records"] == 3_000


async def test_starting_before_the_restore_begins() -> None:
    async with TestClient(TestServer(startup_app(RestoreReport()))) as client:
        response = await client.get("/healthz")
        body = await response.json()
    assert response.status == 503
    assert body["reason"] == "starting" and "progress" not in body


async def test_alive_while_restoring(restoring: tuple[TestClient, RestoreReport]) -> None:
    client, _ = restoring
    response = await client.get("/livez")
    assert response.status == 200 and await response.json() == {"alive": True}


async def test_everything_else_is_503_json(restoring: tuple[TestClient, RestoreReport]) -> None:
    client, _ = restoring
    for path in ("/v1/events", "/v1/subjects/a%2Fb/c", "/openapi.json", "/"):
        response = await client.get(path)
        body = await response.json()
        assert response.status == 503, path
        assert body["error"]["code"] == "unavailable"
        assert "retry shortly" in body["error"]["message"]
        assert response.headers["Retry-After"] == "5"
    response = await client.post("/v1/events", data=b"{" * 10_000)
    assert response.status == 503


async def test_metrics_show_restore_progress(restoring: tuple[TestClient, RestoreReport]) -> None:
    client, _ = restoring
    text = await (await client.get("/metrics")).text()
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["changefeed_restore_records"] == 1_500
    assert samples["changefeed_restore_progress_ratio"] == pytest.approx(0.25)


def test_progress_line_names_what_is_done() -> None:
    report = RestoreReport(records=10, offsets_total=40, changelogs=5, changelogs_done=1)
    report.offsets_read[("t", 0)] = 20
    line = report.describe_progress()
    assert line.startswith("restoring tables: 10 records, 50.0% of 40 changelog offsets")
    assert "1/5 changelogs" in line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_served_from_its_own_thread_until_stopped() -> None:
    """The restore blocks the main thread; the port answers all the same, and is free for
    Faust's web server once stopped."""
    port = _free_port()
    server = StartupServer(RestoreReport(records=7, started=True), "127.0.0.1", port).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert answer.value.code == 503
        assert json.loads(answer.value.read())["progress"]["records"] == 7
    finally:
        server.stop()
    server.stop()  # twice is fine
    with socket.socket() as sock:  # the port is free again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_a_taken_port_fails_at_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            StartupServer(RestoreReport(), "127.0.0.1", port).start()
