"""One round of re-sending the spool: read a batch from its head, send, acknowledge a prefix.

Only the longest prefix of the batch that Kafka confirmed is acknowledged (removed from the
spool). The first record that failed for a reason worth retrying, and everything after it,
stays: the spool is rewound and the next round sends them again, in order. Records after
that point which did reach Kafka are sent twice; the processors dedupe on ``event_id``.

A record Kafka rejects for what it is (too large, invalid) can never be delivered; it is
logged, counted and acknowledged, so that one bad record cannot block every record behind
it forever.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from producers.kafka_client import is_rejected_record
from producers.publisher_options import PublisherOptions
from producers.spool import Spool, SpoolEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrainResult:
    """``empty``: the spool had nothing to read. ``retry_error``: why the round stopped short."""

    delivered: int = 0
    rejected: int = 0
    empty: bool = False
    retry_error: BaseException | None = None


def drain_once(spool: Spool, producer: KafkaProducer, options: PublisherOptions) -> DrainResult:
    """Re-send up to ``options.drain_batch_records`` records from the spool head."""
    entries = spool.read_batch(options.drain_batch_records)
    if not entries:
        return DrainResult(empty=True)
    futures, send_error = _send_all(producer, entries)
    try:
        producer.flush(timeout=options.delivery_timeout_ms / 1000 + 5.0)
    except Exception as exc:  # a flush timeout: the unfinished futures are judged below
        send_error = send_error or exc
    delivered, rejected, last_settled, retry_error = _settled_prefix(entries, futures)
    if last_settled is not None:
        spool.ack(last_settled)
    retry_error = retry_error or (send_error if len(futures) < len(entries) else None)
    if retry_error is not None:
        spool.rewind()
    return DrainResult(delivered=delivered, rejected=rejected, retry_error=retry_error)


def _send_all(
    producer: KafkaProducer, entries: list[SpoolEntry]
) -> tuple[list[FutureRecordMetadata], BaseException | None]:
    futures = []
    for entry in entries:
        record = entry.record
        try:
            futures.append(
                producer.send(
                    record.topic, value=record.value, key=record.key, headers=record.headers
                )
            )
        except Exception as exc:  # kafka-python raises assorted types from send()
            return futures, exc
    return futures, None


def _settled_prefix(
    entries: list[SpoolEntry], futures: list[FutureRecordMetadata]
) -> tuple[int, int, SpoolEntry | None, BaseException | None]:
    """``(delivered, rejected, last entry of the settled prefix, error that ended it)``."""
    delivered = rejected = 0
    last: SpoolEntry | None = None
    for entry, future in zip(entries, futures, strict=False):
        if not future.is_done:
            return delivered, rejected, last, TimeoutError("no acknowledgement in time")
        if future.failed():
            error = future.exception
            if not is_rejected_record(error):
                return delivered, rejected, last, error
            log.error("Kafka rejects spooled action %s for good: %r", entry.record.event_id, error)
            rejected += 1
        else:
            delivered += 1
        last = entry
    return delivered, rejected, last, None
