"""The spool against a real broker that goes away: stopped mid-stream, and absent at start.

A broker of its own (port 29192) is used, because these tests stop and restart it. It
reuses the jar cache of the default home, with a fresh state folder of this run's. The
tests share one test process (an xdist group), so only one of them owns that port at a
time.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from producers_read_back import ReadAction, read_actions

from changefeed.broker import LocalBroker
from changefeed.config import BrokerSettings, Settings
from changefeed.topics import TopicSpec, ensure_topics
from producers.delivery import DeliveryOutcome, DeliveryReport
from producers.pacing import Pacer
from producers.publisher import Publisher
from producers.publisher_options import PublisherOptions

pytestmark = pytest.mark.xdist_group("outage_broker")

OUTAGE_PORT = 29192
SUBJECTS = 30
# Short timeouts, so that an outage is noticed within seconds.
OPTIONS = PublisherOptions(
    max_block_ms=2_000,
    request_timeout_ms=2_000,
    delivery_timeout_ms=6_000,
    connect_timeout_s=2.0,
    drain_backoff_max_s=1.0,
)


@dataclass
class OutageBroker:
    broker: LocalBroker

    @property
    def bootstrap(self) -> str:
        return self.broker.settings.bootstrap

    def up(self) -> None:
        self.broker.start(timeout_s=180)

    def down(self) -> None:
        self.broker.stop()


@pytest.fixture(scope="module")
def outage_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OutageBroker]:
    settings = BrokerSettings(
        port=OUTAGE_PORT,
        controller_port=OUTAGE_PORT + 1,
        home=BrokerSettings().home,  # the shared jar cache
        state_root=tmp_path_factory.mktemp("outage-broker"),
    )
    handle = OutageBroker(LocalBroker(settings))
    try:
        yield handle
    finally:
        handle.down()


def outage_settings(bootstrap: str, tmp_path: Path) -> Settings:
    return Settings(
        bootstrap=bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        partitions=2,
        data_dir=tmp_path / "data",
    )


def create_actions_topic(settings: Settings) -> None:
    ensure_topics(settings, [TopicSpec(settings.topic("actions"), settings.partitions)])


def action(n: int) -> dict[str, Any]:
    """Action ``n``: subject ``n % SUBJECTS``, whose version grows with ``n``."""
    return {
        "event_id": str(uuid.uuid4()),
        "request_id": f"req-{n}",
        "tenant_id": "acme",
        "action": "update",
        "event_type": "expense:updated",
        "subject_type": "expense",
        "subject_id": str(n % SUBJECTS),
        "version": n // SUBJECTS + 1,
        "occurred_at": 1_700_000_000_000_000 + n,
        "actor": {"user_id": "u-1", "api_version": "v1"},
        "payload": f'{{"amount": {n}}}',
    }


def assert_complete_and_in_order(records: list[ReadAction], expected: set[str]) -> None:
    assert {r.action["event_id"] for r in records} == expected
    first_seen: dict[str, ReadAction] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        first_seen.setdefault(record.action["event_id"], record)
    by_subject: dict[bytes, list[int]] = {}
    for record in sorted(first_seen.values(), key=lambda r: (r.partition, r.offset)):
        by_subject.setdefault(record.key, []).append(record.action["version"])
    assert len(by_subject) == min(SUBJECTS, len(expected))
    for key, versions in by_subject.items():
        assert versions == sorted(versions), f"{key!r} out of order: {versions}"
        assert len(set(versions)) == len(versions)


class Outcomes:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(DeliveryOutcome, 0)

    def __call__(self, report: DeliveryReport) -> None:
        with self.lock:
            self.counts[report.outcome] += 1


def test_a_broker_stopped_mid_stream_loses_nothing_and_keeps_subject_order(
    outage_broker: OutageBroker, tmp_path: Path
) -> None:
    outage_broker.up()
    settings = outage_settings(outage_broker.bootstrap, tmp_path)
    create_actions_topic(settings)
    total = 3000
    actions = [action(n) for n in range(total)]
    outcomes = Outcomes()
    first_third_sent, broker_stopping, broker_stopped = (threading.Event() for _ in range(3))
    publisher = Publisher(settings, spool_dir=tmp_path / "spool", options=OPTIONS)
    errors: list[BaseException] = []

    def publish_stream() -> None:
        try:
            for n in range(total // 3):
                publisher.publish_async(actions[n], outcomes)
            if not publisher.flush(30):  # the first third reaches Kafka directly
                raise AssertionError("the first third was not settled")
            first_third_sent.set()
            broker_stopping.wait()
            pacer = Pacer(rate=500)  # spread the second third across the broker's shutdown
            for n in range(total // 3, 2 * total // 3):
                pacer.wait()
                publisher.publish_async(actions[n], outcomes)
            broker_stopped.wait()
            for n in range(2 * total // 3, total):
                publisher.publish_async(actions[n], outcomes)
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    stream = threading.Thread(target=publish_stream)
    stream.start()
    try:
        assert first_third_sent.wait(30)
        broker_stopping.set()
        outage_broker.down()
        broker_stopped.set()
        stream.join(60)
        assert not errors and not stream.is_alive()
        assert publisher.flush(30), "every action has an outcome: delivered or spooled"
        stats = publisher.stats()
        assert stats.spooling and stats.spool_pending > 0
        outage_broker.up()
        assert publisher.wait_until_drained(90)
    finally:
        broker_stopping.set()
        broker_stopped.set()
        publisher.close()
    stats = publisher.stats()
    assert outcomes.counts[DeliveryOutcome.FAILED] == 0
    assert outcomes.counts[DeliveryOutcome.SPOOLED] == stats.spooled > 0
    assert outcomes.counts[DeliveryOutcome.DELIVERED] == stats.delivered >= total // 3
    assert stats.delivered + stats.spooled == total
    assert stats.drained >= stats.spooled
    expected = {a["event_id"] for a in actions}
    records = read_actions(
        settings.bootstrap,
        settings.topic("actions"),
        until=lambda got: {r.action["event_id"] for r in got} >= expected,
        timeout_s=60,
    )
    assert_complete_and_in_order(records, expected)


def test_a_new_publisher_sends_what_a_previous_one_spooled(
    outage_broker: OutageBroker, tmp_path: Path
) -> None:
    outage_broker.up()
    settings = outage_settings(outage_broker.bootstrap, tmp_path)
    create_actions_topic(settings)
    outage_broker.down()
    actions = [action(n) for n in range(200)]
    with Publisher(settings, spool_dir=tmp_path / "spool", options=OPTIONS) as first:
        reports = [first.publish(a) for a in actions]
        assert {r.outcome for r in reports} == {DeliveryOutcome.SPOOLED}
    assert list((tmp_path / "spool").glob("segment-*.log")), "the spool outlives its publisher"
    outage_broker.up()
    with Publisher(settings, spool_dir=tmp_path / "spool", options=OPTIONS) as second:
        assert second.wait_until_drained(60)
        assert second.stats().drained == 200
    records = read_actions(
        settings.bootstrap, settings.topic("actions"), until=lambda got: len(got) >= 200
    )
    assert_complete_and_in_order(records, {a["event_id"] for a in actions})
    assert not list((tmp_path / "spool").glob("segment-*.log")), "a drained spool is empty"
