"""``POST /v1/events`` against a real worker and broker: the generated event reaches the feed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from schedules_harness import ChangesReader, Client, create_key
from worker_process import WorkerProcess

from changefeed.config import Settings
from events_api.access.keys import KeyScope
from schemas.identity import change_id


def _an_hour_ago() -> str:
    moment = datetime.now(UTC) - timedelta(hours=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(settings, tmp_path).start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_a_generated_event_is_in_the_feed_with_server_time_and_code(
    settings: Settings, worker: WorkerProcess
) -> None:
    acme = Client(worker, create_key(settings, "acme"))
    before_us = time.time_ns() // 1000
    status, accepted = acme.post(
        "/v1/events",
        {
            "subject_type": "device",
            "subject_id": "d-1",
            "code": 10042,
            "criticality": 2,
            "payload": {"battery": 7},
        },
    )
    assert status == 202, accepted
    assert accepted["change_id"] == change_id(accepted["event_id"])
    event = acme.wait_for(f"/v1/events/{accepted['change_id']}", lambda body: body)
    assert event["code"] == 10042 and event["criticality"] == 2
    assert event["internal"] is False
    assert event["current_payload"] == {"battery": 7}
    listed = acme.wait_for(
        f"/v1/events?subject_id=d-1&start={_an_hour_ago()}",
        lambda body: any(e["change_id"] == accepted["change_id"] for e in body["events"]),
    )
    assert listed["events"]
    reader = ChangesReader(settings)
    try:
        (change,) = [c for c in reader.read() if c["event_id"] == accepted["event_id"]]
    finally:
        reader.close()
    assert change["code"] == 10042
    occurred = change["subject_changed_at"]
    occurred_us = occurred if isinstance(occurred, int) else int(occurred.timestamp() * 1e6)
    assert before_us <= occurred_us <= time.time_ns() // 1000  # the server set the time


def test_writing_needs_the_write_scope_and_retries_give_one_change(
    settings: Settings, worker: WorkerProcess
) -> None:
    reader_only = Client(worker, create_key(settings, "acme", scopes=(KeyScope.READ,)))
    body = {"subject_type": "device", "subject_id": "d-2", "code": 10001}
    status, answer = reader_only.post("/v1/events", body)
    assert status == 403 and "write" in answer["error"]["message"]

    acme = Client(worker, create_key(settings, "acme"))
    first = acme.post("/v1/events", body, headers={"Idempotency-Key": "order-7"})
    again = acme.post("/v1/events", body, headers={"Idempotency-Key": "order-7"})
    assert first[0] == again[0] == 202
    assert first[1]["event_id"] == again[1]["event_id"]
    assert first[1]["change_id"] == again[1]["change_id"]
    # A later event of the same subject: once it is in the feed, the retry had its chance.
    status, marker = acme.post("/v1/events", {**body, "code": 10002})
    acme.wait_for(f"/v1/events/{marker['change_id']}", lambda b: b)
    reader = ChangesReader(settings)
    try:
        copies = [c for c in reader.read() if c["event_id"] == first[1]["event_id"]]
    finally:
        reader.close()
    assert len(copies) == 1

    other = Client(worker, create_key(settings, "globex"))
    assert other.get(f"/v1/events/{first[1]['change_id']}")[0] == 404
    status, listed = other.get(f"/v1/events?start={_an_hour_ago()}")
    assert status == 200 and listed["events"] == []
    # The same idempotency key in another tenant is another event.
    status, theirs = other.post("/v1/events", body, headers={"Idempotency-Key": "order-7"})
    assert status == 202 and theirs["event_id"] != first[1]["event_id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"subject_type": "device", "subject_id": "d", "code": 42}, "code"),
        (
            {"subject_type": "device", "subject_id": "d", "code": 10000, "criticality": 9},
            "criticality",
        ),
        ({"subject_type": "device", "subject_id": "d\ud800", "code": 10000}, "subject_id"),
        ({"subject_type": "Device/../x", "subject_id": "d", "code": 10000}, "subject_type"),
        (
            {
                "subject_type": "device",
                "subject_id": "d",
                "code": 10000,
                "event_type": "changefeed.schedule:create",
            },
            "event_type",
        ),
        ({"subject_type": "device", "subject_id": "d", "code": 10000, "extra": 1}, "extra"),
        (
            {
                "subject_type": "device",
                "subject_id": "d",
                "code": 10000,
                "content_type": "text/plain",
                "payload": {"a": 1},
            },
            "payload",
        ),
    ],
)
def test_bad_bodies_get_400_naming_the_field(
    settings: Settings, worker: WorkerProcess, body: dict[str, object], field: str
) -> None:
    acme = Client(worker, create_key(settings, "acme"))
    status, answer = acme.post("/v1/events", body)
    assert status == 400, answer
    assert answer["error"]["message"].startswith(field)


def test_hostile_bodies_get_400(settings: Settings, worker: WorkerProcess) -> None:
    acme = Client(worker, create_key(settings, "acme"))
    nested = b'{"payload":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for raw in (b"{", b"\xff\xfe", b"[1,2]", nested, b'{"code": NaN}', b"x" * 300_000):
        status, answer = acme.call("POST", "/v1/events", raw=raw)
        assert status == 400, (raw[:20], answer)
        assert answer["error"]["code"] == "bad_request"
