"""The /v1/webhooks endpoints on a real broker: admin only, tenant isolation, the address
guard at subscription and delivery time, bad input answered 4xx, secrets never shown twice."""

from __future__ import annotations

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from webhooks_harness import Receiver, change_event, eventually, fast_settings, webhook_api

from changefeed.config import Settings


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return fast_settings(settings)


async def test_user_keys_get_403_and_tenants_see_only_their_own(fast: Settings) -> None:
    acme = await Receiver().start()
    globex = await Receiver().start()
    try:
        async with webhook_api(fast) as api:
            status, answer = await api.call(
                "POST", "/v1/webhooks", "acme-u1", {"url": acme.url, "event_types": ["*"]}
            )
            assert status == 403 and answer["error"]["code"] == "forbidden"
            assert (await api.call("GET", "/v1/webhooks", "acme-u1"))[0] == 403
            assert (await api.call("GET", "/v1/webhooks/failed", "acme-u1"))[0] == 403

            # An admin key without the write scope reads, and changes nothing.
            status, answer = await api.call(
                "POST", "/v1/webhooks", "acme-reader", {"url": acme.url, "event_types": ["*"]}
            )
            assert status == 403 and "write scope" in answer["error"]["message"]
            assert (await api.call("GET", "/v1/webhooks", "acme-reader"))[0] == 200

            acme_sub = await api.subscribe(acme, "acme-admin")
            globex_sub = await api.subscribe(globex, "globex-admin")
            for method, path, body in (
                ("PATCH", f"/v1/webhooks/{acme_sub['id']}", {"paused": True}),
                ("DELETE", f"/v1/webhooks/{acme_sub['id']}", None),
                ("POST", "/v1/webhooks/failed/resume", {"subscription_id": acme_sub["id"]}),
            ):
                status, _ = await api.call(method, path, "acme-reader", body=body)
                assert status == 403, (method, path)
            status, shown = await api.call("GET", f"/v1/webhooks/{acme_sub['id']}", "acme-reader")
            assert status == 200 and shown["status"] == "active"
            # Another tenant's subscription is not found, whatever the verb.
            for method in ("GET", "PATCH", "DELETE"):
                status, _ = await api.call(
                    method, f"/v1/webhooks/{acme_sub['id']}", "globex-admin", body={"paused": True}
                )
                assert status == 404, method
            status, listing = await api.call("GET", "/v1/webhooks", "globex-admin")
            assert [w["id"] for w in listing["webhooks"]] == [globex_sub["id"]]

            acme_changes = [change_event(n, tenant="acme") for n in range(5)]
            globex_changes = [change_event(n, tenant="globex") for n in range(3)]
            api.publisher.publish(*acme_changes, *globex_changes)
            await eventually(
                lambda: len(acme.delivered) == 5 and len(globex.delivered) == 3, 30, "deliveries"
            )
            assert {a.body["tenant_id"] for a in acme.delivered} == {"acme"}
            assert {a.body["tenant_id"] for a in globex.delivered} == {"globex"}
            # Jobs of another tenant are neither listed nor resumable nor deletable.
            status, _ = await api.call(
                "POST",
                "/v1/webhooks/failed/resume",
                "globex-admin",
                body={"subscription_id": acme_sub["id"]},
            )
            assert status == 404
    finally:
        await acme.stop()
        await globex.stop()


async def test_guard_refuses_loopback_names_and_addresses_unless_allowed(
    settings: Settings,
) -> None:
    strict = fast_settings(settings, allow_networks=())
    receiver = await Receiver().start()
    try:
        async with webhook_api(strict) as api:
            for url, words in (
                (f"http://127.0.0.1:{receiver.port}/hook", "loopback"),
                ("http://169.254.169.254/latest/meta-data", "metadata"),
                ("http://[fd00:ec2::254]/", "metadata"),
                ("http://10.0.0.8/", "private"),
                ("http://100.64.0.1/", "carrier-grade NAT"),
                ("http://[::ffff:127.0.0.1]/", "loopback"),
                ("ftp://example.com/", "http and https"),
                ("http://user:pw@example.com/", "credentials"),
                ("https:///nohost", "host"),
            ):
                status, answer = await api.call(
                    "POST", "/v1/webhooks", body={"url": url, "event_types": ["*"]}
                )
                assert status == 400, url
                assert words in answer["error"]["message"], (url, answer)
            # A name is checked once resolved, at delivery: localhost is 127.0.0.1.
            sub = await api.subscribe_url(f"http://localhost:{receiver.port}/hook")
            api.publisher.publish(change_event(1))

            async def refused() -> bool:
                jobs = (await api.failed(subscription_id=sub["id"]))["jobs"]
                return bool(jobs and "address guard" in (jobs[0]["last_error"] or ""))

            await eventually(refused, 20, "the delivery to be refused by the guard")
            assert receiver.attempts == []
    finally:
        await receiver.stop()


async def test_dns_rebinding_is_refused_at_delivery(settings: Settings) -> None:
    """A name that resolved to a public address when subscribed, and to 127.0.0.1 when the
    worker connects: the guard checks the address it connects to."""
    strict = fast_settings(settings, allow_networks=())
    receiver = await Receiver().start()
    answers = {"hooks.example.com": ["93.184.215.14"]}

    async def resolve(host: str, port: int) -> list[str]:
        return answers[host]

    try:
        async with webhook_api(strict, resolve=resolve) as api:
            sub = await api.subscribe_url(f"http://hooks.example.com:{receiver.port}/hook")
            answers["hooks.example.com"] = ["127.0.0.1"]
            api.publisher.publish(change_event(1))

            async def refused() -> bool:
                jobs = (await api.failed(subscription_id=sub["id"]))["jobs"]
                return bool(jobs and "loopback" in (jobs[0]["last_error"] or ""))

            await eventually(refused, 20, "the rebound name to be refused")
            assert receiver.attempts == []
    finally:
        await receiver.stop()


async def test_bad_input_gets_4xx_with_a_message(fast: Settings) -> None:
    receiver = await Receiver().start()
    try:
        async with webhook_api(fast) as api:
            url = receiver.url
            cases = [
                ({"url": url}, 400, "event_types"),
                ({"event_types": ["*"]}, 400, "url"),
                ({"url": url, "event_types": []}, 400, "event_types"),
                ({"url": url, "event_types": ["*"], "tenant_id": "globex"}, 400, "unknown field"),
                ({"url": url, "event_types": ["\ud800"]}, 400, "control characters"),
                ({"url": url, "event_types": ["a\x00b"]}, 400, "control characters"),
                ({"url": url, "event_types": ["*"], "description": "x" * 70_000}, 413, "bytes"),
                ([1, 2], 400, "JSON object"),
            ]
            for body, status, words in cases:
                got, answer = await api.call("POST", "/v1/webhooks", body=body)
                assert got == status, (body if len(str(body)) < 200 else "big", answer)
                assert words in answer["error"]["message"]
            deep = "[" * 100_000 + "]" * 100_000
            async with api.session.post(
                api.base_url + "/v1/webhooks",
                data=deep,
                headers={"Authorization": f"Bearer {api.keys['acme-admin']}"},
            ) as response:
                assert response.status in (400, 413)
            for path in ("/v1/webhooks/wh_%2F..%2Fx", "/v1/webhooks/a%00b", "/v1/webhooks/nope"):
                async with api.session.get(
                    api.base_url + path,
                    headers={"Authorization": f"Bearer {api.keys['acme-admin']}"},
                ) as response:
                    assert response.status in (400, 404), path
                    assert "error" in await response.json()
            got, answer = await api.call("GET", "/v1/webhooks/failed", state="broken")
            assert got == 400 and "state" in answer["error"]["message"]
            got, answer = await api.call(
                "POST", "/v1/webhooks/failed/resume", body={"job_id": "a", "subscription_id": "b"}
            )
            assert got == 400
    finally:
        await receiver.stop()


async def test_secret_rotation_signs_with_both_during_the_overlap(fast: Settings) -> None:
    receiver = await Receiver().start()
    try:
        async with webhook_api(fast) as api:
            sub = await api.subscribe(receiver)
            old = sub["secret"]
            status, answer = await api.call(
                "PATCH", f"/v1/webhooks/{sub['id']}", body={"rotate_secret": True}
            )
            assert status == 200 and answer["secret"].startswith("whsec_")
            new = answer["secret"]
            assert new != old and len(answer["previous_secret_expires_at"]) == 1
            status, shown = await api.call("GET", f"/v1/webhooks/{sub['id']}")
            assert old not in str(shown) and new not in str(shown)
            receiver.secret = new
            api.publisher.publish(change_event(1))
            await eventually(lambda: receiver.delivered, 20, "a delivery")
            headers, raw = receiver.raw[0]
            Webhook(old).verify(raw, headers)  # both secrets verify during the overlap
            Webhook(new).verify(raw, headers)
            status, answer = await api.call(
                "PATCH",
                f"/v1/webhooks/{sub['id']}",
                body={"rotate_secret": True, "secret_overlap_s": 0},
            )
            assert status == 200 and answer["previous_secret_expires_at"] == []
            receiver.secret = answer["secret"]
            api.publisher.publish(change_event(2))
            await eventually(lambda: len(receiver.delivered) == 2, 20, "a second delivery")
            headers, raw = receiver.raw[-1]
            with pytest.raises(WebhookVerificationError):
                Webhook(new).verify(raw, headers)  # no overlap: the old one is gone at once
            assert receiver.bad_signatures == 0
    finally:
        await receiver.stop()
