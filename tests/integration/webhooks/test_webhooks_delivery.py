"""Delivery on a real broker to real HTTP receivers on 127.0.0.1: signatures checked with the
``standardwebhooks`` package, retries, failed jobs, resume and delete, pausing."""

from __future__ import annotations

from typing import Any

import pytest
from webhooks_harness import (
    Receiver,
    WebhookApi,
    change_event,
    eventually,
    fast_settings,
    webhook_api,
)

from changefeed.config import Settings


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return fast_settings(settings)


async def _publish(api: WebhookApi, changes: list[dict[str, Any]]) -> None:
    api.publisher.publish(*changes)


async def test_changes_arrive_signed_as_the_events_api_renders_them(fast: Settings) -> None:
    receiver = await Receiver().start()
    try:
        async with webhook_api(fast) as api:
            sub = await api.subscribe(receiver, event_types=["expense_report:*"])
            assert sub["secret"].startswith("whsec_")
            changes = [change_event(n, subject_id=str(n % 3)) for n in range(30)]
            other = change_event(99, event_type="invoice:created")
            await _publish(api, [*changes, other])
            await eventually(lambda: len(receiver.delivered) >= 30, 30, "30 deliveries")
            assert receiver.bad_signatures == 0
            assert sorted(receiver.ids()) == sorted(c["change_id"] for c in changes)
            # The body is the events API's JSON of the change.
            assert await api.api.wait_ready(30.0)
            first = receiver.delivered[0]
            status, served = await api.call("GET", f"/v1/events/{first.webhook_id}")
            assert status == 200
            assert first.body == served
            assert first.body["actor"]["api_key_fingerprint"] == "sha256:3f2a9c1e"
            # Per-subject order.
            for subject in ("0", "1", "2"):
                versions = [
                    a.body["version"] for a in receiver.delivered if a.body["subject_id"] == subject
                ]
                assert versions == sorted(versions)
            # Listing shows no secret, ever.
            status, listing = await api.call("GET", "/v1/webhooks")
            assert status == 200 and listing["count"] == 1
            assert "secret" not in listing["webhooks"][0]
            assert sub["secret"] not in str(listing)
    finally:
        await receiver.stop()


async def test_retries_then_delivers_and_failing_subject_keeps_order(fast: Settings) -> None:
    receiver = await Receiver(fail_first=2).start()
    try:
        async with webhook_api(fast) as api:
            await api.subscribe(receiver)
            changes = [change_event(n, subject_id="s") for n in range(5)]
            await _publish(api, changes)
            await eventually(lambda: len(receiver.delivered) >= 5, 30, "5 deliveries")
            assert receiver.bad_signatures == 0
            assert receiver.ids() == [c["change_id"] for c in changes]
            # The first change was attempted three times (two failures), and every job is gone.
            first_id = changes[0]["change_id"]
            assert [a.status for a in receiver.attempts if a.webhook_id == first_id] == [
                500,
                500,
                204,
            ]
            await eventually(
                lambda: _no_jobs(api), 10, "the delivered jobs to be removed from the job topic"
            )
    finally:
        await receiver.stop()


async def _no_jobs(api: WebhookApi) -> bool:
    listing = await api.failed()
    return bool(listing["total"] == 0)


async def test_jobs_go_queued_then_quit_and_resume_delivers_them(fast: Settings) -> None:
    receiver = await Receiver(status=500).start()
    try:
        async with webhook_api(fast) as api:
            sub = await api.subscribe(receiver)
            changes = [change_event(n, subject_id=f"q{n}") for n in range(4)]
            await _publish(api, changes)

            async def queued() -> bool:
                return (await api.failed(state="queued"))["total"] == 4

            await eventually(queued, 20, "four queued jobs")
            listing = await api.failed(state="queued")
            job = listing["jobs"][0]
            assert job["subscription_id"] == sub["id"]
            assert job["failure_count"] >= 1 and job["last_status"] == 500
            assert {j["change_id"] for j in listing["jobs"]} == {c["change_id"] for c in changes}

            async def quit_() -> bool:
                return (await api.failed(state="quit"))["total"] == 4

            await eventually(quit_, 30, "the four jobs to quit")
            listing = await api.failed(subscription_id=sub["id"])
            assert listing["counts"] == {"queued": 0, "quit": 4}
            # 1 attempt + 3 retries each, then quit.
            assert all(j["failure_count"] == 4 for j in listing["jobs"])
            assert len(receiver.attempts) == 16

            receiver.status = 204
            status, answer = await api.call(
                "POST", "/v1/webhooks/failed/resume", body={"job_id": listing["jobs"][0]["id"]}
            )
            assert (status, answer) == (200, {"resumed": 1})
            await eventually(lambda: len(receiver.delivered) == 1, 20, "the resumed job")
            assert (await api.failed())["counts"] == {"queued": 0, "quit": 3}

            status, answer = await api.call(
                "POST", "/v1/webhooks/failed/resume", body={"subscription_id": sub["id"]}
            )
            assert (status, answer) == (200, {"resumed": 3})
            await eventually(lambda: len(receiver.delivered) == 4, 20, "every resumed job")
            assert sorted(receiver.ids()) == sorted(c["change_id"] for c in changes)
            await eventually(lambda: _no_jobs(api), 10, "no jobs left")
            assert receiver.bad_signatures == 0
    finally:
        await receiver.stop()


async def test_delete_removes_jobs_and_counts_match(fast: Settings) -> None:
    receiver = await Receiver(status=500).start()
    try:
        async with webhook_api(
            fast.with_(
                webhooks=fast.webhooks.__class__(
                    **{**fast.webhooks.__dict__, "retry_schedule_s": (0.2,)}
                )
            )
        ) as api:
            sub = await api.subscribe(receiver)
            await _publish(api, [change_event(n, subject_id=f"d{n}") for n in range(6)])

            async def six_quit() -> bool:
                return (await api.failed(state="quit"))["total"] == 6

            await eventually(six_quit, 20, "six quit jobs")
            # The same jobs in the failed-jobs API shared with scheduled events, by kind.
            status, shared = await api.call("GET", "/v1/failed-jobs", kind="webhook", state="quit")
            assert status == 200 and shared["total"] == 6
            assert all(j["job_id"].startswith("webhook:") for j in shared["failed_jobs"])
            assert {j["owner_id"] for j in shared["failed_jobs"]} == {sub["id"]}
            status, schedules = await api.call("GET", "/v1/failed-jobs", kind="schedule")
            assert status == 200 and schedules["total"] == 0
            page = await api.failed(state="quit", offset=2, count=3)
            assert page["count"] == 3 and page["total"] == 6 and page["has_more"]
            one = page["jobs"][0]["id"]
            status, answer = await api.call("DELETE", "/v1/webhooks/failed", body={"job_id": one})
            assert (status, answer) == (200, {"deleted": 1})
            assert (await api.failed())["total"] == 5
            status, answer = await api.call(
                "DELETE", "/v1/webhooks/failed", body={"subscription_id": sub["id"]}
            )
            assert (status, answer) == (200, {"deleted": 5})
            assert (await api.failed())["counts"] == {"queued": 0, "quit": 0}
    finally:
        await receiver.stop()


async def test_timeouts_are_failures_and_gone_pauses_the_subscription(fast: Settings) -> None:
    slow = await Receiver(delay_s=3.0).start()
    gone = await Receiver(status=410).start()
    try:
        async with webhook_api(fast) as api:
            slow_sub = await api.subscribe(slow)
            gone_sub = await api.subscribe(gone)
            await _publish(api, [change_event(1, subject_id="t")])

            async def gone_paused() -> bool:
                _, answer = await api.call("GET", f"/v1/webhooks/{gone_sub['id']}")
                return bool(answer["status"] == "paused")

            await eventually(gone_paused, 20, "the 410 subscription to be paused")
            _, answer = await api.call("GET", f"/v1/webhooks/{gone_sub['id']}")
            assert "410" in answer["paused_reason"]
            jobs = await api.failed(subscription_id=gone_sub["id"])
            assert jobs["counts"]["quit"] == 1 and jobs["jobs"][0]["last_status"] == 410

            async def timed_out() -> bool:
                jobs = (await api.failed(subscription_id=slow_sub["id"]))["jobs"]
                return bool(jobs and "timed out" in (jobs[0]["last_error"] or ""))

            await eventually(timed_out, 20, "a timed-out attempt recorded on a job")
            # While paused, the 410 endpoint gets nothing more.
            before = len(gone.attempts)
            await _publish(api, [change_event(2, subject_id="t2")])
            await eventually(lambda: len(slow.attempts) >= 2, 20, "the next change elsewhere")
            assert len(gone.attempts) == before
    finally:
        await slow.stop()
        await gone.stop()


async def test_endpoint_failing_for_the_pause_period_is_paused(settings: Settings) -> None:
    fast = fast_settings(settings, retry_schedule_s=(0.2,) * 20, pause_after_s=1.0)
    receiver = await Receiver(status=503).start()
    try:
        async with webhook_api(fast) as api:
            sub = await api.subscribe(receiver)
            await _publish(api, [change_event(1)])

            async def paused() -> bool:
                _, answer = await api.call("GET", f"/v1/webhooks/{sub['id']}")
                return bool(answer["status"] == "paused")

            await eventually(paused, 30, "the failing subscription to be paused")
            _, answer = await api.call("GET", f"/v1/webhooks/{sub['id']}")
            assert "without a success" in answer["paused_reason"]
            assert answer["failing_since"] is not None
            # Resuming the subscription resumes its queued job.
            receiver.status = 204
            status, _ = await api.call("PATCH", f"/v1/webhooks/{sub['id']}", body={"paused": False})
            assert status == 200
            await eventually(lambda: len(receiver.delivered) == 1, 20, "delivery after resume")
    finally:
        await receiver.stop()


async def test_a_slow_endpoint_does_not_hold_back_the_others(fast: Settings) -> None:
    slow = await Receiver(delay_s=3.0).start()
    quick = await Receiver().start()
    try:
        async with webhook_api(fast) as api:
            await api.subscribe(slow)
            await api.subscribe(quick)
            changes = [change_event(n, subject_id=f"x{n}") for n in range(100)]
            api.publisher.publish(*changes)
            await eventually(lambda: len(quick.delivered) == 100, 30, "the quick endpoint")
            # Everything reached the quick endpoint while the slow one (8 at a time, each
            # attempt timing out after 1 s) had answered at most a few of them.
            assert len(slow.attempts) < 50
            assert sorted(quick.ids()) == sorted(c["change_id"] for c in changes)
    finally:
        await slow.stop()
        await quick.stop()


async def test_redirects_are_not_followed(fast: Settings) -> None:
    target = await Receiver().start()
    redirecting = await Receiver(status=307).start()
    redirecting.location = target.url
    try:
        async with webhook_api(fast) as api:
            sub = await api.subscribe(redirecting)
            api.publisher.publish(change_event(1))

            async def failed() -> bool:
                jobs = (await api.failed(subscription_id=sub["id"]))["jobs"]
                return bool(jobs and jobs[0]["last_status"] == 307)

            await eventually(failed, 20, "the redirected attempt to fail")
            jobs = (await api.failed(subscription_id=sub["id"]))["jobs"]
            assert "redirects are not followed" in jobs[0]["last_error"]
            assert target.attempts == [] and redirecting.delivered == []
    finally:
        await target.stop()
        await redirecting.stop()
