"""The kafka-python producer the publisher uses, and how its errors are read.

Kept apart from :mod:`producers.publisher` so the publisher's state machine reads without
kafka-python's configuration vocabulary, and so the benchmark builds its raw-bytes baseline
from exactly the same client settings.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaProducer
from kafka.errors import (
    InvalidRecordError,
    InvalidTimestampError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from changefeed.errors import ConfigError
from producers.errors import BrokerUnavailableError, TopicMissingError
from producers.partitioning import RememberingKeyPartitioner
from producers.publisher_options import PublisherOptions

log = logging.getLogger(__name__)

# Errors about the record itself: sending it again can never succeed.
REJECTED_RECORD_ERRORS = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
    InvalidTimestampError,
)


def producer_config(bootstrap: str, options: PublisherOptions) -> dict[str, Any]:
    """kafka-python settings: idempotent, acks from every in-sync replica, batched.

    A fresh partitioner per producer: it remembers keys, and producers do not share state.
    """
    return {
        "bootstrap_servers": bootstrap,
        "client_id": options.client_id,
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": options.compression,
        "linger_ms": options.linger_ms,
        "batch_size": options.batch_size,
        "max_block_ms": options.max_block_ms,
        "request_timeout_ms": options.request_timeout_ms,
        "delivery_timeout_ms": options.delivery_timeout_ms,
        "bootstrap_timeout_ms": int(options.connect_timeout_s * 1000),
        "allow_auto_create_topics": False,
        "partitioner": RememberingKeyPartitioner(),
    }


def connect_producer(bootstrap: str, topic: str, options: PublisherOptions) -> KafkaProducer:
    """A producer that has metadata for ``topic``, so ``send`` will not block on it.

    :class:`BrokerUnavailableError` when no broker answers within ``connect_timeout_s``;
    :class:`TopicMissingError` when one answers but has no such topic (auto-creation is off
    on purpose: the project declares its topics).
    """
    try:
        producer = KafkaProducer(**producer_config(bootstrap, options))
    except (KafkaError, OSError) as exc:
        raise BrokerUnavailableError(f"no Kafka broker answers at {bootstrap}: {exc}") from exc
    except (RuntimeError, ValueError) as exc:  # e.g. the compression library is missing
        raise ConfigError(f"the Kafka producer cannot be configured: {exc}") from exc
    try:
        producer.partitions_for(topic)
    except KafkaTimeoutError as exc:
        close_quietly(producer, timeout_s=0.5)
        raise TopicMissingError(
            f"the broker at {bootstrap} has no topic {topic} (run `changefeed topics ensure`)"
        ) from exc
    except (KafkaError, OSError) as exc:
        close_quietly(producer, timeout_s=0.5)
        raise BrokerUnavailableError(f"no metadata for {topic} from {bootstrap}: {exc}") from exc
    return producer


def close_quietly(producer: KafkaProducer, timeout_s: float) -> None:
    """Close ``producer``, abandoning whatever it still holds after ``timeout_s``.

    By the time this is called the publisher has accounted for every pending record
    (delivered, or moved to the spool), so abandoning them loses nothing. Two kafka-python
    (3.0.12) behaviours make this more than ``close()``: ``close`` raises, without closing,
    when its final flush times out; and an idempotent producer whose batches expired while
    no broker answered can lose its producer id and then never expire the rest nor recover.
    Such a producer is stopped by asking its sender thread to close forcefully, which fails
    every pending future: the one place this project reaches into kafka-python's internals,
    guarded so that a version without them is merely left to its daemon thread.
    """
    try:
        producer.close(timeout=timeout_s)
        return
    except (KafkaError, OSError) as exc:
        log.debug("closing the Kafka producer: %s; closing it forcefully", exc)
    sender = getattr(producer, "_sender", None)
    force_close = getattr(sender, "force_close", None)
    if callable(force_close):
        force_close()


def is_rejected_record(error: BaseException) -> bool:
    """True when ``error`` says the record can never be accepted, so retrying is pointless.

    Everything else (timeouts, lost connections, a closed producer, leader changes, producer
    epoch fencing after a broker restart) is worth another try from the spool.
    """
    return isinstance(error, REJECTED_RECORD_ERRORS)
