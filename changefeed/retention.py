"""``changefeed retention``: how far back each project topic reaches, and how far it may.

For every project topic: the time of its oldest record still held, of its newest, the
records it holds (end minus start offsets, transaction markers included, so an upper
bound), and its ``retention.ms`` and ``cleanup.policy``. That is how far back a replay, an
export, a reprocess or a listing of the events API can reach.

Oldest: the broker's answer to "first offset at or after time 0" per partition, which
carries that record's timestamp. Newest: the last few records of each partition are read
(``read_uncommitted``, since only timestamps are looked at), widening the look-back when
the tail is only transaction markers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from changefeed.config import Settings
from changefeed.errors import ChangefeedError
from changefeed.kafka.admin import BOOTSTRAP_TIMEOUT_S
from changefeed.topics import describe_topics, project_topics

TAIL_LOOKBACKS = (8, 64, 1024)
TAIL_READ_S = 10.0


@dataclass(frozen=True)
class TopicExtent:
    topic: str
    partitions: int
    records: int
    oldest: datetime | None
    newest: datetime | None
    retention_ms: int | None
    cleanup: str | None

    def as_json(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "partitions": self.partitions,
            "records": self.records,
            "oldest": self.oldest.isoformat() if self.oldest else None,
            "newest": self.newest.isoformat() if self.newest else None,
            "retention.ms": self.retention_ms,
            "cleanup.policy": self.cleanup,
        }


def describe_retention(ms: int | None) -> str:
    if ms is None:
        return "?"
    if ms < 0:
        return "forever"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def format_table(extents: list[TopicExtent]) -> list[str]:
    """Aligned text lines, a header first."""
    rows = [("topic", "partitions", "records", "oldest", "newest", "retention", "cleanup")]
    for e in extents:
        rows.append(
            (
                e.topic,
                str(e.partitions),
                f"{e.records:,}",
                _time(e.oldest),
                _time(e.newest),
                describe_retention(e.retention_ms),
                e.cleanup or "?",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "(empty)"


def topic_extents(settings: Settings, names: list[str] | None = None) -> list[TopicExtent]:
    names = names or [t.name for t in project_topics(settings)]
    described = describe_topics(settings, names)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_uncommitted",
        bootstrap_timeout_ms=int(BOOTSTRAP_TIMEOUT_S * 1000),
    )
    try:
        out = []
        for name in names:
            configs = described[name]["configs"]
            assert isinstance(configs, dict)
            retention = configs.get("retention.ms")
            out.append(_extent(consumer, name, retention, configs.get("cleanup.policy")))
        return out
    except KafkaError as exc:
        raise ChangefeedError(f"reading the topics' extents failed: {exc}") from exc
    finally:
        consumer.close()


def _extent(
    consumer: KafkaConsumer, name: str, retention: str | None, cleanup: str | None
) -> TopicExtent:
    tps = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
    begin = consumer.beginning_offsets(tps)
    end = consumer.end_offsets(tps)
    held = [tp for tp in tps if end[tp] > begin[tp]]
    oldest_ms = []
    if held:
        for found in consumer.offsets_for_times({tp: 0 for tp in held}).values():
            if found is not None and found.timestamp is not None and found.timestamp >= 0:
                oldest_ms.append(found.timestamp)
    newest_ms = [ms for tp in held if (ms := _newest_ms(consumer, tp, begin[tp], end[tp]))]
    return TopicExtent(
        topic=name,
        partitions=len(tps),
        records=sum(end[tp] - begin[tp] for tp in tps),
        oldest=_moment(min(oldest_ms)) if oldest_ms else None,
        newest=_moment(max(newest_ms)) if newest_ms else None,
        retention_ms=int(retention) if retention is not None else None,
        cleanup=cleanup,
    )


def _newest_ms(consumer: KafkaConsumer, tp: TopicPartition, begin: int, end: int) -> int | None:
    consumer.assign([tp])
    for lookback in TAIL_LOOKBACKS:
        consumer.seek(tp, max(begin, end - lookback))
        newest: int | None = None
        deadline = time.monotonic() + TAIL_READ_S
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    newest = max(newest or 0, record.timestamp)
        if newest is not None or end - lookback <= begin:
            return newest
    return None


def _moment(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
