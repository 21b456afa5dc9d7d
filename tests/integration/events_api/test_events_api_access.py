"""Access matrix: every endpoint x (missing, bad, revoked key; other tenant; other user).

The rightful admin gets 200 from every cell of its row; everyone else gets 401, 403 or 404
(never another tenant's or user's event), and a cursor issued to the admin is a 400 in any
other hands. Every event in every 200 answer is checked to belong to the caller's scope.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from events_api_harness import (
    KEY_SPECS,
    RunningApi,
    change_event,
    create_keys,
    running_api,
)

from changefeed.config import BrokerSettings, Settings
from changefeed.topics import ensure_topics
from events_api.access.key_topic import KeyStore
from events_api.access.keys import Role, parse_key_id

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class World:
    api: RunningApi
    cursor: str  # issued to acme-admin
    change_id: str  # an acme event of u-1
    keys: dict[str, str]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, broker_settings: BrokerSettings
) -> AsyncIterator[World]:
    unique = uuid.uuid4().hex[:10]
    settings = Settings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"t{unique}.",
        app_id=f"cf-{unique}",
        partitions=2,
        data_dir=Path(tmp_path_factory.mktemp("access")),
        broker=broker_settings,
    )
    ensure_topics(settings)
    async with running_api(settings) as api:
        mine = change_event(1, user="u-1", subject_id="1", request_id="req-A")
        await api.publish(
            mine,
            change_event(2, user="u-2", subject_id="2", request_id="req-B"),
            change_event(3, tenant="globex", user="u-1", subject_id="9", request_id="req-G"),
        )
        keys = dict(api.keys)
        keys["missing"] = ""
        keys["garbage"] = "cf_0000000000000000_" + "x" * 43
        revoked = create_keys(settings, {"revoked": ("acme", Role.ADMIN, None)})["revoked"]
        KeyStore(settings).revoke(parse_key_id(revoked) or "")
        keys["revoked"] = revoked
        _, listing = await get(api, keys["acme-admin"], "/v1/events", {"limit": "1"})
        yield World(api, listing["next_cursor"], mine["change_id"], keys)


async def get(api: RunningApi, key: str, path: str, params: dict[str, str]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with api.session.get(api.base_url + path, params=params, headers=headers) as response:
        return response.status, await response.json()


Endpoint = Callable[[World], tuple[str, dict[str, str]]]
ENDPOINTS: dict[str, Endpoint] = {
    "list": lambda w: ("/v1/events", {}),
    "list-with-cursor": lambda w: ("/v1/events", {"cursor": w.cursor}),
    "list-user-filter": lambda w: ("/v1/events", {"user": "u-1"}),
    "fetch": lambda w: (f"/v1/events/{w.change_id}", {}),
    "request": lambda w: ("/v1/requests/req-A/events", {}),
    "subject": lambda w: ("/v1/subjects/expense_report/1", {}),
    "history": lambda w: ("/v1/subjects/expense_report/1/history", {}),
    "latest": lambda w: ("/v1/subjects/latest", {}),
    "poll": lambda w: ("/v1/events/poll", {"cursor": w.cursor, "timeout": "0.2"}),
}
COLUMNS = list(ENDPOINTS)
EXPECTED: dict[str, list[int]] = {
    # principal        list list+cur user  fetch req  subj hist latest poll
    "acme-admin":     [200, 200,     200,  200,  200, 200, 200, 200,   200],
    "globex-admin":   [200, 400,     200,  404,  404, 404, 404, 200,   400],
    "globex-u1":      [200, 400,     200,  404,  404, 403, 404, 200,   400],
    "acme-u2":        [200, 400,     403,  404,  404, 403, 404, 200,   400],
    "missing":        [401, 401,     401,  401,  401, 401, 401, 401,   401],
    "garbage":        [401, 401,     401,  401,  401, 401, 401, 401,   401],
    "revoked":        [401, 401,     401,  401,  401, 401, 401, 401,   401],
}  # fmt: skip
CASES = [
    pytest.param(who, endpoint, status, id=f"{endpoint}-{who}")
    for who, statuses in EXPECTED.items()
    for endpoint, status in zip(COLUMNS, statuses, strict=True)
]


def events_in(body: Any) -> list[dict[str, Any]]:
    if "events" in body:
        return list(body["events"])
    if "change_id" in body:
        return [body]
    return [body["latest_change"]] if body.get("latest_change") else []


@pytest.mark.parametrize(("who", "endpoint", "status"), CASES)
async def test_access_matrix(world: World, who: str, endpoint: str, status: int) -> None:
    path, params = ENDPOINTS[endpoint](world)
    key = world.keys[who]
    got, body = await get(world.api, key, path, params)
    if who == "revoked" and got != 401:
        # The revocation is applied by the worker's key follower; it lands within moments.
        deadline = asyncio.get_running_loop().time() + 10
        while got != 401 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
            got, body = await get(world.api, key, path, params)
    assert got == status, body
    if got != 200:
        assert set(body) == {"error"} and body["error"]["message"]
        return
    tenant, _, user = KEY_SPECS[who]
    for event in events_in(body):
        assert event["tenant_id"] == tenant, f"{who} saw another tenant's event"
        if user is not None:
            assert event["actor"]["user_id"] == user, f"{who} saw another user's event"
    if who != "acme-admin":
        assert world.change_id not in str(body)
