"""The events API over HTTP, on an in-process index: answers, errors, scopes, long poll."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from change_events import T0, change_event
from events_api_server import ApiUnderTest, api_under_test

H = 3_600_000_000  # an hour in micros


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiUnderTest]:
    async with api_under_test(tmp_path) as under_test:
        under_test.add(
            0,
            change_event(1, user="u-1", created_us=T0 + 1, request_id="req-A"),
            change_event(2, user="u-2", created_us=T0 + 2, subject_id="2", request_id="req-A"),
            change_event(3, tenant="globex", user="u-1", created_us=T0 + 3),
        )
        under_test.add(
            1,
            change_event(4, user="u-1", created_us=T0 + 4, action="delete", sequence=1),
            change_event(
                5,
                user="u-1",
                created_us=T0 + 5,
                event_type="expense:updated",
                criticality=1,
                code=10_001,
                subject_type="expense",
                subject_id="9",
            ),
        )
        yield under_test


def ids(body: dict) -> list[str]:  # type: ignore[type-arg]
    return [e["event_id"] for e in body["events"]]


async def test_openapi_needs_no_key(api: ApiUnderTest) -> None:
    response = await api.client.get("/openapi.json")
    assert response.status == 200
    doc = await response.json()
    assert doc["openapi"].startswith("3.") and "/v1/events" in doc["paths"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "API key is required"),
        ({"Authorization": "Basic abc"}, "Bearer"),
        ({"Authorization": "Bearer nonsense"}, "malformed"),
        ({"X-Api-Key": "cf_0123456789abcdef_" + "A" * 43}, "unknown API key"),
    ],
)
async def test_no_valid_key_is_401(
    api: ApiUnderTest, headers: dict[str, str], message: str
) -> None:
    response = await api.client.get("/v1/events", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = await response.json()
    assert body["error"]["code"] == "unauthorized" and message in body["error"]["message"]


async def test_x_api_key_header_works(api: ApiUnderTest) -> None:
    response = await api.client.get("/v1/events", headers={"X-Api-Key": api.keys["acme-admin"]})
    assert response.status == 200


async def test_admin_lists_the_tenant_user_lists_own(api: ApiUnderTest) -> None:
    status, body = await api.get("/v1/events")
    assert status == 200
    assert ids(body) == ["ev-acme-1", "ev-acme-2", "ev-acme-4", "ev-acme-5"]
    assert body["count"] == 4 and body["has_more"] is False and body["remaining"] == 0
    _, mine = await api.get("/v1/events", "acme-u2")
    assert ids(mine) == ["ev-acme-2"]
    _, theirs = await api.get("/v1/events", "globex-admin")
    assert ids(theirs) == ["ev-globex-3"]


async def test_rendered_event(api: ApiUnderTest) -> None:
    _, body = await api.get("/v1/events", limit=1)
    event = body["events"][0]
    assert event["current_payload"] == {"amount": 1, "api_key": "sha256:0badc0de", "tags": ["a"]}
    assert event["payload_changes"] == [
        {"op": "replace", "path": "/amount", "value": 1},
        {"op": "remove", "path": "/old"},
    ]
    assert event["field_changes"] == {"/amount": {"old": 0, "new": 1}}
    assert event["created_at"] == "2023-11-14T22:13:20.000001Z"
    assert event["position"] == {"partition": 0, "offset": 0}
    assert event["actor"]["api_key_fingerprint"] == "sha256:3f2a9c1e"


async def test_paging_with_cursor_and_counts(api: ApiUnderTest) -> None:
    _, first = await api.get("/v1/events", limit=3)
    assert first["count"] == 3 and first["has_more"] and first["remaining"] == 1
    _, second = await api.get("/v1/events", cursor=first["next_cursor"])
    assert ids(second) == ["ev-acme-5"] and not second["has_more"]
    api.add(0, change_event(6, created_us=T0 + 6))
    _, third = await api.get("/v1/events", cursor=second["next_cursor"])
    assert ids(third) == ["ev-acme-6"]


async def test_descending(api: ApiUnderTest) -> None:
    _, first = await api.get("/v1/events", limit=3, order="desc")
    assert ids(first) == ["ev-acme-5", "ev-acme-4", "ev-acme-2"]
    _, second = await api.get("/v1/events", cursor=first["next_cursor"])
    assert ids(second) == ["ev-acme-1"] and second["next_cursor"] is None


async def test_filters(api: ApiUnderTest) -> None:
    async def listed(**params: str) -> list[str]:
        status, body = await api.get("/v1/events", **params)
        assert status == 200, body
        return ids(body)

    assert await listed(event_type="expense_report:*") == ["ev-acme-1", "ev-acme-2", "ev-acme-4"]
    assert await listed(event_type="expense:updated") == ["ev-acme-5"]
    assert await listed(subject_type="expense_report", subject_id="2") == ["ev-acme-2"]
    assert await listed(user="u-2") == ["ev-acme-2"]
    assert await listed(criticality="1") == ["ev-acme-5"]
    assert await listed(code="10001,3") == ["ev-acme-5"]
    assert await listed(request_id="req-A") == ["ev-acme-1", "ev-acme-2"]
    start = "2023-11-14T22:13:20.000004Z"
    assert await listed(start=start) == ["ev-acme-4", "ev-acme-5"]
    assert await listed(end=start) == ["ev-acme-1", "ev-acme-2"]


async def test_a_cursor_carries_its_filters(api: ApiUnderTest) -> None:
    _, first = await api.get("/v1/events", event_type="expense_report:*", limit=1)
    _, alone = await api.get("/v1/events", cursor=first["next_cursor"])
    assert ids(alone) == ["ev-acme-2", "ev-acme-4"]
    status, body = await api.get("/v1/events", cursor=first["next_cursor"], event_type="x")
    assert status == 400 and "same filters" in body["error"]["message"]


async def test_a_cursor_from_another_tenant_or_user_is_400(api: ApiUnderTest) -> None:
    _, first = await api.get("/v1/events", limit=1)
    for label in ("globex-admin", "acme-u1"):
        status, body = await api.get("/v1/events", label, cursor=first["next_cursor"])
        assert status == 400 and "not valid for this API key" in body["error"]["message"]


async def test_user_keys_cannot_name_another_user(api: ApiUnderTest) -> None:
    status, body = await api.get("/v1/events", "acme-u1", user="u-2")
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, _ = await api.get("/v1/events", "acme-u1", user="u-1")
    assert status == 200


async def test_before_retention_is_410(api: ApiUnderTest) -> None:
    status, body = await api.get("/v1/events", start="2023-11-01T00:00:00Z")
    assert status == 410
    assert body["error"]["code"] == "gone" and "keeps 7 days" in body["error"]["message"]
    status, _ = await api.get("/v1/events", end="2023-11-01T00:00:00Z")
    assert status == 410


async def test_bad_parameters_are_400_with_a_message(api: ApiUnderTest) -> None:
    for params in ({"limit": "0"}, {"order": "up"}, {"start": "now"}, {"tenant": "globex"}):
        status, body = await api.get("/v1/events", **params)
        assert status == 400 and body["error"]["message"], params


async def test_fetch_one(api: ApiUnderTest) -> None:
    _, listing = await api.get("/v1/events", limit=1)
    change_id = listing["events"][0]["change_id"]
    status, event = await api.get(f"/v1/events/{change_id}")
    assert status == 200 and event["event_id"] == "ev-acme-1"
    assert (await api.get(f"/v1/events/{change_id}", "acme-u1"))[0] == 200
    for label in ("globex-admin", "acme-u2"):  # another tenant's, another user's: not found
        status, body = await api.get(f"/v1/events/{change_id}", label)
        assert status == 404 and body["error"]["code"] == "not_found"


async def test_events_of_a_request(api: ApiUnderTest) -> None:
    status, body = await api.get("/v1/requests/req-A/events")
    assert status == 200 and ids(body) == ["ev-acme-1", "ev-acme-2"] and body["count"] == 2
    assert ids((await api.get("/v1/requests/req-A/events", "acme-u2"))[1]) == ["ev-acme-2"]
    assert (await api.get("/v1/requests/req-A/events", "globex-admin"))[0] == 404


async def test_subject_state_and_history(api: ApiUnderTest) -> None:
    status, subject = await api.get("/v1/subjects/expense_report/1")
    assert status == 200
    assert subject["deleted"] is True and subject["state"] is None and subject["sequence"] == 2
    assert subject["latest_change"]["event_id"] == "ev-acme-4"
    status, alive = await api.get("/v1/subjects/expense_report/2")
    assert alive["state"] == {"amount": 2, "api_key": "sha256:0badc0de", "tags": ["a"]}
    status, body = await api.get("/v1/subjects/expense_report/1", "acme-u1")
    assert status == 403
    assert (await api.get("/v1/subjects/expense_report/2", "globex-admin"))[0] == 404
    status, history = await api.get("/v1/subjects/expense_report/1/history", limit=1)
    assert ids(history) == ["ev-acme-1"] and history["has_more"]
    _, rest = await api.get(
        "/v1/subjects/expense_report/1/history", after_sequence=history["next_after_sequence"]
    )
    assert ids(rest) == ["ev-acme-4"] and not rest["has_more"]
    assert (await api.get("/v1/subjects/expense_report/2/history", "globex-admin"))[0] == 404


async def test_latest_per_subject(api: ApiUnderTest) -> None:
    status, body = await api.get("/v1/subjects/latest")
    assert status == 200
    assert ids(body) == ["ev-acme-5", "ev-acme-4", "ev-acme-2"]
    assert body["meta"] == {"count": 3, "page_count": 1, "page_number": 1, "page_size": 100}
    _, typed = await api.get("/v1/subjects/latest", subject_type="expense_report", limit=1, page=2)
    assert ids(typed) == ["ev-acme-2"] and typed["meta"]["page_count"] == 2
    _, mine = await api.get("/v1/subjects/latest", "acme-u2")
    assert ids(mine) == ["ev-acme-2"]


async def test_unknown_endpoint_and_method(api: ApiUnderTest) -> None:
    status, body = await api.get("/v1/nothing/here")
    assert status == 404 and body["error"]["code"] == "not_found"
    response = await api.client.post("/v1/events", headers=api.auth("acme-admin"))
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_long_poll_reconnects_on_timeout(api: ApiUnderTest) -> None:
    _, listing = await api.get("/v1/events")
    status, body = await api.get("/v1/events/poll", cursor=listing["next_cursor"], timeout="0.2")
    assert status == 200 and body["message"] == "reconnect" and body["events"] == []
    assert body["next_cursor"]


async def test_long_poll_wakes_on_a_commit(api: ApiUnderTest) -> None:
    _, listing = await api.get("/v1/events")
    poll = asyncio.create_task(
        api.get("/v1/events/poll", cursor=listing["next_cursor"], timeout="30")
    )
    deadline = asyncio.get_running_loop().time() + 5
    while api.signals.waiting == 0:
        assert asyncio.get_running_loop().time() < deadline, "the poll never started waiting"
        await asyncio.sleep(0.01)
    api.add(1, change_event(7, tenant="globex"))  # another tenant: must not answer
    await asyncio.sleep(0.05)
    assert not poll.done()
    api.add(1, change_event(8, created_us=T0 + 8))
    status, body = await asyncio.wait_for(poll, 5)
    assert status == 200 and body["message"] == "new_change" and ids(body) == ["ev-acme-8"]


async def test_long_poll_of_a_user_ignores_other_users(api: ApiUnderTest) -> None:
    poll = asyncio.create_task(api.get("/v1/events/poll", "acme-u2", cursor="now", timeout="0.5"))
    await asyncio.sleep(0.1)
    api.add(0, change_event(9, user="u-1", created_us=T0 + 9))
    status, body = await poll
    assert body["message"] == "reconnect"


async def test_long_poll_needs_an_ascending_cursor(api: ApiUnderTest) -> None:
    _, desc = await api.get("/v1/events", order="desc", limit=1)
    status, body = await api.get("/v1/events/poll", cursor=desc["next_cursor"])
    assert status == 400 and "ascending" in body["error"]["message"]
