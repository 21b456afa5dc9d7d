"""Export rates of ``changefeed replay --output``: Avro container files and JSON lines,
as ratios to a raw read of the same partitions.

Run ``python bench/bench_export.py --bootstrap 127.0.0.1:9092 --records 200000``. It fills
a fresh ``changes`` topic (4 partitions) with realistic change events (the ChangeEvent of
``bench_codec.py``, ~1 KiB each, every record with its own ids), then times, over the
same partitions and bounds, each in a fresh consumer:

* **raw read**: the export's reader (:func:`changefeed.replay.read_window`) counting
  records and bytes, writing nothing: the floor no export can beat;
* **avro (snappy)** (the default), **(deflate)** and **(null)**: ``--format avro``;
* **jsonl**: ``--format jsonl`` (every record decoded and rendered as JSON);
* **parquet** when pyarrow is installed.

Targets: >= 50,000 records/s to Avro, and >= 0.5 of the raw read. Each phase runs
``--rounds`` times and the best round counts (the machine is shared). The topics are deleted
at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_codec import realistic_change_event  # noqa: E402

from changefeed.broker.local import broker_for  # noqa: E402
from changefeed.config import Settings  # noqa: E402
from changefeed.export import export  # noqa: E402
from changefeed.replay import (  # noqa: E402  # noqa: E402
    ReplayReport,
    ReplayWindow,
    open_consumer,
    read_window,
    topic_partitions,
    window_bounds,
)
from changefeed.topics import ensure_topics, project_topics  # noqa: E402
from schemas.codec import default_codec  # noqa: E402

AVRO_TARGET = 50_000
RATIO_TARGET = 0.5
SINCE = ReplayWindow(since=datetime(2000, 1, 1, tzinfo=UTC))


def fill(settings: Settings, records: int) -> int:
    """Produce ``records`` change events to ``changes``; returns the bytes produced."""
    codec = default_codec()
    base = realistic_change_event()
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap, acks=1, linger_ms=20, batch_size=512 * 1024
    )
    total = 0
    for n in range(records):
        change = {
            **base,
            "change_id": str(uuid.uuid4()),
            "event_id": f"ev-{n}",
            "subject_id": str(n % 5000),
        }
        value = codec.encode("changefeed.ChangeEvent", change)
        total += len(value)
        key = f"{change['tenant_id']}/{change['subject_type']}/{change['subject_id']}".encode()
        producer.send(settings.topic("changes"), key=key, value=value)
    producer.flush()
    producer.close()
    return total


def raw_read(settings: Settings) -> tuple[int, int]:
    consumer = open_consumer(settings)
    try:
        partitions = topic_partitions(consumer, settings.topic("changes"))
        starts, ends = window_bounds(consumer, partitions, SINCE, settings, ReplayReport())
        count = size = 0
        for record in read_window(settings, starts, ends):
            count += 1
            size += len(record.value)
        return count, size
    finally:
        consumer.close()


def export_phase(fmt: str, **options: Any) -> Callable[[Settings], tuple[int, int]]:
    def run(settings: Settings) -> tuple[int, int]:
        with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
            report = export(
                settings,
                SINCE,
                source=settings.topic("changes"),
                directory=Path(tmp) / "out",
                fmt=fmt,  # type: ignore[arg-type]
                max_file_bytes=64 * 1024 * 1024,
                **options,
            )
            return report.written, report.bytes

    return run


def best_of(
    rounds: int, phase: Callable[[Settings], tuple[int, int]], settings: Settings
) -> tuple[float, int, int]:
    best = float("inf")
    count = size = 0
    for _ in range(rounds):
        began = time.perf_counter()
        count, size = phase(settings)
        best = min(best, time.perf_counter() - began)
    return best, count, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--bootstrap", help="an existing broker; default: the project broker")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    bootstrap, started = broker_for(args.bootstrap)
    unique = uuid.uuid4().hex[:8]
    settings = Settings(
        bootstrap=bootstrap,
        topic_prefix=f"bench-export-{unique}.",
        partitions=4,
        app_id=f"bench-export-{unique}",
    )
    ensure_topics(
        settings, [t for t in project_topics(settings) if t.name == settings.topic("changes")]
    )
    try:
        produced = fill(settings, args.records)
        print(
            f"{args.records:,} change events on {settings.topic('changes')} "
            f"({produced / args.records:,.0f} B each)"
        )
        phases: list[tuple[str, Callable[[Settings], tuple[int, int]]]] = [
            ("raw read", raw_read),
            ("avro (snappy)", export_phase("avro", avro_codec="snappy")),
            ("avro (deflate)", export_phase("avro", avro_codec="deflate")),
            ("avro (null)", export_phase("avro", avro_codec="null")),
            ("jsonl", export_phase("jsonl")),
        ]
        try:
            import pyarrow  # noqa: F401

            phases.append(("parquet", export_phase("parquet")))
        except ImportError:
            pass
        results = {}
        for name, phase in phases:
            seconds, count, size = best_of(args.rounds, phase, settings)
            assert count == args.records, f"{name} handled {count} records, not {args.records}"
            results[name] = (seconds, count, size)
        raw_rate = args.records / results["raw read"][0]
        print(f"{'phase':<16}{'records/s':>12}{'MiB out':>10}{'vs raw':>9}  target")
        for name, (seconds, count, size) in results.items():
            rate = count / seconds
            target = ""
            if name.startswith("avro"):
                met = rate >= AVRO_TARGET and rate / raw_rate >= RATIO_TARGET
                verdict = "met" if met else "NOT MET"
                target = f">= {AVRO_TARGET:,}/s and >= {RATIO_TARGET} of raw: {verdict}"
            mib = size / 2**20
            print(f"{name:<16}{rate:>12,.0f}{mib:>10.1f}{rate / raw_rate:>9.2f}  {target}")
    finally:
        with KafkaAdminClient(bootstrap_servers=bootstrap) as admin:
            admin.delete_topics([settings.topic("changes")])
        if started is not None:
            started.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
