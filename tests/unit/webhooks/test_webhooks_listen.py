"""``changefeed webhooks listen``: verifies what arrives, prints a line per delivery."""

from __future__ import annotations

import io
import json
import time

from aiohttp.test_utils import TestClient, TestServer

from webhooks.listen import receiver_app
from webhooks.signing import new_secret, secret_key, signed_headers


async def test_the_listener_verifies_flags_duplicates_and_refuses_bad_signatures() -> None:
    secret = new_secret()
    out = io.StringIO()
    async with TestClient(TestServer(receiver_app([secret], out))) as client:
        body = json.dumps(
            {"event_type": "invoice:paid", "subject_type": "invoice", "subject_id": "7"}
        )
        headers = signed_headers([secret_key(secret)], "c1", int(time.time()), body.encode())
        for _ in range(2):
            answer = await client.post("/in", data=body, headers=headers)
            assert answer.status == 204
        forged = signed_headers([secret_key(new_secret())], "c2", int(time.time()), body.encode())
        answer = await client.post("/in", data=body, headers=forged)
        assert answer.status == 401
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["verified"] for line in lines] == [True, True, False]
    assert lines[0]["subject"] == "invoice/7" and "duplicate" not in lines[0]
    assert lines[1]["duplicate"] is True
    assert secret not in out.getvalue()
