"""The events API client against a real worker: paging, typed results and errors, and a
stream that survives a worker restart without skipping or repeating a change."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from consumers_harness import actions_for, create_keys, fresh_settings, publish_actions
from worker_process import WorkerProcess, wait_until

from changefeed.client import (
    AsyncClient,
    BadParameter,
    ChangeEvent,
    Client,
    FileCursorStore,
    Forbidden,
    Gone,
    NotFound,
    RetryPolicy,
    Unauthorized,
)
from changefeed.config import BrokerSettings, Settings
from events_api.access.keys import Role

SUBJECTS = [f"s{n}" for n in range(12)] + ["a/b%2Fc"]  # an id holding '/' and '%2F'
ROUNDS = 4
PATIENT = RetryPolicy(attempts=80, base_s=0.2, cap_s=2.0)  # outlasts a worker restart


@dataclass
class Deployment:
    settings: Settings
    worker: WorkerProcess
    keys: dict[str, str]
    change_ids: list[str]

    def client(self, label: str = "admin") -> Client:
        return Client(self.worker.base_url, self.keys[label], retry=PATIENT)


@pytest.fixture(scope="module")
def deployment(
    kafka_bootstrap: str, broker_settings: BrokerSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("client")
    settings = fresh_settings(kafka_bootstrap, broker_settings, tmp / "worker")
    keys = create_keys(
        settings,
        {
            "admin": ("acme", Role.ADMIN, None),
            "user": ("acme", Role.USER, "u-1"),
            "other": ("globex", Role.ADMIN, None),
        },
    )
    worker = WorkerProcess(settings, tmp).start()
    try:
        worker.wait_ready(180)
        ids = publish_actions(settings, actions_for(SUBJECTS, ROUNDS, run="base"))
        deployment = Deployment(settings, worker, keys, ids)
        with deployment.client() as client:
            wait_until(
                lambda: sum(1 for _ in client.events()) == len(ids), 120, "every change listed"
            )
        yield deployment
    finally:
        worker.stop()


def test_events_pages_through_every_change_once(deployment: Deployment) -> None:
    with deployment.client() as client:
        first = client.page(limit=7)
        assert len(first.events) == 7 and first.has_more and first.next_cursor
        listed = [e.change_id for e in client.events(limit=7)]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(deployment.change_ids)


def test_results_are_typed(deployment: Deployment) -> None:
    with deployment.client() as client:
        updates = list(client.events(event_type="expense_report:updated", subject_id="s3"))
        assert [e.version for e in updates] == [1, 2, 3]
        change = client.change(updates[-1].change_id)
        assert isinstance(change, ChangeEvent) and change == updates[-1]
        assert isinstance(change.created_at, datetime) and change.created_at.tzinfo is not None
        assert change.previous_payload["amount"] == 2 and change.current_payload["amount"] == 3
        assert change.field_changes["/amount"].old == 2
        assert change.field_changes["/amount"].new == 3
        assert any(op.path == "/amount" and op.value == 3 for op in change.payload_changes)
        assert change.position is not None and change.position.partition in (0, 1)

        assert {e.subject_id for e in client.request_changes("req-base-2")} == set(SUBJECTS)
        odd = client.subject("expense_report", "a/b%2Fc")
        assert odd.subject_id == "a/b%2Fc" and odd.state["amount"] == ROUNDS - 1
        assert odd.latest_change is not None and odd.latest_change.version == ROUNDS - 1
        history = list(client.history("expense_report", "s5", limit=2))
        assert [e.version for e in history] == list(range(ROUNDS))


def test_errors_are_typed(deployment: Deployment) -> None:
    stranger = Client(deployment.worker.base_url, "not-a-key", retry=PATIENT)
    with stranger, pytest.raises(Unauthorized):
        stranger.page()
    with deployment.client("user") as user, pytest.raises(Forbidden):
        user.subject("expense_report", "s1")
    with deployment.client("other") as other, pytest.raises(NotFound):
        other.change(deployment.change_ids[0])  # another tenant's change
    with deployment.client() as client:
        with pytest.raises(BadParameter) as bad:
            client.page(limit=0)
        assert bad.value.parameter == "limit"
        with pytest.raises(BadParameter) as bad:
            client.page(start="yesterday")
        assert bad.value.parameter == "start"
        with pytest.raises(BadParameter) as bad:
            client.page(cursor="v1.garbage.x")
        assert bad.value.parameter == "cursor"
        with pytest.raises(NotFound):
            client.change("no-such-change")
        month_ago = datetime.now(UTC) - timedelta(days=30)
        with pytest.raises(Gone) as gone:
            client.page(start=month_ago)
        horizon = gone.value.horizon
        assert horizon is not None
        expected = datetime.now(UTC) - timedelta(milliseconds=deployment.settings.retention_ms)
        assert abs((horizon - expected).total_seconds()) < 120


async def test_async_client_gives_the_same_answers(deployment: Deployment) -> None:
    async with AsyncClient(
        deployment.worker.base_url, deployment.keys["admin"], retry=PATIENT
    ) as client:
        listed = [e.change_id async for e in client.events(limit=9)]
        assert sorted(listed) == sorted(deployment.change_ids)
        history = [e.version async for e in client.history("expense_report", "s2", limit=3)]
        assert history == list(range(ROUNDS))
        with pytest.raises(BadParameter) as bad:
            await client.page(limit=5000)
        assert bad.value.parameter == "limit"
        stream = client.stream(await client.tip(), poll_timeout_s=2)
        expected = publish_actions(deployment.settings, actions_for(["async-1"], 3, run="aio"))
        got = [await asyncio.wait_for(anext(stream), 60) for _ in expected]
        await stream.aclose()
        assert [change.change_id for change, _ in got] == expected


def test_stream_survives_a_worker_restart(deployment: Deployment, tmp_path: Path) -> None:
    """Changes published before, during and after a restart arrive once each, in order per
    subject; a new stream resumed from the file store repeats nothing."""
    store = FileCursorStore(tmp_path / "feed.position")
    subjects = [f"live-{n}" for n in range(6)]
    runs = {
        run: actions_for(subjects, 2, first=first, run=run)
        for run, first in (("before", 0), ("during", 2), ("after", 4))
    }
    subject_of = {
        cid: a["subject_id"] for r in runs.values() for cid, a in zip(_ids(r), r, strict=True)
    }
    received: list[str] = []
    with deployment.client() as client:
        stream = client.stream("now", store=store, poll_timeout_s=2, limit=4)
        before = publish_actions(deployment.settings, runs["before"])
        while len(received) < len(before):
            received.append(next(stream)[0].change_id)
        deployment.worker.stop()
        during = publish_actions(deployment.settings, runs["during"])
        deployment.worker.start()
        while len(received) < len(before) + len(during):
            received.append(next(stream)[0].change_id)  # retries until the worker is back
        after = publish_actions(deployment.settings, runs["after"])
        published = before + during + after
        # stop in the middle of a poll answer (limit 4), saving the position of the last
        # change handled (a stream closed early saves nothing itself: at-least-once)
        position = ""
        while not position.startswith("cfpos1.") and len(received) < len(published) - 1:
            change, position = next(stream)
            received.append(change.change_id)
        stream.close()
        store.save(position)
        assert position.startswith("cfpos1."), "never stopped inside a poll answer"
    assert store.load() is not None
    with deployment.client() as client:
        resumed = client.stream(store=store, poll_timeout_s=2, limit=4)
        while len(received) < len(before) + len(during) + len(after):
            received.append(next(resumed)[0].change_id)
        resumed.close()
    assert len(received) == len(set(received)), "a change was repeated"
    assert sorted(received) == sorted(published), "a change was skipped"
    for subject in subjects:  # each subject's changes arrive in the order they were made
        assert [c for c in received if subject_of[c] == subject] == [
            c for c in published if subject_of[c] == subject
        ]
    deployment.worker.wait_ready(180)


def _ids(actions: list[dict[str, object]]) -> list[str]:
    from schemas.identity import change_id

    return [change_id(str(a["event_id"])) for a in actions]
