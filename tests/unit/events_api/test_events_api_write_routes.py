"""The write routes over HTTP without a broker: scopes, roles, answers, bad input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from events_api.access.keyring import KeyRing
from events_api.access.keys import KeyScope, Role, new_key
from events_api.cursor import CursorSigner
from events_api.http import build_events_app, mount
from events_api.index import FeedIndex
from events_api.service import FeedService
from events_api.signals import TenantSignals
from events_api.write_routes import add_write_routes
from schemas.identity import change_id
from schemas.schedules import Schedule, TriggerState

RW = (KeyScope.READ, KeyScope.WRITE)
KEYS = {
    "writer": ("acme", Role.ADMIN, None, RW),
    "reader": ("acme", Role.ADMIN, None, (KeyScope.READ,)),
    "write-only": ("acme", Role.ADMIN, None, (KeyScope.WRITE,)),
    "user-writer": ("acme", Role.USER, "u-1", RW),
    "globex": ("globex", Role.ADMIN, None, RW),
}


class RecordingSink:
    def __init__(self) -> None:
        self.actions: list[dict[str, Any]] = []

    async def publish(self, action: dict[str, Any]) -> None:
        self.actions.append(action)

    async def close(self) -> None:
        pass


class MemorySchedules:
    def __init__(self) -> None:
        self.by_id: dict[str, Schedule] = {}

    async def schedule(self, schedule_id: str) -> Schedule | None:
        return self.by_id.get(schedule_id)

    async def subject_schedules(self, subject: str) -> list[Schedule]:
        return [s for s in self.by_id.values() if s.subject_key == subject]

    async def failed(self, tenant_id: str) -> list[Schedule]:
        return [s for s in self.by_id.values() if s.tenant_id == tenant_id and s.failed]

    async def subject_deleted(self, subject: str) -> bool:
        return False

    async def ask_peers(self, request: Any, body: Any, query: Any = None) -> list[Any]:
        return []  # a single worker: no other worker to ask

    async def close(self) -> None:
        pass


class Api:
    def __init__(
        self, client: TestClient, keys: dict[str, str], sink: RecordingSink, table: MemorySchedules
    ) -> None:
        self.client, self.keys, self.sink, self.table = client, keys, sink, table

    async def call(
        self,
        method: str,
        path: str,
        label: str,
        body: Any = None,
        raw: bytes | None = None,
        **headers: str,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        response = await self.client.request(
            method,
            path,
            data=data,
            headers={"Authorization": f"Bearer {self.keys[label]}", **headers},
        )
        return response.status, await response.json()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    index = FeedIndex(tmp_path / "feed.sqlite3", "changes")
    index.open()
    keys, records = {}, []
    for label, (tenant, role, user, scopes) in KEYS.items():
        keys[label], record = new_key(tenant, role, user_id=user, name=label, scopes=scopes)
        records.append(record)
    feed = FeedService(
        index=index,
        signals=TenantSignals(),
        signer=CursorSigner(b"s" * 32),
        retention_ms=86_400_000,
    )
    app = build_events_app(feed, KeyRing(records))
    sink, table = RecordingSink(), MemorySchedules()
    add_write_routes(app, sink, table, "/test")  # type: ignore[arg-type]
    root = web.Application()
    mount(root, app)
    client = TestClient(TestServer(root))
    await client.start_server()
    try:
        yield Api(client, keys, sink, table)
    finally:
        await client.close()
        feed.close()
        index.close()


EVENT = {"subject_type": "device", "subject_id": "d-1", "code": 10001}


async def test_a_generated_event_is_published_and_answered_with_its_ids(api: Api) -> None:
    status, body = await api.call("POST", "/v1/events", "writer", EVENT, **{"Idempotency-Key": "k"})
    assert status == 202
    (action,) = api.sink.actions
    assert body["event_id"] == action["event_id"] and body["change_id"] == change_id(
        body["event_id"]
    )
    assert action["tenant_id"] == "acme" and action["internal"] is False
    status, again = await api.call(
        "POST", "/v1/events", "writer", EVENT, **{"Idempotency-Key": "k"}
    )
    assert again["event_id"] == body["event_id"]


async def test_scopes_and_roles(api: Api) -> None:
    assert (await api.call("POST", "/v1/events", "reader", EVENT))[0] == 403
    assert (await api.call("GET", "/v1/events", "write-only"))[0] == 403
    status, body = await api.call("POST", "/v1/events", "user-writer", EVENT)
    assert status == 202 and api.sink.actions[-1]["actor"]["user_id"] == "u-1"
    schedule = {**EVENT, "every": "PT1M"}
    assert (await api.call("POST", "/v1/schedules", "user-writer", schedule))[0] == 403
    assert (await api.call("POST", "/v1/schedules", "reader", schedule))[0] == 403
    assert api.sink.actions[-1]["event_type"] == "custom:10001"  # nothing else published


async def test_a_schedule_is_a_command_keyed_by_its_subject(api: Api) -> None:
    status, body = await api.call(
        "POST",
        "/v1/schedules",
        "writer",
        {**EVENT, "every": "PT1M", "count": 3},
        **{"Idempotency-Key": "s"},
    )
    assert status == 202 and body["trigger_state"] == "NORMAL" and body["next_event_time"]
    (action,) = api.sink.actions
    assert action["event_type"] == "changefeed.schedule:create" and action["internal"] is True
    stored = Schedule.decode(json.dumps(json.loads(action["payload"])["schedule"]).encode())
    assert stored.schedule_id == body["schedule_id"] and stored.subject_key == "acme/device/d-1"
    api.table.by_id[stored.schedule_id] = stored
    status, shown = await api.call("GET", f"/v1/schedules/{stored.schedule_id}", "writer")
    assert status == 200 and shown["every"] == "PT1M"
    assert (await api.call("GET", f"/v1/schedules/{stored.schedule_id}", "globex"))[0] == 404
    assert (await api.call("POST", f"/v1/schedules/{stored.schedule_id}/pause", "globex"))[0] == 404
    status, _ = await api.call("POST", f"/v1/schedules/{stored.schedule_id}/pause", "writer")
    assert status == 202 and api.sink.actions[-1]["event_type"] == "changefeed.schedule:pause"
    listed = await api.call("GET", "/v1/subjects/device/d-1/schedules", "writer")
    assert [s["schedule_id"] for s in listed[1]["schedules"]] == [stored.schedule_id]
    assert (await api.call("GET", "/v1/subjects/device/d-1/schedules", "globex"))[1][
        "schedules"
    ] == []
    api.table.by_id[stored.schedule_id] = stored.with_state(TriggerState.NONE, 1)
    assert (await api.call("DELETE", f"/v1/schedules/{stored.schedule_id}", "writer"))[0] == 404


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"\xff",
        b"[]",
        b"null",
        b'{"code": 1e999999}',
        b"[" * 50_000 + b"]" * 50_000,
        b'{"subject_type":"device","subject_id":"\\ud800","code":10001}',
        b"x" * 300_000,
    ],
)
async def test_hostile_bodies_get_400(api: Api, raw: bytes) -> None:
    for path in ("/v1/events", "/v1/schedules"):
        status, body = await api.call("POST", path, "writer", raw=raw)
        assert status == 400, (path, raw[:30], body)
        assert body["error"]["code"] == "bad_request"
    assert api.sink.actions == []


async def test_failed_jobs_filters_and_job_ids(api: Api) -> None:
    assert (await api.call("GET", "/v1/failed-jobs?kind=printer", "writer"))[0] == 400
    assert (await api.call("GET", "/v1/failed-jobs?state=stuck", "writer"))[0] == 400
    status, body = await api.call("GET", "/v1/failed-jobs?kind=webhook&state=quit", "writer")
    assert status == 200 and body["failed_jobs"] == []
    for job in ({"job_id": "nope"}, {}, {"job_id": 3}):
        assert (await api.call("POST", "/v1/failed-jobs/resume", "writer", job))[0] == 400
    missing = {"job_id": "schedule:abc@1"}
    assert (await api.call("DELETE", "/v1/failed-jobs", "writer", missing))[0] == 404
