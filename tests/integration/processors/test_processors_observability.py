"""What a worker tells its operators: Prometheus metrics that move with the work, and
health that says ready only once records actually flow."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

from processors_harness import ActionPublisher, TopicReader, WorkerProcess, action, wait_until
from prometheus_client.parser import text_string_to_metric_families

from changefeed.config import Settings
from events_api.access.key_topic import KeyStore
from events_api.access.keys import Role, new_key

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(worker: WorkerProcess) -> Samples:
    """Every sample of ``/metrics``, parsed by Prometheus' own text parser."""
    with urllib.request.urlopen(f"{worker.base_url}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def labelled(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def get(url: str, key: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"X-Api-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=70) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_metrics_move_with_the_work(settings: Settings, tmp_path: Path) -> None:
    key, record = new_key("acme", Role.ADMIN, name="metrics test")
    KeyStore(settings).put(record)
    worker = WorkerProcess(settings, tmp_path).start()
    publisher = ActionPublisher(settings)
    changes = TopicReader(settings, [settings.topic("changes")])
    try:
        worker.wait_ready()
        before = scrape(worker)
        assert value(before, "changefeed_actions_total", outcome="changed") == 0
        created = action("m-1", "create", {"n": 1}, subject_id="m", version=1)
        publisher.publish(
            [
                created,
                action("m-2", "update", {"n": 2}, subject_id="m", version=2),
                created,  # a duplicate
                action("m-3", "update", {"n": 2}, subject_id="m", version=3),  # a no-op
            ]
        )
        publisher.publish_raw(b"acme/x/1", b"\x00garbage")
        changes.wait_for(2)

        def counted() -> bool:
            s = scrape(worker)
            return value(s, "changefeed_actions_total", outcome="dead_letter") == 1 and (
                value(s, "changefeed_actions_total", outcome="noop") == 1
            )

        wait_until(counted, 30, "the outcomes to be counted")
        after = scrape(worker)
        assert value(after, "changefeed_actions_total", outcome="changed") == 2
        assert value(after, "changefeed_actions_total", outcome="duplicate") == 1
        assert value(after, "changefeed_actions_total", outcome="late") == 0
        assert value(after, "changefeed_transactions_total") >= 1
        assert value(after, "changefeed_commit_duration_seconds_count") >= 1
        assert value(after, "changefeed_commit_duration_seconds_sum") > 0
        # every assigned partition has a lag, and the worker has caught up with all of them
        wait_until(
            lambda: (
                (lag := labelled(scrape(worker), "changefeed_consumer_lag"))
                and len(lag) == settings.partitions
                and not any(lag.values())
            ),
            30,
            "a zero consumer lag on every partition",
        )
        wait_until(
            lambda: (
                value(scrape(worker), "changefeed_feed_indexed_total") >= 2
                and not any(labelled(scrape(worker), "changefeed_feed_index_lag").values())
            ),
            30,
            "the feed index to catch up",
        )
        assert labelled(scrape(worker), "changefeed_feed_index_lag")

        # the events API: durations by route template and status, waiting long polls
        assert get(f"{worker.base_url}/v1/events/not-an-id") == 401
        assert get(f"{worker.base_url}/v1/events?limit=1", key) == 200
        poll = threading.Thread(
            target=get,
            args=(f"{worker.base_url}/v1/events/poll?cursor=now&timeout=20", key),
            daemon=True,
        )
        poll.start()
        wait_until(
            lambda: value(scrape(worker), "changefeed_long_poll_waiters") == 1,
            15,
            "the long poll to be counted as waiting",
        )
        publisher.publish([action("m-4", "update", {"n": 4}, subject_id="m", version=4)])
        poll.join(30)
        assert not poll.is_alive()
        final = scrape(worker)
        assert value(final, "changefeed_long_poll_waiters") == 0
        name = "changefeed_events_api_request_duration_seconds_count"
        assert value(final, name, route="/v1/events/{change_id}", status="401") == 1
        assert value(final, name, route="/v1/events", status="200") == 1
        assert value(final, name, route="/v1/events/poll", status="200") == 1
        # the JSON counters moved to /metrics.json
        assert worker.metrics()["duplicates"] == 1
    finally:
        publisher.close()
        changes.close()
        worker.stop()


def test_health_is_ready_only_once_records_flow(settings: Settings, tmp_path: Path) -> None:
    publisher = ActionPublisher(settings)
    publisher.publish(
        action(f"h-{n}", "create", {"n": n}, subject_id=f"h{n}", version=1) for n in range(200)
    )
    worker = WorkerProcess(settings, tmp_path).start()
    answers: list[tuple[int, dict[str, object]]] = []

    def first_ready() -> bool:
        try:
            with urllib.request.urlopen(f"{worker.base_url}/healthz", timeout=2) as r:
                answers.append((r.status, json.loads(r.read())))
                return True
        except urllib.error.HTTPError as exc:
            answers.append((exc.code, json.loads(exc.read())))
        except (urllib.error.URLError, OSError):
            pass
        assert worker.process is not None and worker.process.poll() is None, worker.tail()
        return False

    try:
        wait_until(first_ready, 120, "/healthz to say ready")
        # the moment health says ready, the backlog is being processed
        processed = worker.metrics()["processed"]
        assert processed > 0
        not_ready = [body for status, body in answers if status == 503]
        assert not_ready, "the port answered only once ready"
        assert all(body["ready"] is False and body["reason"] for body in not_ready)
        assert {body["reason"] for body in not_ready} <= {"restoring", "rebalancing", "starting"}
        with urllib.request.urlopen(f"{worker.base_url}/livez", timeout=2) as r:
            assert json.loads(r.read()) == {"alive": True}
        with urllib.request.urlopen(f"{worker.base_url}/readyz", timeout=2) as r:
            assert json.loads(r.read())["ready"] is True
        # restore progress is logged
        assert "restoring tables:" in worker.log_path.read_text()
    finally:
        publisher.close()
        worker.stop()
