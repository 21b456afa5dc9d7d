"""A real worker process, a publisher of actions and a read_committed reader, for the tests.

The worker runs as ``python -m changefeed.cli worker`` with the test's settings in
``CHANGEFEED_*`` variables, exactly as an operator would start it, so a test can kill it
with SIGKILL and start it again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from worker_process import WorkerProcess, free_port, wait_until

from changefeed.config import Settings
from changefeed.topics import changelog_topic
from schemas.action_contract import subject_key
from schemas.codec import default_codec

__all__ = ["WorkerProcess", "free_port", "wait_until"]  # re-exported for the tests

T0 = 1_700_000_000_000_000  # micros


def action(
    event_id: str,
    verb: str = "update",
    payload: Any = None,
    *,
    subject_id: str = "1",
    version: int | None = None,
    occurred_at: int | None = None,
    request_id: str | None = None,
    tenant_id: str = "acme",
    subject_type: str = "expense_report",
) -> dict[str, Any]:
    """An ApiAction record; ``occurred_at`` defaults to follow ``version``."""
    return {
        "event_id": event_id,
        "request_id": request_id or f"req-{event_id}",
        "tenant_id": tenant_id,
        "action": verb,
        "event_type": f"{subject_type}:{verb}d",
        "subject_type": subject_type,
        "subject_id": subject_id,
        "version": version,
        "occurred_at": occurred_at if occurred_at is not None else T0 + (version or 0) * 1000,
        "actor": {"user_id": "u-1", "api_version": "v1"},
        "payload": None if payload is None else json.dumps(payload),
    }


def subject_key_of(record: dict[str, Any]) -> bytes:
    return subject_key(record["tenant_id"], record["subject_type"], record["subject_id"]).encode()


class ActionPublisher:
    """Publishes ApiAction records (or raw bytes) to ``actions``, keyed by subject."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic("actions")
        self.codec = default_codec()
        self.producer = KafkaProducer(
            bootstrap_servers=settings.bootstrap, acks="all", linger_ms=5, enable_idempotence=True
        )

    def publish(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            value = self.codec.encode("changefeed.ApiAction", record)
            self.producer.send(self.topic, key=subject_key_of(record), value=value)
        self.producer.flush()

    def publish_raw(self, key: bytes | None, value: bytes | None) -> tuple[int, int]:
        """Publish bytes as they are; returns (partition, offset)."""
        metadata = self.producer.send(self.topic, key=key, value=value).get(timeout=30)
        return metadata.partition, metadata.offset

    def close(self) -> None:
        self.producer.close()


@dataclass
class TopicReader:
    """Reads topics from the beginning with ``read_committed``, accumulating records."""

    settings: Settings
    topics: list[str]
    records: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            group_id=None,
        )
        partitions = []
        for topic in self.topics:
            ids = self.consumer.partitions_for_topic(topic) or set()
            partitions += [TopicPartition(topic, p) for p in sorted(ids)]
        self.consumer.assign(partitions)
        self.consumer.seek_to_beginning(*partitions)

    def poll(self) -> list[Any]:
        fresh = []
        for batch in self.consumer.poll(timeout_ms=200, max_records=5000).values():
            fresh.extend(batch)
        self.records.extend(fresh)
        return fresh

    def wait_for(self, count: int, timeout_s: float = 90.0) -> list[Any]:
        """Poll until at least ``count`` records arrived; fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while len(self.records) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s:.0f}s waiting for {count} records on "
                    f"{self.topics}, have {len(self.records)}"
                )
            self.poll()
        return self.records

    def settle(self, quiet_s: float = 1.5) -> list[Any]:
        """Read until nothing new arrived for ``quiet_s`` (to catch records beyond a count)."""
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            if self.poll():
                last = time.monotonic()
        return self.records

    def close(self) -> None:
        self.consumer.close()


def read_changelog(settings: Settings, table: str, timeout_s: float = 60.0) -> dict[bytes, bytes]:
    """A table as its committed changelog says: last value per key, tombstones applied."""
    topic = changelog_topic(settings, table)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
    )
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)  # read_committed: the last stable offsets
        table_view: dict[bytes, bytes] = {}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading changelog {topic}")
            for batch in consumer.poll(timeout_ms=200, max_records=10000).values():
                for record in batch:
                    if record.value is None:
                        table_view.pop(record.key, None)
                    else:
                        table_view[record.key] = record.value
        return table_view
    finally:
        consumer.close()


def decode_change(record: Any) -> dict[str, Any]:
    return default_codec().decode(record.value, "changefeed.ChangeEvent")


def decode_dead_letter(record: Any) -> dict[str, Any]:
    return default_codec().decode(record.value, "changefeed.DeadLetter")
