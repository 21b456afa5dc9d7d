"""Two real workers of one app: any of them answers any key the same way.

The processors derive changes from actions published to ``actions``; each worker holds the
``subject_state`` partitions it was assigned. A subject lookup reaches the owner through
Faust's table routing (forwarded when the asked worker is not the owner), and lists come
from each worker's own index of all ``changes`` partitions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from events_api_harness import create_keys
from events_api_workers import Worker, http_get, wait_until
from kafka import KafkaProducer

from changefeed.config import Settings
from events_api.access.keys import Role
from events_api.views import subject_partition
from schemas.codec import default_codec

T0 = 1_700_000_000_000_000
SUBJECTS = [str(n) for n in range(8)]


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[list[Worker]]:
    started = [Worker(settings, name, tmp_path) for name in ("a", "b")]
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def publish_actions(settings: Settings) -> None:
    codec = default_codec()
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    for version, subject in enumerate(SUBJECTS * 2):
        record = {
            "event_id": f"ev-{version}",
            "request_id": f"req-{subject}",
            "tenant_id": "acme",
            "action": "create" if version < len(SUBJECTS) else "update",
            "event_type": "expense_report:changed",
            "subject_type": "expense_report",
            "subject_id": subject,
            "version": version,
            "occurred_at": T0 + version * 1000,
            "actor": {"user_id": "u-1"},
            "payload": json.dumps({"amount": version}),
        }
        key = f"acme/expense_report/{subject}".encode()
        producer.send(
            settings.topic("actions"), key=key, value=codec.encode("changefeed.ApiAction", record)
        )
    producer.flush()
    producer.close()


def test_any_worker_gives_the_same_answer(settings: Settings, workers: list[Worker]) -> None:
    key = create_keys(settings, {"admin": ("acme", Role.ADMIN, None)})["admin"]
    auth = {"Authorization": f"Bearer {key}"}
    partitions = {subject_partition(f"acme/expense_report/{s}", 2) for s in SUBJECTS}
    assert partitions == {0, 1}, "the subjects must live on both partitions"
    a, b = workers
    wait_until(
        lambda: len(a.owns()) == 1 and len(b.owns()) == 1 and a.owns() != b.owns(),
        180,
        "both workers ready, each owning one subject_state partition",
    )
    publish_actions(settings)

    def listed(worker: Worker) -> list[str]:
        status, _, body = http_get(f"{worker.base_url}/v1/events?limit=1000", auth)
        return [e["change_id"] for e in json.loads(body)["events"]] if status == 200 else []

    wait_until(
        lambda: len(listed(a)) == len(listed(b)) == 2 * len(SUBJECTS),
        60,
        "both workers' indexes to hold every change",
    )
    assert listed(a) == listed(b)

    forwarded = {a.base_url: 0, b.base_url: 0}
    for subject in SUBJECTS:
        answers = []
        for worker in workers:
            url = f"{worker.base_url}/v1/subjects/expense_report/{subject}"
            status, headers, body = http_get(url, auth)
            assert status == 200, body
            answers.append(json.loads(body))
            if "X-Changefeed-Served-By" in headers:
                forwarded[worker.base_url] += 1
        assert answers[0] == answers[1]
        assert answers[0]["state"]["amount"] == len(SUBJECTS) + SUBJECTS.index(subject)
        assert answers[0]["sequence"] == 2
    assert all(count > 0 for count in forwarded.values()), forwarded
