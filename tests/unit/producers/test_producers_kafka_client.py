"""Producer plumbing: the remembering partitioner, error classification, forced close."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumberError,
)
from kafka.partitioner import DefaultPartitioner

from changefeed.errors import ConfigError
from producers.kafka_client import close_quietly, is_rejected_record, producer_config
from producers.partitioning import RememberingKeyPartitioner
from producers.publisher_options import PublisherOptions


class Cluster:
    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions

    def topics(self) -> set[str]:
        return set(self.partitions)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self.partitions.get(topic)
        return None if count is None else set(range(count))

    def available_partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions_for_topic(topic)


@given(key=st.binary(min_size=1, max_size=64), count=st.integers(min_value=1, max_value=64))
def test_the_partition_is_the_default_partitioners(key: bytes, count: int) -> None:
    cluster = Cluster({"t": count})
    remembering = RememberingKeyPartitioner()
    expected = DefaultPartitioner().partition("t", key, key, None, None, cluster)
    assert remembering.partition("t", key, key, None, None, cluster) == expected
    assert remembering.partition("t", key, key, None, None, cluster) == expected  # remembered


def test_more_partitions_are_hashed_afresh_and_the_memo_stays_bounded() -> None:
    partitioner = RememberingKeyPartitioner(max_keys=10)
    keys = [f"acme/expense/{n}".encode() for n in range(100)]
    for count in (2, 7):
        cluster = Cluster({"t": count})
        default = DefaultPartitioner()
        for key in keys:
            got = partitioner.partition("t", key, key, None, None, cluster)
            assert got == default.partition("t", key, key, None, None, cluster)
    assert len(partitioner._known) <= 10


def test_a_record_without_key_still_gets_a_partition() -> None:
    assert RememberingKeyPartitioner().partition(
        "t", None, None, b"v", b"v", Cluster({"t": 3})
    ) in {
        0,
        1,
        2,
    }


@pytest.mark.parametrize(
    ("error", "rejected"),
    [
        (MessageSizeTooLargeError(), True),
        (KafkaTimeoutError(), False),
        (KafkaConnectionError(), False),
        (NotLeaderForPartitionError(), False),
        (OutOfOrderSequenceNumberError(), False),
        (RuntimeError("closed"), False),
    ],
)
def test_only_errors_about_the_record_itself_are_final(error: Exception, rejected: bool) -> None:
    assert is_rejected_record(error) is rejected


def test_a_producer_that_cannot_flush_is_closed_forcefully() -> None:
    forced: list[bool] = []

    class Stuck:
        _sender = SimpleNamespace(force_close=lambda: forced.append(True))

        def close(self, timeout: float | None = None) -> None:
            raise KafkaTimeoutError("Timeout waiting for future")

    close_quietly(Stuck(), timeout_s=0)  # type: ignore[arg-type]
    assert forced == [True]


def test_producer_settings_are_idempotent_acks_all_and_declared_topics_only() -> None:
    config: dict[str, Any] = producer_config("h:1", PublisherOptions(compression="gzip"))
    assert (config["acks"], config["enable_idempotence"]) == ("all", True)
    assert config["compression_type"] == "gzip"
    assert config["allow_auto_create_topics"] is False
    assert isinstance(config["partitioner"], RememberingKeyPartitioner)


def test_publisher_options_refuse_what_kafka_python_would_refuse_later() -> None:
    with pytest.raises(ConfigError, match="compression"):
        PublisherOptions(compression="brotli")
    with pytest.raises(ConfigError, match="delivery_timeout_ms"):
        PublisherOptions(linger_ms=5, request_timeout_ms=5_000, delivery_timeout_ms=4_000)
    assert PublisherOptions().compression in {"lz4", "gzip"}
