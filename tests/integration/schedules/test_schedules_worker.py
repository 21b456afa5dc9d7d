"""Schedules against a real worker and broker: firing time, once per occurrence, pause,
blocked subjects, failed jobs, and SIGKILL around due times."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from schedules_harness import ChangesReader, Client, create_key
from worker_process import WorkerProcess, wait_until

from changefeed.config import Settings
from events_api.writes import schedule_command
from producers.actions import Caller, change_action
from schemas.codec import default_codec
from schemas.schedules import Command, occurrence_event_id, parse_schedule_request, parse_time


def _at(seconds: float) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _micros(value: Any) -> int:
    if isinstance(value, int):
        return value
    return int(value.timestamp() * 1_000_000)


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(settings, tmp_path).start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def _changes_of(settings: Settings, schedule_id: str) -> list[dict[str, Any]]:
    reader = ChangesReader(settings)
    try:
        return [c for c in reader.read() if c["request_id"] == f"schedule:{schedule_id}"]
    finally:
        reader.close()


def _create(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = client.post("/v1/schedules", body)
    assert status == 202, answer
    return answer


def test_a_one_time_schedule_fires_within_a_second_of_its_time(
    settings: Settings, worker: WorkerProcess
) -> None:
    acme = Client(worker, create_key(settings, "acme"))
    created = _create(
        acme,
        {"subject_type": "policy", "subject_id": "p-1", "at": _at(4), "payload": {"n": 1}},
    )
    sid = created["schedule_id"]
    assert created["trigger_state"] == "NORMAL" and created["next_event_time"]
    due_us = parse_time("at", created["at"])
    listed = acme.wait_for(
        "/v1/subjects/policy/p-1/schedules", lambda b: len(b["schedules"]) == 1, 30
    )
    assert listed["schedules"][0]["schedule_id"] == sid
    done = acme.wait_for(f"/v1/schedules/{sid}", lambda b: b["trigger_state"] == "COMPLETE", 30)
    assert done["next_event_time"] is None and done["occurrences_fired"] == 1
    event_id = occurrence_event_id(sid, due_us)
    (change,) = [c for c in _changes_of(settings, sid) if c["event_id"] == event_id]
    assert _micros(change["subject_changed_at"]) == due_us
    lateness_us = _micros(change["created_at"]) - due_us
    assert 0 <= lateness_us <= 1_000_000, f"fired {lateness_us / 1e6:.3f}s after its time"
    assert change["late"] is False and change["current_payload"] == '{"n":1}'


def test_every_fires_each_occurrence_once_and_a_paused_one_does_not(
    settings: Settings, worker: WorkerProcess
) -> None:
    acme = Client(worker, create_key(settings, "acme"))
    every = _create(
        acme,
        {
            "subject_type": "policy",
            "subject_id": "p-2",
            "every": "PT2S",
            "start": _at(3),
            "count": 4,
        },
    )
    paused = _create(
        acme, {"subject_type": "policy", "subject_id": "p-3", "every": "PT1S", "start": _at(6)}
    )
    acme.wait_for(f"/v1/schedules/{paused['schedule_id']}", lambda b: True, 30)
    status, answer = acme.post(f"/v1/schedules/{paused['schedule_id']}/pause")
    assert status == 202, answer
    acme.wait_for(
        f"/v1/schedules/{paused['schedule_id']}", lambda b: b["trigger_state"] == "PAUSED", 30
    )
    done = acme.wait_for(
        f"/v1/schedules/{every['schedule_id']}", lambda b: b["trigger_state"] == "COMPLETE", 60
    )
    assert done["occurrences_fired"] == 4
    changes = _changes_of(settings, every["schedule_id"])
    start_us = parse_time("start", every["start"])
    times = sorted(_micros(c["subject_changed_at"]) for c in changes)
    assert times == [start_us + k * 2_000_000 for k in range(4)]
    assert len({c["event_id"] for c in changes}) == 4
    assert _changes_of(settings, paused["schedule_id"]) == []
    # Deleted: NONE, and gone from the subject's list.
    status, _ = acme.call("DELETE", f"/v1/schedules/{paused['schedule_id']}")
    assert status == 202
    acme.wait_for(
        f"/v1/schedules/{paused['schedule_id']}", lambda b: b["trigger_state"] == "NONE", 30
    )
    assert acme.get("/v1/subjects/policy/p-3/schedules")[1]["schedules"] == []


def test_a_deleted_subject_blocks_its_schedules(settings: Settings, worker: WorkerProcess) -> None:
    acme = Client(worker, create_key(settings, "acme"))
    created = _create(
        acme, {"subject_type": "policy", "subject_id": "p-4", "every": "PT1S", "start": _at(8)}
    )
    caller = Caller(tenant_id="acme", api_version="v1", user_id="u-1")
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    codec = default_codec()
    now = time.time_ns() // 1000
    for n, (kind, payload) in enumerate((("create", {"a": 1}), ("delete", None))):
        action = change_action(
            event_id=f"policy-p-4-{n}",
            request_id="r",
            caller=caller,
            kind=kind,  # type: ignore[arg-type]
            subject_type="policy",
            subject_id="p-4",
            version=n + 1,
            occurred_at=now + n,
            payload=payload,
            parent=None,
            source="/test",
        )
        producer.send(
            settings.topic("actions"),
            key=b"acme/policy/p-4",
            value=codec.encode("changefeed.ApiAction", action),
        )
    producer.flush()
    producer.close()
    sid = created["schedule_id"]
    blocked = acme.wait_for(f"/v1/schedules/{sid}", lambda b: b["trigger_state"] == "BLOCKED", 30)
    assert blocked["next_event_time"] is None
    time.sleep(0)  # nothing to wait for: BLOCKED is persisted at the due time below
    acme.wait_for(f"/v1/schedules/{sid}", lambda b: b["updated_at"] > created["updated_at"], 30)
    assert _changes_of(settings, sid) == []


def test_a_rejected_emission_is_a_failed_job_that_can_be_resumed_and_deleted(
    settings: Settings, worker: WorkerProcess
) -> None:
    acme = Client(worker, create_key(settings, "acme"))
    # The API refuses such a schedule; one stored before a rule tightened (published here
    # straight to actions) can have one: a criticality the processors reject.
    schedule = parse_schedule_request(
        {"subject_type": "policy", "subject_id": "p-5", "at": _at(3)},
        tenant_id="acme",
        schedule_id=str(uuid.uuid4()),
        now_us=time.time_ns() // 1000,
    )
    schedule = replace(schedule, criticality=9)
    action = schedule_command(
        Command.CREATE,
        schedule,
        actor={
            "user_id": None,
            "application_id": None,
            "api_version": "v1",
            "api_key_fingerprint": None,
        },
        body={"schedule": json.loads(schedule.encode())},
        source="/test",
    )
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    producer.send(
        settings.topic("actions"),
        key=schedule.subject_key.encode(),
        value=default_codec().encode("changefeed.ApiAction", action),
    )
    producer.flush()
    producer.close()
    created = {"schedule_id": schedule.schedule_id}
    sid = created["schedule_id"]
    failed = acme.wait_for(f"/v1/schedules/{sid}", lambda b: b["trigger_state"] == "ERROR", 30)
    job = failed["failed_job"]
    assert job["failed_job_state"] == "queued" and job["failure_count"] == 1
    status, listed = acme.get("/v1/failed-jobs?kind=schedule&state=queued")
    assert status == 200 and [j["job_id"] for j in listed["failed_jobs"]] == [job["job_id"]]
    assert acme.get("/v1/failed-jobs?state=quit")[1]["failed_jobs"] == []
    other = Client(worker, create_key(settings, "globex"))
    assert other.get("/v1/failed-jobs")[1]["failed_jobs"] == []
    assert other.post("/v1/failed-jobs/resume", {"job_id": job["job_id"]})[0] == 404
    status, _ = acme.post("/v1/failed-jobs/resume", {"job_id": job["job_id"]})
    assert status == 202
    acme.wait_for(
        f"/v1/schedules/{sid}", lambda b: (b["failed_job"] or {}).get("failure_count") == 2, 30
    )
    status, _ = acme.call("DELETE", "/v1/failed-jobs", {"job_id": job["job_id"]})
    assert status == 202
    acme.wait_for(f"/v1/schedules/{sid}", lambda b: b["failed_job"] is None, 30)
    assert acme.get("/v1/failed-jobs")[1]["failed_jobs"] == []


def test_bad_schedules_get_400_and_need_write(settings: Settings, worker: WorkerProcess) -> None:
    acme = Client(worker, create_key(settings, "acme"))
    base = {"subject_type": "policy", "subject_id": "p"}
    for body, field in (
        ({**base, "every": "P1M"}, "every"),
        ({**base, "every": "61 * * * *"}, "every"),
        ({**base}, "at"),
        ({**base, "at": "2020-01-01T00:00:00Z"}, "at"),
        ({**base, "at": _at(5), "every": "PT1S"}, "at"),
        ({**base, "every": "PT1S", "count": 0}, "count"),
        ({**base, "every": "PT1S", "until": "2001-01-01T00:00:00Z"}, "until"),
    ):
        status, answer = acme.post("/v1/schedules", body)
        assert status == 400, (body, answer)
        assert answer["error"]["message"].startswith(field), answer
    assert acme.get("/v1/schedules/nope%2F..%2Fx")[0] == 404
    assert acme.get("/v1/schedules/a%00b")[0] == 400


def test_sigkill_around_due_times_keeps_every_occurrence_exactly_once(
    settings: Settings, worker: WorkerProcess
) -> None:
    acme = Client(worker, create_key(settings, "acme"))
    schedules = [
        _create(
            acme,
            {
                "subject_type": "policy",
                "subject_id": f"k-{n}",
                "every": "PT1S",
                "start": _at(4),
                "count": 20,
            },
        )
        for n in range(4)
    ]
    for _ in range(3):
        # Kill while occurrences come due, restart, let it catch up a little, again.
        wait_until(lambda: worker.metrics().get("schedule_occurrences_emitted", 0) > 0, 60, "fire")
        worker.kill()
        worker.start()
        worker.wait_ready()
    for created in schedules:
        acme.wait_for(
            f"/v1/schedules/{created['schedule_id']}",
            lambda b: b["trigger_state"] == "COMPLETE",
            120,
        )
    for created in schedules:
        sid = created["schedule_id"]
        changes = _changes_of(settings, sid)
        counts = Counter(c["event_id"] for c in changes)
        assert all(n == 1 for n in counts.values()), counts
        done = acme.get(f"/v1/schedules/{sid}")[1]
        # Emitted + skipped by the bounded catch-up = every occurrence, each once.
        assert len(counts) + done["occurrences_skipped"] == 20
        assert done["occurrences_fired"] == 20
