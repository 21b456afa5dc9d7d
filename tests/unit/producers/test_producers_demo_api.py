"""The demo API's HTTP layer: validation answers 4xx JSON, writes publish well-formed actions.

The publisher here is a recording one that encodes every action with the real codec (so an
action that does not fit the Avro schema fails the test) and reports it delivered.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from changefeed.config import Settings
from producers.delivery import DeliveryOutcome, DeliveryReport
from producers.demo_api.server import create_demo_app
from producers.envelope import ActionEncoder
from schemas.codec import default_codec

API_KEY = "sk_live_do_not_leak_1234567890"
TENANT = {"X-Tenant-Id": "acme", "X-Api-Key": API_KEY}


class RecordingPublisher:
    """Encodes like the real publisher, then records and reports the chosen outcome."""

    def __init__(self, outcome: DeliveryOutcome = DeliveryOutcome.DELIVERED) -> None:
        self.actions: list[dict[str, Any]] = []
        self.outcome = outcome
        self._encoder = ActionEncoder("actions", default_codec(), "/test")

    def publish_async(
        self,
        action: Mapping[str, Any],
        on_delivery: Callable[[DeliveryReport], None] | None = None,
    ) -> None:
        record = self._encoder.encode(action)
        self.actions.append(dict(action))
        if on_delivery is not None:
            error = RuntimeError("disk full") if self.outcome is DeliveryOutcome.FAILED else None
            on_delivery(DeliveryReport(record.event_id, self.outcome, "actions", error=error))


def fingerprint(key: str) -> str:
    return f"fp:{len(key)}"


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
async def client(publisher: RecordingPublisher, tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = Settings(source="/demo/test", data_dir=tmp_path)
    app = create_demo_app(settings, publisher, fingerprint=fingerprint)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def post(
    client: TestClient, path: str, body: Any, headers: Mapping[str, str] = TENANT
) -> tuple[int, Any, Mapping[str, str]]:
    response = await client.post(path, data=json.dumps(body), headers=dict(headers))
    return response.status, await response.json(), response.headers


async def make_report_with_expenses(client: TestClient, expenses: int) -> str:
    _, project, _ = await post(client, "/v1/projects", {"name": "Rollout"})
    _, report, _ = await post(
        client, "/v1/expense_reports", {"project_id": project["id"], "title": "May"}
    )
    for n in range(expenses):
        body = {"expense_report_id": report["id"], "amount": 10.5 + n, "category": "travel"}
        status, _, _ = await post(client, "/v1/expenses", body)
        assert status == 201
    return str(report["id"])


async def test_healthz(client: TestClient) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_create_publishes_one_action_describing_the_new_object(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    headers = {**TENANT, "X-Request-Id": "req-1", "X-User-Id": "u-7", "X-Application-Id": "web"}
    status, body, response_headers = await post(
        client, "/v1/projects", {"name": " Rollout ", "budget_cents": 5000}, headers
    )
    assert status == 201
    assert response_headers["X-Request-Id"] == "req-1"
    assert body["name"] == "Rollout" and body["version"] == 1 and body["status"] == "active"
    [action] = publisher.actions
    assert response_headers["X-Event-Ids"] == action["event_id"]
    assert action["request_id"] == "req-1"
    assert action["tenant_id"] == "acme"
    assert (action["action"], action["event_type"]) == ("create", "project:created")
    assert (action["subject_type"], action["subject_id"], action["version"]) == (
        "project",
        body["id"],
        1,
    )
    assert action["subject_ref"] is None
    assert action["actor"] == {
        "user_id": "u-7",
        "application_id": "web",
        "api_version": "v1",
        "api_key_fingerprint": fingerprint(API_KEY),
    }
    assert action["internal"] is True and action["code"] == 0
    assert action["source"] == "/demo/test"
    payload = json.loads(action["payload"])
    assert payload == {k: v for k, v in body.items() if k != "version"}
    assert abs(action["occurred_at"] - datetime.now(UTC)) < timedelta(seconds=10)


async def test_the_api_key_never_appears_in_an_action(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    report_id = await make_report_with_expenses(client, 2)
    await post(client, f"/v1/expense_reports/{report_id}/approve", None)
    assert publisher.actions
    assert API_KEY not in json.dumps(publisher.actions, default=str)


async def test_a_request_id_is_generated_when_not_given(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    _, _, headers = await post(client, "/v1/projects", {"name": "P"})
    generated = headers["X-Request-Id"]
    assert uuid.UUID(generated)
    assert publisher.actions[0]["request_id"] == generated


async def test_update_increments_the_version_and_carries_the_new_state(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    _, project, _ = await post(client, "/v1/projects", {"name": "P"})
    response = await client.patch(
        f"/v1/projects/{project['id']}", json={"status": "archived"}, headers=TENANT
    )
    assert response.status == 200
    updated = await response.json()
    assert updated["version"] == 2 and updated["status"] == "archived"
    action = publisher.actions[-1]
    assert (action["event_type"], action["version"]) == ("project:updated", 2)
    assert json.loads(action["payload"])["status"] == "archived"
    got = await client.get(f"/v1/projects/{project['id']}", headers=TENANT)
    assert (await got.json())["version"] == 2


async def test_approving_a_report_publishes_it_and_each_expense_under_one_request_id(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    report_id = await make_report_with_expenses(client, 3)
    publisher.actions.clear()
    headers = {**TENANT, "X-Request-Id": "approve-1", "X-User-Id": "boss"}
    status, body, response_headers = await post(
        client, f"/v1/expense_reports/{report_id}/approve", None, headers
    )
    assert status == 200
    assert body["status"] == "approved" and body["expenses_approved"] == 3
    assert [a["event_type"] for a in publisher.actions] == [
        "expense_report:updated",
        "expense:updated",
        "expense:updated",
        "expense:updated",
    ]
    assert {a["request_id"] for a in publisher.actions} == {"approve-1"}
    assert response_headers["X-Event-Ids"].split(",") == [a["event_id"] for a in publisher.actions]
    for expense in publisher.actions[1:]:
        assert json.loads(expense["payload"])["status"] == "approved"
        assert expense["version"] == 2
        assert expense["subject_ref"] == {"key": "expense_report", "id": report_id}
    assert json.loads(publisher.actions[0]["payload"])["approved_by"] == "boss"


async def test_an_approved_report_locks_its_expenses(client: TestClient) -> None:
    report_id = await make_report_with_expenses(client, 1)
    await post(client, f"/v1/expense_reports/{report_id}/approve", None)
    response = await client.patch("/v1/expenses/1", json={"amount": 3.0}, headers=TENANT)
    assert response.status == 409
    assert "locked" in (await response.json())["error"]


async def test_deleting_a_report_deletes_its_expenses_first(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    report_id = await make_report_with_expenses(client, 2)
    publisher.actions.clear()
    response = await client.delete(f"/v1/expense_reports/{report_id}", headers=TENANT)
    assert response.status == 200
    assert [(a["event_type"], a["payload"]) for a in publisher.actions] == [
        ("expense:deleted", None),
        ("expense:deleted", None),
        ("expense_report:deleted", None),
    ]
    assert all(a["action"] == "delete" for a in publisher.actions)
    gone = await client.get(f"/v1/expense_reports/{report_id}", headers=TENANT)
    assert gone.status == 404


async def test_generate_a_custom_event(client: TestClient, publisher: RecordingPublisher) -> None:
    before = datetime.now(UTC)
    body = {
        "code": 10042,
        "criticality": 2,
        "subject_type": "device",
        "subject_id": 17,
        "data": {"battery": 12},
    }
    status, response, _ = await post(client, "/v1/events", body)
    assert status == 201
    [action] = publisher.actions
    assert response["event_id"] == action["event_id"]
    assert (action["action"], action["event_type"]) == ("custom", "custom:10042")
    assert (action["code"], action["criticality"], action["internal"]) == (10042, 2, False)
    assert (action["subject_type"], action["subject_id"]) == ("device", "17")
    assert action["version"] is None
    assert json.loads(action["payload"]) == {"battery": 12}
    assert action["payload_content_type"] == "application/json"
    assert before <= action["occurred_at"] <= datetime.now(UTC)


async def test_a_custom_event_with_a_text_payload(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    body = {
        "code": 10001,
        "subject_type": "device",
        "subject_id": "d",
        "data": "low battery",
        "content_type": "text/plain",
    }
    status, _, _ = await post(client, "/v1/events", body)
    assert status == 201
    assert publisher.actions[0]["payload"] == "low battery"
    assert publisher.actions[0]["payload_content_type"] == "text/plain"


NO_TENANT = {"X-Api-Key": API_KEY}
NO_KEY = {"X-Tenant-Id": "acme"}
GOOD_EVENT = {"code": 10001, "subject_type": "device", "subject_id": "d"}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "message"),
    [
        ("POST", "/v1/projects", {"name": "P"}, NO_TENANT, 401, "X-Tenant-Id"),
        ("POST", "/v1/projects", {"name": "P"}, NO_KEY, 401, "X-Api-Key"),
        ("POST", "/v1/projects", "{not json", TENANT, 400, "not valid JSON"),
        ("POST", "/v1/projects", "", TENANT, 400, "not valid JSON"),
        ("POST", "/v1/projects", "NaN", TENANT, 400, "not valid JSON"),
        ("POST", "/v1/projects", [1, 2], TENANT, 422, "JSON object"),
        ("POST", "/v1/widgets", {"name": "P"}, TENANT, 404, "unknown resource"),
        ("POST", "/v2/projects", {"name": "P"}, TENANT, 404, "Not Found"),
        ("GET", "/v1/projects/99", None, TENANT, 404, "does not exist"),
        ("PATCH", "/v1/projects/99", {"name": "x"}, TENANT, 404, "does not exist"),
        ("PUT", "/v1/projects/1", {"name": "x"}, TENANT, 405, "Method Not Allowed"),
        ("POST", "/v1/projects", {}, TENANT, 422, "name: is required"),
        ("POST", "/v1/projects", {"name": "  "}, TENANT, 422, "name: must not be empty"),
        ("POST", "/v1/projects", {"name": "P", "owner": 1}, TENANT, 422, "owner"),
        ("POST", "/v1/projects", {"name": "P", "currency": "usd"}, TENANT, 422, "currency"),
        ("POST", "/v1/projects", {"name": "P", "budget_cents": -1}, TENANT, 422, "budget_cents"),
        ("POST", "/v1/expense_reports", {"title": "T", "project_id": 5}, TENANT, 422, "project"),
        ("POST", "/v1/events", {**GOOD_EVENT, "code": 9999}, TENANT, 422, "code"),
        ("POST", "/v1/events", {**GOOD_EVENT, "code": True}, TENANT, 422, "code"),
        ("POST", "/v1/events", {**GOOD_EVENT, "code": "10001"}, TENANT, 422, "code"),
        ("POST", "/v1/events", {**GOOD_EVENT, "criticality": 6}, TENANT, 422, "criticality"),
        ("POST", "/v1/events", {**GOOD_EVENT, "subject_type": "A B"}, TENANT, 422, "subject_type"),
        ("POST", "/v1/events", {**GOOD_EVENT, "subject_id": ""}, TENANT, 422, "subject_id"),
        ("POST", "/v1/events", {**GOOD_EVENT, "when": "now"}, TENANT, 422, "when"),
        (
            "POST",
            "/v1/events",
            {**GOOD_EVENT, "data": {"a": 1}, "content_type": "text/plain"},
            TENANT,
            422,
            "data",
        ),
        (
            "POST",
            "/v1/projects",
            {"name": "P"},
            {**TENANT, "X-Tenant-Id": "a b"},
            400,
            "X-Tenant-Id",
        ),
        (
            "POST",
            "/v1/projects",
            {"name": "P"},
            {**TENANT, "X-Demo-Delay-Ms": "soon"},
            400,
            "X-Demo-Delay-Ms",
        ),
    ],
)
async def test_invalid_requests_get_a_4xx_json_error_and_publish_nothing(
    client: TestClient,
    publisher: RecordingPublisher,
    method: str,
    path: str,
    body: Any,
    headers: Mapping[str, str],
    status: int,
    message: str,
) -> None:
    data = body if isinstance(body, str) else json.dumps(body)
    response = await client.request(method, path, data=data, headers=dict(headers))
    assert response.status == status
    error = (await response.json())["error"]
    assert message in error
    assert "Traceback" not in error
    assert publisher.actions == []


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        ({"amount": -5}, "amount"),
        ({"amount": 0}, "amount"),
        ({"amount": 1.234}, "amount"),
        ({"amount": "12"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": 5, "category": "yachts"}, "category"),
        ({"amount": 5, "receipt": "yes"}, "receipt"),
        ({"amount": 5, "status": "approved"}, "status"),
    ],
)
async def test_expense_fields_are_validated(
    client: TestClient, publisher: RecordingPublisher, body: dict[str, Any], field_name: str
) -> None:
    report_id = await make_report_with_expenses(client, 0)
    publisher.actions.clear()
    status, response, _ = await post(
        client, "/v1/expenses", {"expense_report_id": report_id, **body}
    )
    assert status == 422
    assert field_name in response["error"]
    assert publisher.actions == []


async def test_state_conflicts_are_409(client: TestClient) -> None:
    report_id = await make_report_with_expenses(client, 1)
    status, _, _ = await post(client, f"/v1/expense_reports/{report_id}/approve", None)
    assert status == 200
    again, error, _ = await post(client, f"/v1/expense_reports/{report_id}/approve", None)
    assert again == 409 and "already approved" in error["error"]
    project = await client.delete("/v1/projects/1", headers=TENANT)
    assert project.status == 409


async def test_immutable_and_status_fields_cannot_be_patched(client: TestClient) -> None:
    report_id = await make_report_with_expenses(client, 1)
    moved = await client.patch("/v1/expenses/1", json={"expense_report_id": 9}, headers=TENANT)
    assert moved.status == 422
    approved = await client.patch(
        f"/v1/expense_reports/{report_id}", json={"status": "approved"}, headers=TENANT
    )
    assert approved.status == 422
    empty = await client.patch(f"/v1/expense_reports/{report_id}", json={}, headers=TENANT)
    assert empty.status == 422


async def test_tenants_do_not_see_each_other(client: TestClient) -> None:
    await post(client, "/v1/projects", {"name": "P"})
    other = await client.get("/v1/projects/1", headers={**TENANT, "X-Tenant-Id": "globex"})
    assert other.status == 404


async def test_duplicate_header_publishes_every_action_twice(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    await post(client, "/v1/projects", {"name": "P"}, {**TENANT, "X-Demo-Duplicate": "true"})
    first, second = publisher.actions
    assert first == second


async def test_delay_header_publishes_after_the_response(
    client: TestClient, publisher: RecordingPublisher
) -> None:
    status, _, headers = await post(
        client, "/v1/projects", {"name": "P"}, {**TENANT, "X-Demo-Delay-Ms": "50"}
    )
    assert status == 201 and headers["X-Events-Deferred"] == "1"
    assert publisher.actions == []
    deadline = time.monotonic() + 5
    while not publisher.actions and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(publisher.actions) == 1


async def test_a_publish_failure_is_503(tmp_path: Path) -> None:
    failing = RecordingPublisher(DeliveryOutcome.FAILED)
    app = create_demo_app(Settings(data_dir=tmp_path), failing, fingerprint=fingerprint)
    async with TestClient(TestServer(app)) as failing_client:
        status, body, _ = await post(failing_client, "/v1/projects", {"name": "P"})
    assert status == 503
    assert "disk full" in body["error"]


async def test_an_unexpected_error_is_a_bare_500(tmp_path: Path) -> None:
    class ExplodingPublisher(RecordingPublisher):
        def publish_async(self, action: Mapping[str, Any], on_delivery: Any = None) -> None:
            raise RuntimeError("secret internals")

    app = create_demo_app(
        Settings(data_dir=tmp_path), ExplodingPublisher(), fingerprint=fingerprint
    )
    async with TestClient(TestServer(app)) as exploding_client:
        status, body, _ = await post(exploding_client, "/v1/projects", {"name": "P"})
    assert status == 500
    assert body == {"error": "internal error"}


async def test_the_default_fingerprint_is_keyed_stable_and_not_the_key(
    tmp_path: Path, publisher: RecordingPublisher
) -> None:
    settings = Settings(data_dir=tmp_path)
    fingerprints = []
    for _ in range(2):  # two app instances on the same data dir: same secret
        async with TestClient(TestServer(create_demo_app(settings, publisher))) as fresh:
            await post(fresh, "/v1/projects", {"name": "P"})
        fingerprints.append(publisher.actions[-1]["actor"]["api_key_fingerprint"])
    assert fingerprints[0] == fingerprints[1]
    assert fingerprints[0].startswith("hmac-sha256:")
    assert API_KEY not in fingerprints[0]


@pytest.mark.parametrize(
    ("path", "data", "content_type", "status", "message"),
    [
        ("/v1/projects", '{"name": ' + "[" * 995 + "]" * 995 + "}", None, 400, "nested"),
        ("/v1/projects", '{"name": "P"}', "application/json; charset=foo", 400, "charset"),
        ("/v1/projects", '{"name": "broken emoji \\ud83d"}', None, 400, "surrogate"),
        ("/v1/expense_reports", '{"project_id": "\u00b2", "title": "May"}', None, 422, "id"),
        (
            "/v1/events",
            '{"code": 10001, "subject_type": "d", "subject_id": "d", "data": {"t": 1e400}}',
            None,
            400,
            "finite",
        ),
        (
            "/v1/events",
            '{"code": 10001, "subject_type": "d", "subject_id": "a\\u0000b"}',
            None,
            422,
            "NUL",
        ),
        (
            "/v1/events",
            json.dumps({**GOOD_EVENT, "data": {"blob": "x" * 920_000}}),
            None,
            422,
            "budget",
        ),
    ],
)
async def test_what_the_processors_would_refuse_is_a_4xx_and_changes_nothing(
    client: TestClient,
    publisher: RecordingPublisher,
    path: str,
    data: str,
    content_type: str | None,
    status: int,
    message: str,
) -> None:
    headers = {**TENANT, "Content-Type": content_type or "application/json"}
    response = await client.post(path, data=data.encode("utf-8"), headers=headers)
    assert response.status == status
    assert message in (await response.json())["error"]
    assert publisher.actions == []
    # Nothing was created in memory either: the API and the feed agree.
    response = await client.get("/v1/projects/1", headers=TENANT)
    assert response.status == 404
