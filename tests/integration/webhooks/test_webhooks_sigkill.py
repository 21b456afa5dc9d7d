"""SIGKILL the worker during delivery, several times, with thousands of matching changes:
every committed matching change is delivered at least once, each subject's changes arrive
(first time) in order, and the duplicates are counted and reported."""

from __future__ import annotations

import json
import random
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from webhooks_harness import ChangePublisher, Receiver, ThreadedReceiver, change_event, create_keys
from worker_process import WorkerProcess, wait_until

from changefeed.config import Settings

pytestmark = pytest.mark.slow

CHANGES = 3000
SUBJECTS = 150
KILLS = 3


def _post(worker: WorkerProcess, key: str, path: str, body: Any) -> dict[str, Any]:
    request = urllib.request.Request(
        worker.base_url + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        document: dict[str, Any] = json.loads(answer.read())
        return document


def test_sigkill_during_delivery_loses_nothing(settings: Settings, tmp_path: Path) -> None:
    keys = create_keys(settings)
    threaded = ThreadedReceiver(Receiver(flaky_share=0.05))
    worker = WorkerProcess(settings, tmp_path)
    worker.env.update(
        CHANGEFEED_WEBHOOK_ALLOW_NETWORKS="127.0.0.0/8",
        CHANGEFEED_WEBHOOK_RETRY_SCHEDULE="200ms,500ms,1s",
        CHANGEFEED_WEBHOOK_TIMEOUT_S="2",
    )
    publisher = ChangePublisher(settings)
    rng = random.Random(12)
    try:
        worker.start().wait_ready()
        sub = _post(
            worker,
            keys["acme-admin"],
            "/v1/webhooks",
            {"url": threaded.receiver.url, "event_types": ["expense_report:*"]},
        )
        threaded.receiver.secret = sub["secret"]
        versions: dict[str, int] = defaultdict(int)
        expected: dict[str, tuple[str, int]] = {}
        chunks = KILLS + 1
        for chunk in range(chunks):
            batch = []
            for _ in range(CHANGES // chunks):
                subject = f"s{rng.randrange(SUBJECTS)}"
                versions[subject] += 1
                change = change_event(versions[subject], subject_id=subject)
                expected[change["change_id"]] = (subject, versions[subject])
                batch.append(change)
                # Changes no subscription matches: another tenant, another event type.
                if rng.random() < 0.1:
                    batch.append(change_event(0, tenant="globex", subject_id=subject))
                    batch.append(change_event(0, subject_id=subject, event_type="invoice:paid"))
            publisher.publish(*batch)
            if chunk < KILLS:
                target = len(expected) - len(batch) // 2
                wait_until(
                    lambda t=target: len({a.webhook_id for a in threaded.snapshot()}) >= t,
                    120,
                    "deliveries to be under way",
                )
                worker.kill()
                worker.start().wait_ready()

        def all_delivered() -> bool:
            return set(expected) <= {a.webhook_id for a in threaded.snapshot()}

        wait_until(all_delivered, 180, f"all {len(expected)} matching changes delivered")
        arrivals = threaded.snapshot()
        ids = [a.webhook_id for a in arrivals]
        assert set(ids) == set(expected), "only matching changes are delivered"
        assert threaded.receiver.bad_signatures == 0
        first_seen: dict[str, list[int]] = defaultdict(list)
        seen: set[str] = set()
        for arrival in arrivals:
            if arrival.webhook_id in seen:
                continue
            seen.add(arrival.webhook_id)
            subject, version = expected[arrival.webhook_id]
            first_seen[subject].append(version)
        for subject, order in first_seen.items():
            assert order == sorted(order), f"{subject} arrived out of order: {order}"
        duplicates = len(ids) - len(set(ids))
        print(
            f"\n{len(expected)} matching changes, {KILLS} SIGKILLs: {len(ids)} deliveries, "
            f"{duplicates} duplicates ({duplicates / len(expected):.1%})"
        )
    finally:
        worker.kill()
        publisher.close()
        threaded.close()
