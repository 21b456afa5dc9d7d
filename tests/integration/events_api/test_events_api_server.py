"""``changefeed api``: the events API on its own, beside a worker, sharing its secret."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from integration.processors.processors_harness import ActionPublisher, TopicReader, action
from prometheus_client.parser import text_string_to_metric_families
from worker_process import WorkerProcess, free_port, wait_until

from changefeed.config import Settings
from events_api.access.key_topic import KeyStore
from events_api.access.keys import Role, new_key


def fetch(url: str, key: str | None = None) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, headers={"X-Api-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


class ApiServer:
    def __init__(self, worker: WorkerProcess, log: Path, worker_url: str | None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {**worker.env, "CHANGEFEED_EVENTS_API_PORT": str(self.port)}
        env.pop("CHANGEFEED_WORKER_URL", None)
        if worker_url:
            env["CHANGEFEED_WORKER_URL"] = worker_url
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "changefeed.cli", "api"], env=env, stdout=out, stderr=out
            )

    def ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        try:
            return fetch(f"{self.base_url}/healthz")[0] == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
        return self.process.returncode


def test_api_server_beside_a_worker(settings: Settings, tmp_path: Path) -> None:
    key, record = new_key("acme", Role.ADMIN, name="api server test")
    KeyStore(settings).put(record)
    worker = WorkerProcess(settings, tmp_path).start()
    publisher = ActionPublisher(settings)
    changes = TopicReader(settings, [settings.topic("changes")])
    forwarding = ApiServer(worker, tmp_path / "api-forwarding.log", worker.base_url)
    alone = ApiServer(worker, tmp_path / "api-alone.log", None)
    try:
        worker.wait_ready()
        wait_until(lambda: forwarding.ready() and alone.ready(), 60, "the API servers")
        publisher.publish(
            action(f"a-{n}", "create", {"n": n}, subject_id=f"a{n}", version=1) for n in range(6)
        )
        changes.wait_for(6)

        def listed(base: str) -> bool:
            status, _, page = fetch(f"{base}/v1/events?limit=100", key)
            return status == 200 and page["count"] == 6

        wait_until(lambda: listed(forwarding.base_url), 60, "the API server to index")
        # a cursor signed by the worker is accepted by the API server, and gives the same page
        _, _, first = fetch(f"{worker.base_url}/v1/events?limit=2", key)
        cursor = first["next_cursor"]
        on_worker = fetch(f"{worker.base_url}/v1/events?limit=2&cursor={cursor}", key)
        on_api = fetch(f"{forwarding.base_url}/v1/events?limit=2&cursor={cursor}", key)
        assert on_api[0] == on_worker[0] == 200
        assert [e["change_id"] for e in on_api[2]["events"]] == [
            e["change_id"] for e in on_worker[2]["events"]
        ]
        # subject state: forwarded to the worker, or derived from the index
        status, headers, subject = fetch(
            f"{forwarding.base_url}/v1/subjects/expense_report/a3", key
        )
        assert status == 200, subject
        assert subject["state"] == {"n": 3}
        assert headers.get("X-Changefeed-Served-By") == worker.base_url
        wait_until(lambda: listed(alone.base_url), 60, "the second API server to index")
        status, headers, subject = fetch(f"{alone.base_url}/v1/subjects/expense_report/a3", key)
        assert status == 200 and subject["state"] == {"n": 3}
        assert "X-Changefeed-Served-By" not in headers
        # nothing is processed by an API server; its metrics are its own
        with urllib.request.urlopen(f"{alone.base_url}/metrics", timeout=5) as response:
            families = {f.name for f in text_string_to_metric_families(response.read().decode())}
        assert "changefeed_feed_index_lag" in families
        assert "changefeed_events_api_request_duration_seconds" in families
        assert "changefeed_actions" not in families
        # the worker stopped: forwarded lookups answer 503 and say why
        assert worker.stop() == 0
        status, _, body = fetch(f"{forwarding.base_url}/v1/subjects/expense_report/a3", key)
        assert status == 503 and "did not answer" in body["error"]["message"]
    finally:
        publisher.close()
        changes.close()
        assert forwarding.stop() == 0, forwarding.log.read_text()[-3000:]
        assert alone.stop() == 0, alone.log.read_text()[-3000:]
        worker.stop()
    assert "Traceback" not in (tmp_path / "api-forwarding.log").read_text()
    assert os.path.isdir(settings.data_dir / f"api-{alone.port}")
