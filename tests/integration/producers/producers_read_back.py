"""Reading back what the producers integration tests published (a helper, not a test)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from schemas.codec import default_codec


@dataclass(frozen=True)
class ReadAction:
    """One record of the actions topic, decoded."""

    partition: int
    offset: int
    key: bytes
    headers: dict[str, bytes]
    action: dict[str, Any]


def read_actions(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[ReadAction]], bool],
    timeout_s: float = 30.0,
) -> list[ReadAction]:
    """Every record of ``topic`` from the beginning (read_committed) until ``until`` holds."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[ReadAction] = []
        deadline = time.monotonic() + timeout_s
        codec = default_codec()
        while not until(records):
            assert time.monotonic() < deadline, f"only {len(records)} records within {timeout_s}s"
            for batch in consumer.poll(timeout_ms=500).values():
                records += [
                    ReadAction(
                        partition=r.partition,
                        offset=r.offset,
                        key=r.key,
                        headers=dict(r.headers),
                        action=codec.decode(r.value, "changefeed.ApiAction"),
                    )
                    for r in batch
                ]
        return records
    finally:
        consumer.close()
