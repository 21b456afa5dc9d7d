"""The publisher's state machine, against a stand-in producer whose acknowledgements the test
controls: spool order across a failure, rejection, start without a broker, close, restart.

The real-broker behaviour (broker stopped mid-stream) is in the integration tests; here the
point is to force every interleaving the sender thread could produce, deterministically.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.future import Future

from changefeed.config import Settings
from producers.delivery import DeliveryOutcome, DeliveryReport
from producers.envelope import ActionEncoder
from producers.errors import (
    BrokerUnavailableError,
    InvalidActionError,
    PublisherClosedError,
    PublishError,
    SpoolError,
    SpoolLockedError,
    TopicMissingError,
)
from producers.publisher import Publisher
from producers.publisher_options import PublisherOptions
from producers.spool import Spool
from schemas.cloudevents import cloudevent_headers
from schemas.codec import default_codec

OPTIONS = PublisherOptions(drain_backoff_max_s=0.05, fsync_interval_s=0.05, connect_timeout_s=0.1)


class FakeBroker:
    """Stands in for Kafka. ``manual``: acknowledgements wait for the test to give them."""

    def __init__(self, *, up: bool = True, manual: bool = False) -> None:
        self.up = up
        self.manual = manual
        self.topic_exists = True
        self.log: list[str] = []  # event ids in the order the broker accepted them
        self.producers: list[FakeProducer] = []
        self.lock = threading.Lock()

    def factory(self, bootstrap: str, topic: str, options: PublisherOptions) -> Any:
        if not self.up:
            raise BrokerUnavailableError("fake broker is down")
        if not self.topic_exists:
            raise TopicMissingError(f"no topic {topic}")
        producer = FakeProducer(self)
        self.producers.append(producer)
        return producer


class FakeProducer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.sent: list[tuple[str, Future]] = []

    def send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> Future:
        if len(value) > 10_000:
            raise MessageSizeTooLargeError("too large")
        event_id = dict(headers)["ce_id"].decode()
        future = Future()
        self.sent.append((event_id, future))
        if not self.broker.manual and self.broker.up:
            self._accept(event_id, future)
        return future

    def flush(self, timeout: float | None = None) -> None:
        if self.broker.manual:
            return
        for event_id, future in self.sent:
            if not future.is_done:
                if self.broker.up:
                    self._accept(event_id, future)
                else:
                    future.failure(KafkaTimeoutError("expired"))

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)

    def deliver(self, index: int) -> None:
        event_id, future = self.sent[index]
        self._accept(event_id, future)

    def fail(self, index: int, error: BaseException) -> None:
        self.sent[index][1].failure(error)

    def _accept(self, event_id: str, future: Future) -> None:
        with self.broker.lock:
            self.broker.log.append(event_id)
            offset = len(self.broker.log) - 1
        future.success(SimpleNamespace(partition=0, offset=offset))


def action(n: int, **changes: Any) -> dict[str, Any]:
    return {
        "event_id": f"ev-{n}",
        "request_id": "req",
        "tenant_id": "acme",
        "action": "update",
        "event_type": "expense:updated",
        "subject_type": "expense",
        "subject_id": "1",
        "version": n,
        "occurred_at": 1_700_000_000_000_000 + n,
        "actor": {"user_id": "u", "api_version": "v1"},
        "payload": '{"amount": 1}',
        **changes,
    }


class Reports:
    def __init__(self) -> None:
        self.by_event: dict[str, DeliveryReport] = {}
        self.lock = threading.Lock()

    def __call__(self, report: DeliveryReport) -> None:
        with self.lock:
            assert report.event_id not in self.by_event, "one report per action"
            self.by_event[report.event_id] = report

    def outcomes(self) -> dict[str, DeliveryOutcome]:
        with self.lock:
            return {k: r.outcome for k, r in self.by_event.items()}


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(topic_prefix="unit.", data_dir=tmp_path, source="/unit")


def make_publisher(settings: Settings, tmp_path: Path, broker: FakeBroker) -> Publisher:
    return Publisher(
        settings, spool_dir=tmp_path / "spool", options=OPTIONS, producer_factory=broker.factory
    )


def test_delivered_report_names_partition_and_offset(settings: Settings, tmp_path: Path) -> None:
    broker = FakeBroker()
    with make_publisher(settings, tmp_path, broker) as publisher:
        report = publisher.publish(action(1))
    assert report.outcome is DeliveryOutcome.DELIVERED
    assert (report.event_id, report.topic, report.partition, report.offset) == (
        "ev-1",
        "unit.actions",
        0,
        0,
    )
    assert broker.log == ["ev-1"]


def test_the_record_carries_key_cloudevents_headers_and_avro_value(
    settings: Settings, tmp_path: Path
) -> None:
    sent: list[dict[str, Any]] = []

    class Capturing(FakeProducer):
        def send(self, topic: str, value: bytes, key: bytes, headers: Any) -> Future:
            sent.append({"topic": topic, "key": key, "value": value, "headers": dict(headers)})
            return super().send(topic, value, key, headers)

    broker = FakeBroker()
    with Publisher(
        settings,
        spool_dir=tmp_path / "spool",
        options=OPTIONS,
        producer_factory=lambda *_: Capturing(broker),
    ) as publisher:
        publisher.publish(action(7, source=""))
    [record] = sent
    assert record["key"] == b"acme/expense/1"
    assert record["headers"]["ce_id"] == b"ev-7"
    assert record["headers"]["ce_type"] == b"expense:updated"
    assert record["headers"]["ce_subject"] == b"expense/1"
    assert record["headers"]["ce_source"] == b"/unit"  # filled from settings when empty
    assert record["headers"]["ce_time"] == b"2023-11-14T22:13:20.000007Z"
    assert record["headers"]["content-type"] == b"application/avro"
    decoded = default_codec().decode(record["value"], "changefeed.ApiAction")
    assert (decoded["event_id"], decoded["version"], decoded["source"]) == ("ev-7", 7, "/unit")


def test_an_invalid_action_raises_at_once_and_is_never_spooled(
    settings: Settings, tmp_path: Path
) -> None:
    broker = FakeBroker(up=False)
    with make_publisher(settings, tmp_path, broker) as publisher:
        with pytest.raises(InvalidActionError, match="action"):
            publisher.publish_async(action(1, action="upsert"))
        with pytest.raises(InvalidActionError):
            publisher.publish_async(action(2, subject_id=""))
        with pytest.raises(InvalidActionError):
            publisher.publish_async(action(3, event_id=""))
        assert publisher.stats().spool_pending == 0


def test_failed_deliveries_reach_the_spool_in_publish_order(
    settings: Settings, tmp_path: Path
) -> None:
    broker = FakeBroker(manual=True)
    reports = Reports()
    publisher = make_publisher(settings, tmp_path, broker)
    for n in (1, 2, 3):
        publisher.publish_async(action(n), reports)
    producer = broker.producers[0]
    producer.fail(1, KafkaTimeoutError("expired"))  # ev-2 fails first, ev-1 still pending
    publisher.publish_async(action(4), reports)
    assert publisher.stats().spool_pending == 0, "nothing may be spooled ahead of ev-1"
    producer.deliver(2)  # ev-3 succeeds
    producer.fail(3, KafkaTimeoutError("expired"))  # ev-4 fails
    broker.manual, broker.up = False, False
    producer.fail(0, KafkaTimeoutError("expired"))  # ev-1 settles: 1, 2, 4 are spooled
    wait_for(lambda: len(reports.by_event) == 4)
    assert reports.outcomes() == {
        "ev-1": DeliveryOutcome.SPOOLED,
        "ev-2": DeliveryOutcome.SPOOLED,
        "ev-3": DeliveryOutcome.DELIVERED,
        "ev-4": DeliveryOutcome.SPOOLED,
    }
    assert publisher.stats().spooling
    broker.up = True
    assert publisher.wait_until_drained(60)
    assert broker.log == ["ev-3", "ev-1", "ev-2", "ev-4"]
    publisher.publish(action(5))
    assert broker.log[-1] == "ev-5"
    stats = publisher.stats()
    assert (stats.spooled, stats.drained, stats.spool_pending, stats.spooling) == (3, 3, 0, False)
    publisher.close()


def test_while_spooling_new_actions_queue_behind_the_spool(
    settings: Settings, tmp_path: Path
) -> None:
    broker = FakeBroker(up=False)
    reports = Reports()
    with make_publisher(settings, tmp_path, broker) as publisher:
        for n in range(1, 51):
            publisher.publish_async(action(n), reports)
        assert set(reports.outcomes().values()) == {DeliveryOutcome.SPOOLED}
        assert publisher.stats().spool_pending == 50
        broker.up = True
        assert publisher.wait_until_drained(60)
    assert broker.log == [f"ev-{n}" for n in range(1, 51)]


def test_a_publisher_started_without_a_broker_spools_and_publish_returns_spooled(
    settings: Settings, tmp_path: Path
) -> None:
    broker = FakeBroker(up=False)
    with make_publisher(settings, tmp_path, broker) as publisher:
        report = publisher.publish(action(1))
        assert report.outcome is DeliveryOutcome.SPOOLED and report.durable
        assert publisher.flush(1)  # spooled counts as settled
        assert not publisher.wait_until_drained(0.2)


def test_a_spool_left_by_a_previous_publisher_is_sent_first(
    settings: Settings, tmp_path: Path
) -> None:
    down = FakeBroker(up=False)
    with make_publisher(settings, tmp_path, down) as first:
        for n in (1, 2, 3):
            first.publish(action(n))
    broker = FakeBroker()
    with make_publisher(settings, tmp_path, broker) as second:
        # A non-empty spool is drained before anything is published directly (whether the
        # drain has already finished here is a race, so only the order is asserted).
        second.publish_async(action(4))
        assert second.wait_until_drained(60)
    assert broker.log == ["ev-1", "ev-2", "ev-3", "ev-4"]


def test_close_spools_what_is_still_in_flight(settings: Settings, tmp_path: Path) -> None:
    broker = FakeBroker(manual=True)
    reports = Reports()
    publisher = make_publisher(settings, tmp_path, broker)
    for n in (1, 2):
        publisher.publish_async(action(n), reports)
    publisher.close(timeout_s=0.2)
    assert reports.outcomes() == {"ev-1": DeliveryOutcome.SPOOLED, "ev-2": DeliveryOutcome.SPOOLED}
    broker.producers[0].deliver(0)  # a late acknowledgement after close changes nothing
    assert len(reports.by_event) == 2
    with Spool(tmp_path / "spool") as spool:
        assert [e.record.event_id for e in spool.read_batch(10)] == ["ev-1", "ev-2"]
    with pytest.raises(PublisherClosedError):
        publisher.publish_async(action(3))


def test_a_rejected_record_fails_without_being_spooled(settings: Settings, tmp_path: Path) -> None:
    broker = FakeBroker()
    with make_publisher(settings, tmp_path, broker) as publisher:
        with pytest.raises(PublishError, match="too large"):
            publisher.publish(action(1, payload='{"notes": "%s"}' % ("x" * 20_000)))
        stats = publisher.stats()
        assert (stats.failed, stats.spool_pending, stats.spooling) == (1, 0, False)
        assert publisher.publish(action(2)).outcome is DeliveryOutcome.DELIVERED


def test_publish_raises_when_it_can_neither_deliver_nor_spool(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = FakeBroker(up=False)
    with make_publisher(settings, tmp_path, broker) as publisher:

        def broken_append(record: Any) -> None:
            raise SpoolError("disk full")

        monkeypatch.setattr(publisher._spool, "append", broken_append)
        with pytest.raises(PublishError, match="disk full"):
            publisher.publish(action(1))


def test_a_missing_topic_is_an_error_at_construction_and_frees_the_spool(
    settings: Settings, tmp_path: Path
) -> None:
    broker = FakeBroker()
    broker.topic_exists = False
    with pytest.raises(TopicMissingError):
        make_publisher(settings, tmp_path, broker)
    Spool(tmp_path / "spool").close()  # the lock was released


def test_two_publishers_cannot_share_a_spool(settings: Settings, tmp_path: Path) -> None:
    with make_publisher(settings, tmp_path, FakeBroker()), pytest.raises(SpoolLockedError):
        make_publisher(settings, tmp_path, FakeBroker())


def test_a_raising_callback_does_not_disturb_the_publisher(
    settings: Settings, tmp_path: Path
) -> None:
    def explode(report: DeliveryReport) -> None:
        raise RuntimeError("callback bug")

    with make_publisher(settings, tmp_path, FakeBroker()) as publisher:
        publisher.publish_async(action(1), explode)
        assert publisher.publish(action(2)).outcome is DeliveryOutcome.DELIVERED
        assert publisher.stats().delivered == 2


def test_concurrent_publishers_threads_lose_nothing_across_an_outage(
    settings: Settings, tmp_path: Path
) -> None:
    broker = FakeBroker()
    reports = Reports()
    with make_publisher(settings, tmp_path, broker) as publisher:

        def publish_range(start: int) -> None:
            for n in range(start, start + 300):
                publisher.publish_async(action(n), reports)

        threads = [threading.Thread(target=publish_range, args=(k * 1000,)) for k in range(4)]
        for thread in threads:
            thread.start()
        broker.up = False
        for producer in broker.producers:
            producer.flush()
        broker.up = True
        for thread in threads:
            thread.join()
        assert publisher.flush(5)
        assert publisher.wait_until_drained(60)
    wait_for(lambda: len(reports.by_event) == 1200)
    assert set(broker.log) == {f"ev-{k * 1000 + n}" for k in range(4) for n in range(300)}
    for k in range(4):  # each thread's actions arrive in its order (first occurrences)
        mine = [int(e[3:]) for e in dict.fromkeys(broker.log) if int(e[3:]) // 1000 == k]
        assert mine == sorted(mine)


@pytest.mark.parametrize(
    "occurred_at",
    [1_700_000_000_000_007, datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC)],
)
def test_envelope_headers_are_exactly_the_cloudevents_binding(occurred_at: Any) -> None:
    encoder = ActionEncoder("t", default_codec(), "/default")
    for source in ("", "/explicit"):
        record = encoder.encode(action(3, occurred_at=occurred_at, source=source))
        assert record.headers == cloudevent_headers(
            id="ev-3",
            type="expense:updated",
            source=source or "/default",
            subject="expense/1",
            time=occurred_at,
        )
