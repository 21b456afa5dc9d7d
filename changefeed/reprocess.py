"""``changefeed reprocess``: derive the changes again from the retained ``actions``.

For a data team that must rebuild ``changes`` after a redaction rule changed or a new
version of the processing logic shipped. It runs the processors' own per-action logic
(:class:`processors.pipeline.ActionPipeline`, the function the live worker calls) over the
``actions`` the broker still holds, with fresh state, and writes the changes to a fresh
topic. It never writes to a live topic, never joins the live consumer group, and never
touches the live tables or their changelogs:

* ``--to-topic`` must not be a project topic nor a changelog of the live app, and must be
  empty (it is created, with the partitions of ``actions``, when missing);
* ``--app-id`` must differ from the live app id; it names the consumer group under which
  the run commits the offsets it reached (never the live group), so a run is visible with
  the usual consumer-group tools;
* state lives in memory, per partition, as the live worker keeps it per partition.

**The window.** State must be right when the window opens, so every retained action of
each partition *before* ``--since`` is processed too, in offset order, and only folded into
state; the outcomes of actions whose record time is in ``[since, until)`` are written.
Actions after ``--until`` are not read. A subject whose history began before the oldest
retained action has lost its earlier states: its first retained update is diffed against
nothing (``previous_payload`` null), as the live worker would if it had started then.

**Equality.** Each change goes to the partition of its action, as the live worker sends it,
with the same key, headers and value, except ``created_at`` (the time it was derived).
For the same actions, logic and settings (``CHANGEFEED_SECRET`` and
``CHANGEFEED_REDACT_PATHS`` decide the masks), the changes of the window are the live
ones: same ids, sequence numbers, payloads and diffs. Dead letters are counted and reported,
not written (``actions.dlq`` is live).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from changefeed.config import Settings
from changefeed.errors import ChangefeedError
from changefeed.kafka.admin import BOOTSTRAP_TIMEOUT_S
from changefeed.progress import Progress, human_bytes
from changefeed.replay import read_window, topic_partitions
from changefeed.topics import TopicSpec, ensure_topics, project_topics
from processors.dead_letters import RawRecord
from processors.pipeline import ActionPipeline, Write
from schemas.codec import default_codec
from schemas.masking import Redactor


class ReprocessError(ChangefeedError):
    """The reprocessing run was refused (it would touch something live) or failed."""


@dataclass(frozen=True)
class ReprocessPlan:
    since: datetime
    until: datetime | None
    app_id: str
    target_topic: str

    def check(self, settings: Settings) -> None:
        """Refuse anything that would touch the live deployment."""
        if self.until is not None and self.until <= self.since:
            raise ReprocessError("--until must be after --since")
        if not self.app_id or self.app_id == settings.app_id:
            raise ReprocessError(
                f"--app-id must name a new app, not the live one ({settings.app_id!r})"
            )
        live = {spec.name for spec in project_topics(settings)}
        if self.target_topic in live or self.target_topic.startswith(f"{settings.app_id}-"):
            raise ReprocessError(
                f"--to-topic {self.target_topic!r} is a live topic; name a fresh topic"
            )


class PartitionState:
    """The tables of one partition, in memory (what the worker keeps in RocksDB)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, bytes], bytes] = {}

    def get(self, table: str, key: bytes) -> bytes | None:
        return self.entries.get((table, key))

    def apply(self, writes: list[Write]) -> None:
        for write in writes:
            if write.value is None:
                self.entries.pop((write.table, write.key), None)
            else:
                self.entries[(write.table, write.key)] = write.value


@dataclass
class ReprocessReport:
    actions: int = 0
    folded: int = 0
    written: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    seconds: float = 0.0

    def describe(self, plan: ReprocessPlan) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return (
            f"reprocessed {self.actions:,} actions ({self.folded:,} before --since folded "
            f"into state): {self.written:,} changes ({human_bytes(self.bytes)}) to "
            f"{plan.target_topic} in {self.seconds:.1f}s [window outcomes: {counts or 'none'}]"
        )


def pipeline_for(settings: Settings, clock: Callable[[], int] | None = None) -> ActionPipeline:
    """The pipeline the live worker builds (:func:`processors.app.create_app`)."""
    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    return ActionPipeline(
        codec=default_codec(),
        redactor=Redactor(settings.redact_paths, settings.derived_key("redact")),
        retention_ms=settings.retention_ms,
        source=settings.source,
        **options,
    )


def reprocess(
    settings: Settings, plan: ReprocessPlan, *, progress_stream: IO[str] | None = None
) -> ReprocessReport:
    plan.check(settings)
    began = time.monotonic()
    source = settings.topic("actions")
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=plan.app_id,
        bootstrap_timeout_ms=int(BOOTSTRAP_TIMEOUT_S * 1000),
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer: KafkaProducer | None = None
    try:
        partitions = topic_partitions(consumer, source)
        _fresh_target(settings, consumer, plan, len(partitions))
        producer = KafkaProducer(
            bootstrap_servers=settings.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=20,
            bootstrap_timeout_ms=int(BOOTSTRAP_TIMEOUT_S * 1000),
        )
        starts = consumer.beginning_offsets(partitions)
        ends = consumer.end_offsets(partitions)
        if plan.until is not None:
            until_ms = int(plan.until.timestamp() * 1000)
            found = consumer.offsets_for_times({tp: until_ms for tp in partitions})
            ends = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in partitions}
        since_ms = int(plan.since.timestamp() * 1000)
        report = _run(consumer, producer, plan, starts, ends, since_ms, settings, progress_stream)
        producer.flush()
        consumer.commit({tp: _offset_and_metadata(ends[tp]) for tp in partitions})
    except KafkaError as exc:
        raise ReprocessError(f"reprocessing {source} failed: {exc}") from exc
    finally:
        consumer.close()
        if producer is not None:
            producer.close()
    report.seconds = time.monotonic() - began
    return report


def _run(
    consumer: KafkaConsumer,
    producer: KafkaProducer,
    plan: ReprocessPlan,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    since_ms: int,
    settings: Settings,
    progress_stream: IO[str] | None,
) -> ReprocessReport:
    pipeline = pipeline_for(settings)
    states: dict[int, PartitionState] = {}
    report = ReprocessReport()
    progress = Progress(sum(ends[tp] - starts[tp] for tp in starts), progress_stream)
    for record in read_window(settings, starts, ends):
        raw = RawRecord(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
            key=record.key,
            value=record.value,
            headers=list(record.headers),
        )
        state = states.setdefault(record.partition, PartitionState())
        outcome = pipeline.process(raw, state)
        state.apply(outcome.writes)
        report.actions += 1
        if record.timestamp < since_ms:
            report.folded += 1
        else:
            report.outcomes[outcome.kind.value] = report.outcomes.get(outcome.kind.value, 0) + 1
            if outcome.publishes_change:
                producer.send(
                    plan.target_topic,
                    key=outcome.key,
                    value=outcome.value,
                    headers=list(outcome.headers),
                    partition=record.partition,
                )
                report.written += 1
                report.bytes += len(outcome.value or b"")
        if report.actions % 1000 == 0:
            progress.advance(report.actions, report.bytes)
    progress.finish()
    return report


def _fresh_target(
    settings: Settings, consumer: KafkaConsumer, plan: ReprocessPlan, partitions: int
) -> None:
    """Create the target topic like ``changes`` when missing; refuse one holding records."""
    found = consumer.partitions_for_topic(plan.target_topic)
    if not found:
        ensure_topics(settings, [TopicSpec(plan.target_topic, partitions)])
        return
    tps = [TopicPartition(plan.target_topic, p) for p in found]
    begin = consumer.beginning_offsets(tps)
    end = consumer.end_offsets(tps)
    if any(end[tp] > begin[tp] for tp in tps):
        raise ReprocessError(
            f"--to-topic {plan.target_topic} already holds records; name a fresh topic"
        )
    if len(found) != partitions:
        raise ReprocessError(
            f"--to-topic {plan.target_topic} has {len(found)} partitions, actions has "
            f"{partitions}; each change goes to its action's partition"
        )


def _offset_and_metadata(offset: int) -> Any:
    from kafka.structs import OffsetAndMetadata

    try:
        return OffsetAndMetadata(offset, "", -1)
    except TypeError:  # older kafka-python: (offset, metadata)
        return OffsetAndMetadata(offset, "")
