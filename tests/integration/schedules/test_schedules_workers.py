"""Two workers: a schedule named by id is answered (and paused) whichever worker is asked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from schedules_harness import Client, create_key
from worker_process import WorkerProcess, wait_until

from changefeed.config import Settings


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started = [
        WorkerProcess(settings, tmp_path, name=name, data_dir=settings.data_dir / name).start()
        for name in ("a", "b")
    ]
    try:
        for worker in started:
            worker.wait_ready()

        def split() -> bool:
            owned = [
                [p for p in (w.health() or {}).get("partitions", []) if "schedules-changelog" in p]
                for w in started
            ]
            return all(len(parts) == 1 for parts in owned)

        wait_until(split, 120, "each worker to own one partition")
        yield started
    finally:
        for worker in started:
            worker.stop()


def test_any_worker_answers_and_commands_a_schedule_by_id(
    settings: Settings, workers: list[WorkerProcess]
) -> None:
    key = create_key(settings, "acme")
    a, b = (Client(worker, key) for worker in workers)
    start = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    created = []
    for n in range(6):
        status, body = a.post(
            "/v1/schedules",
            {"subject_type": "policy", "subject_id": f"p-{n}", "every": "PT1H", "start": start},
        )
        assert status == 202, body
        created.append(body["schedule_id"])
    for sid in created:
        for client in (a, b):
            shown = client.wait_for(f"/v1/schedules/{sid}", lambda body: True, 60)
            assert shown["schedule_id"] == sid and shown["trigger_state"] == "NORMAL"
    for sid in created:
        status, body = b.post(f"/v1/schedules/{sid}/pause")
        assert status == 202, body
    for sid in created:
        a.wait_for(f"/v1/schedules/{sid}", lambda body: body["trigger_state"] == "PAUSED", 60)
    other = Client(workers[0], create_key(settings, "globex"))
    assert all(other.get(f"/v1/schedules/{sid}")[0] == 404 for sid in created)
    assert a.get("/v1/schedules/00000000-0000-0000-0000-000000000000")[0] == 404
    status, jobs = b.get("/v1/failed-jobs")
    assert status == 200 and jobs["failed_jobs"] == []
