"""Schedules on one worker: memory per active schedule, and how late occurrences fire.

A ``changefeed worker`` starts on fresh topics; its RSS (worker and children) is sampled
once ready. N schedule create commands (``every`` P seconds, first occurrences spread evenly
over the first period, starting once the worker has surely applied them all: the worker
applies about 800 commands a second here) are published to ``actions``
as the events API would publish them (:func:`events_api.writes.schedule_command`), keyed by
subject; the worker applies them and loads them into its timer. RSS is sampled again once
the worker reports all N waiting (``/metrics`` ``schedules_waiting``), and its peak over the
firing window. Then, for the first ``--window`` seconds of firing (N x window / period
occurrences, at N / period a second), a ``read_committed`` consumer reads ``changes`` and
records, for every occurrence, the time from its due time to the moment the consumer got
it: the lateness a feed reader sees (p50, p99, max), plus occurrences missing or repeated.

Targets: <= 100 MB RSS added by 100,000 active schedules; p99 lateness <= 1 s.

    python bench/bench_schedules.py --bootstrap 127.0.0.1:9092
    python bench/bench_schedules.py --schedules 20000 --period 60 --window 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import Worker  # noqa: E402

from changefeed.config import Settings  # noqa: E402
from changefeed.topics import ensure_topics  # noqa: E402
from events_api.writes import schedule_command  # noqa: E402
from schemas.codec import default_codec  # noqa: E402
from schemas.schedules import Command, parse_schedule_request, rfc3339  # noqa: E402

TARGET_RSS_MB = 100.0
TARGET_P99_S = 1.0
ACTOR = {
    "user_id": None,
    "application_id": "bench",
    "api_version": "v1",
    "api_key_fingerprint": None,
}


def _now_us() -> int:
    return time.time_ns() // 1000


def publish_schedules(settings: Settings, count: int, period_s: int, first_us: int) -> None:
    """``count`` create commands, first occurrences spread over one period from ``first_us``."""
    codec = default_codec()
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024
    )
    topic = settings.topic("actions")
    now = _now_us()
    template = parse_schedule_request(
        {"subject_type": "device", "subject_id": "x", "every": f"PT{period_s}S", "payload": {}},
        tenant_id="bench",
        schedule_id="template",
        now_us=now,
    )
    step_us = period_s * 1_000_000 / count
    for n in range(count):
        start = first_us + int(n * step_us)
        schedule = replace(
            template,
            schedule_id=str(uuid.uuid4()),
            subject_id=f"d-{n}",
            start_us=start,
            next_us=start,
            payload=json.dumps({"n": n}),
        )
        action = schedule_command(
            Command.CREATE,
            schedule,
            actor=ACTOR,
            body={"schedule": json.loads(schedule.encode())},
            source="/bench",
        )
        producer.send(
            topic,
            key=schedule.subject_key.encode(),
            value=codec.encode("changefeed.ApiAction", action),
        )
    producer.flush()
    producer.close()


class LatenessReader(threading.Thread):
    """Reads ``changes`` (read_committed) and notes each occurrence's lateness."""

    def __init__(self, settings: Settings, due_from_us: int, due_before_us: int) -> None:
        super().__init__(daemon=True)
        self.due_from_us = due_from_us
        self.due_before_us = due_before_us
        self.excluded = 0
        self.codec = default_codec()
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=10,
        )
        partitions = [
            TopicPartition(settings.topic("changes"), p) for p in range(settings.partitions)
        ]
        self.consumer.assign(partitions)
        self.consumer.seek_to_beginning(*partitions)
        self.lateness_s: list[float] = []
        self.late_marked = 0
        self.seen: Counter[str] = Counter()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for records in self.consumer.poll(timeout_ms=100).values():
                got_us = _now_us()
                for record in records:
                    change = self.codec.decode(record.value, "changefeed.ChangeEvent")
                    due = change["subject_changed_at"]
                    due_us = due if isinstance(due, int) else int(due.timestamp() * 1e6)
                    if due_us >= self.due_before_us:
                        continue  # the next period's: not measured
                    if due_us < self.due_from_us:
                        self.excluded += 1  # due while the worker was still loading
                        continue
                    self.lateness_s.append((got_us - due_us) / 1e6)
                    self.seen[change["event_id"]] += 1
                    self.late_marked += bool(change["late"])
        self.consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--schedules", type=int, default=100_000)
    parser.add_argument("--period", type=int, default=600, help="seconds between occurrences")
    parser.add_argument("--window", type=int, default=60, help="seconds of firing measured")
    parser.add_argument("--partitions", type=int, default=2)
    args = parser.parse_args(argv)

    unique = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-schedules-") as tmp:
        settings = Settings(
            bootstrap=args.bootstrap,
            topic_prefix=f"bs{unique}.",
            app_id=f"bench-schedules-{unique}",
            partitions=args.partitions,
            data_dir=Path(tmp),
        )
        ensure_topics(settings)
        worker = Worker(settings, Path(tmp))
        try:
            worker.wait_ready()
            time.sleep(2.0)  # let the index writer and caches settle before the baseline
            baseline = worker.rss_mb()
            load_began = time.monotonic()
            # First occurrences begin once loading is surely over (publishing + applying).
            lead_s = 20 + args.schedules / 400
            first_us = _now_us() + int(lead_s * 1e6)
            publish_schedules(settings, args.schedules, args.period, first_us)
            deadline = time.monotonic() + lead_s + 120
            while worker.metrics().get("schedules_waiting", 0) < args.schedules:
                worker.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"schedules not loaded: {worker.metrics()}")
                time.sleep(0.2)
            load_s = time.monotonic() - load_began
            loaded = worker.rss_mb()
            end_us = first_us + min(args.window, args.period) * 1_000_000
            measured_from = max(first_us, _now_us() + 1_000_000)
            reader = LatenessReader(settings, measured_from, end_us)
            reader.start()
            if _now_us() > first_us:
                print("warning: loading took longer than the lead; early occurrences are late")
            peak = loaded
            while _now_us() < end_us + 3_000_000:
                worker.check_alive()
                peak = max(peak, worker.rss_mb())
                time.sleep(1.0)
            reader.stopping.set()
            reader.join(30)
            metrics = worker.metrics()
        finally:
            worker.stop()

    expected = args.schedules * min(args.window, args.period) // args.period - reader.excluded
    lateness = sorted(reader.lateness_s)
    repeated = sum(1 for n in reader.seen.values() if n > 1)
    added = loaded - baseline
    p99 = lateness[int(0.99 * (len(lateness) - 1))] if lateness else float("nan")
    print(
        f"schedules: {args.schedules:,} every {args.period}s on one worker, "
        + f"{args.partitions} partitions"
    )
    print(f"  created and loaded in {load_s:.1f}s; first occurrence {rfc3339(first_us)}")
    print(
        f"  firing {args.schedules / args.period:.0f} occurrences/s, "
        f"measured over {min(args.window, args.period)}s"
        + (f" ({reader.excluded} due before the load ended left out)" if reader.excluded else "")
    )
    print(
        f"  RSS: {baseline:.0f} MB idle -> {loaded:.0f} MB with all waiting "
        f"(+{added:.0f} MB, {added * 1e6 / args.schedules:.0f} bytes each) -> "
        f"peak {peak:.0f} MB firing"
    )
    print(
        f"  occurrences read: {len(reader.seen):,} of {expected:,} due; repeated {repeated}; "
        f"marked late {reader.late_marked}; "
        f"worker emitted {metrics.get('schedule_occurrences_emitted')} (measured window and after)"
    )
    if lateness:
        print(
            f"  lateness (due -> readable): p50 {statistics.median(lateness):.3f}s "
            f"p99 {p99:.3f}s max {lateness[-1]:.3f}s"
        )
    print("                       measured    target    ratio")
    print(f"  RSS added (MB)     {added:10.1f} {TARGET_RSS_MB:9.1f} {added / TARGET_RSS_MB:8.2f}")
    print(f"  p99 lateness (s)   {p99:10.3f} {TARGET_P99_S:9.3f} {p99 / TARGET_P99_S:8.2f}")
    ok = added <= TARGET_RSS_MB and p99 <= TARGET_P99_S and repeated == 0
    print("  targets met" if ok else "  targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
