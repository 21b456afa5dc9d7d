"""The processors end to end: throughput, latency and memory of a real worker.

Measured in one run, against one broker, each phase on fresh topics:

  throughput  ``actions`` is filled with N actions of the load generator (5 % duplicates,
              5 % late), then drained by: (a) a raw aiokafka consume + produce
              pass-through (no decoding, no transactions: the ceiling); (f1), (f3) the
              exactly-once floor, ``bench/faust_floor.py``: the worker's app, batching
              consumer, agent loop and transactions forwarding each record unchanged to 1
              and to 3 topics (3 = what the processors write per change: the change, the
              subject's state and the dedupe entry), no decoding and no state; and (b) a
              ``changefeed worker`` (exactly-once). Prints actions/s of each and their
              ratios to (a), the worker's CPU seconds per 1,000 actions, and how fast its
              feed index (a child process) read the changes, with its own CPU seconds per
              1,000 changes, from the same start.
  logic       the per-action work of the worker without Kafka or Faust: the same N actions
              through ``ActionPipeline`` with its writes applied to RocksDB, in this process,
              with Python's default garbage collector settings and with the worker's.
  latency     while a worker runs, actions are published at half of (b)'s rate; the time
              from publishing an action to its change being readable with ``read_committed``
              is recorded (p50, p99, max).
  memory      the worker's changelogs are filled with S subjects and I dedupe ids (each
              with the payload its change left, as the worker writes them), a worker
              restores them and then processes actions for random subjects; its RSS is
              sampled.
  quix        the same job written with Quix Streams (``bench/quix_job.py``, its differences
              from the worker are listed there), exactly-once, in a subprocess, drains the
              prefilled ``actions`` (with ``throughput``: the same topic, after the worker,
              and the ratio worker/quix is printed); actions/s from its first record until
              its offsets, committed with its changes, cover every action; its CPU seconds
              per 1,000 actions over that span; then its changes are counted (read_committed).

Targets: worker >= 1.5x the Quix Streams job and >= 5,000 actions/s; the exactly-once floor
>= 30,000 records/s; the feed index at least as fast as the worker; p99 <= 250 ms at half
the worker's maximum rate; RSS <= 400 MB with 1M subjects and 5M ids.

    python bench/bench_pipeline.py --bootstrap 127.0.0.1:9092
    python bench/bench_pipeline.py --phases throughput,latency --actions 200000
    python bench/bench_pipeline.py --phases memory --subjects 1000000 --ids 5000000
    python bench/bench_pipeline.py --phases logic --actions 50000
    python bench/bench_pipeline.py --phases quix --actions 30000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiokafka
import rocksdict
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from changefeed.broker import broker_for
from changefeed.config import Settings
from changefeed.kafka.admin import delete_topics_named
from changefeed.topics import TopicSpec, changelog_topic, ensure_topics
from processors import models
from processors.dead_letters import RawRecord
from processors.pipeline import ActionPipeline
from processors.worker import settle_garbage_collector
from producers.loadgen import LoadProfile, generate_actions
from schemas.action_contract import subject_key
from schemas.codec import default_codec
from schemas.masking import Redactor

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    bootstrap, started = broker_for(args.bootstrap)
    phases = set(args.phases.split(","))
    results: dict[str, Any] = {"partitions": args.partitions, "cpus": os.cpu_count()}
    try:
        rate = args.latency_rate
        if "throughput" in phases:
            results["throughput"] = throughput(bootstrap, args)
            rate = rate or results["throughput"]["pipeline_actions_per_s"] / 2
        if "latency" in phases:
            results["latency"] = latency(bootstrap, args, rate or 2000.0)
        if "logic" in phases:
            results["logic"] = logic(args)
        if "memory" in phases:
            results["memory"] = memory(bootstrap, args)
        if "quix" in phases and "throughput" not in phases:
            results["quix"] = quix_phase(bootstrap, args)
    finally:
        if not args.keep_topics:
            # A broker holding thousands of topics of earlier runs answers every metadata
            # request with all of them, which slows the clients of the next runs.
            marks = [f"bench-{run}" for run in RUNS] + [f"bench{run}." for run in RUNS]
            dropped = delete_topics_named(bootstrap, marks)
            _log(f"deleted the {len(dropped)} topics of this run")
        if started is not None:
            started.stop()
    print(json.dumps(results, indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--bootstrap", help="an existing broker; default: the project broker")
    parser.add_argument("--phases", default="throughput,latency,memory")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--actions", type=int, default=200_000, help="throughput: N")
    parser.add_argument("--workers", type=int, default=1, help="throughput: worker processes")
    parser.add_argument(
        "--floor-fanouts", default="1,3", help="throughput: fan-outs of the floor ('' for none)"
    )
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--latency-rate", type=float, help="default: half the measured rate")
    parser.add_argument("--subjects", type=int, default=1_000_000, help="memory: S")
    parser.add_argument("--ids", type=int, default=5_000_000, help="memory: I")
    parser.add_argument("--memory-load-seconds", type=float, default=30.0)
    parser.add_argument(
        "--keep-topics",
        action="store_true",
        help="keep this run's topics (memory: to --reuse its changelogs later)",
    )
    parser.add_argument(
        "--reuse", metavar="RUN", help="memory: restore the changelogs an earlier run filled"
    )
    return parser


RUNS: list[str] = []
"""The run ids of the topics this process created; their topics are deleted at exit."""


def _settings(
    bootstrap: str, args: argparse.Namespace, data_dir: Path, unique: str | None = None
) -> Settings:
    if unique is None:
        unique = uuid.uuid4().hex[:8]
        RUNS.append(unique)
    settings = Settings(
        bootstrap=bootstrap,
        topic_prefix=f"bench{unique}.",
        app_id=f"bench-{unique}",
        partitions=args.partitions,
        data_dir=data_dir,
    )
    ensure_topics(settings)
    ensure_topics(settings, [TopicSpec(settings.topic("passthrough"), args.partitions)])
    return settings


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- throughput --------------------------------------------------------------------------


def throughput(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(bootstrap, args, Path(tmp) / "worker")
        count = fill_actions(settings, args.actions)
        _log(f"passthrough over {count} actions")
        passthrough_s = asyncio.run(passthrough(settings, count))
        passthrough_rate = count / passthrough_s
        _log(f"passthrough: {passthrough_rate:,.0f}/s")
        floors = {}
        for fanout in [int(f) for f in args.floor_fanouts.split(",") if f]:
            rate, cpu = floor(settings, Path(tmp), fanout, count)
            floors[f"floor_fanout{fanout}"] = {
                "actions_per_s": round(rate),
                "ratio_to_passthrough": round(rate / passthrough_rate, 3),
                "cpu_s": cpu,
            }
            _log(f"floor, fan-out {fanout}: {rate:,.0f}/s")
        _log("starting the worker")
        workers = [Worker(settings, Path(tmp), n) for n in range(args.workers)]
        try:
            for worker in workers:
                worker.wait_ready()
            began, done_before = time.monotonic(), committed(settings)
            cpu_before = [worker.cpu_split() for worker in workers]
            done_at, rss = wait_committed(settings, count, workers)
            cpu_done = [worker.cpu_split() for worker in workers]
            metrics = [worker.metrics() for worker in workers]
            changes = changes_end(settings)
            indexed_at = wait_indexed(workers[0], changes)
            cpu_indexed = [worker.cpu_split() for worker in workers]
        finally:
            for worker in workers:
                worker.stop()
        pipeline_s = done_at - began
        measured = count - done_before
        rate = measured / pipeline_s
        index_rate = changes / (indexed_at - began)
        worker_cpu = sum(
            done[0] - before[0] for done, before in zip(cpu_done, cpu_before, strict=True)
        )
        index_cpu = cpu_indexed[0][1] - cpu_before[0][1]
        _log(f"pipeline: {rate:,.0f}/s over {measured} actions; feed index {index_rate:,.0f}/s")
        quix = {}
        if "quix" in args.phases.split(","):
            quix["quix"] = quix_drain(settings, Path(tmp), count, rate, metrics)
        return {
            "actions": count,
            "workers": args.workers,
            "passthrough_actions_per_s": round(passthrough_rate),
            **floors,
            "pipeline_actions_per_s": round(rate),
            "ratio": round(rate / (count / passthrough_s), 3),
            "worker_peak_rss_mb": rss,
            "worker_cpu_s": [w.cpu_seconds_at_stop for w in workers],
            "worker_cpu_s_per_1000_actions": round(worker_cpu / measured * 1000, 3),
            "changes": changes,
            "index_changes_per_s": round(index_rate),
            # The index reads what the worker commits, so it finishes after it: it keeps up
            # when it is done within a second of the worker's last commit.
            "index_lag_at_end_s": round(indexed_at - done_at, 2),
            "index_keeps_up": indexed_at - done_at <= 1.0,
            "index_writer_cpu_s_per_1000_changes": round(index_cpu / changes * 1000, 3),
            "worker_metrics": metrics,
            "measured_actions": measured,
            "wall_s": round(pipeline_s, 1),
            **quix,
        }


def floor(settings: Settings, tmp: Path, fanout: int, count: int) -> tuple[float, float]:
    """Actions/s and CPU seconds of ``bench/faust_floor.py`` draining ``count`` actions."""
    floor_settings = dataclasses.replace(
        settings,
        app_id=f"{settings.app_id}-floor{fanout}",
        data_dir=tmp / f"floor{fanout}",
    )
    worker = Worker(
        floor_settings,
        tmp,
        100 + fanout,
        argv=[sys.executable, str(REPO / "bench" / "faust_floor.py")],
        env={"FLOOR_FANOUT": str(fanout)},
    )
    try:
        worker.wait_ready()
        began, done_before = time.monotonic(), committed(floor_settings)
        done_at, _ = wait_committed(floor_settings, count, [worker])
    finally:
        worker.stop()
    return (count - done_before) / (done_at - began), worker.cpu_seconds_at_stop


def encoded_actions(count: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of ``count`` actions of the load generator, as published."""
    codec = default_codec()
    profile = LoadProfile(rate=1000.0, duration_s=count / 1000.0, tenants=3, seed=7)
    for action in generate_actions(profile, count=count):
        key = subject_key(
            action["tenant_id"], action["subject_type"], action["subject_id"]
        ).encode()
        yield key, codec.encode(action_name(), action)


def fill_actions(settings: Settings, count: int) -> int:
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap, acks=1, linger_ms=20, batch_size=256 * 1024
    )
    began = time.monotonic()
    sent = 0
    for key, value in encoded_actions(count):
        producer.send(settings.topic("actions"), key=key, value=value)
        sent += 1
    producer.flush()
    producer.close()
    _log(f"filled {sent} actions in {time.monotonic() - began:.1f}s")
    return sent


def action_name() -> str:
    return "changefeed.ApiAction"


async def passthrough(settings: Settings, count: int) -> float:
    """Seconds for a plain consume + produce of ``count`` records, from the first fetch."""
    consumer = aiokafka.AIOKafkaConsumer(
        settings.topic("actions"),
        bootstrap_servers=settings.bootstrap,
        group_id=f"{settings.app_id}-passthrough",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=2000,
    )
    producer = aiokafka.AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap, linger_ms=5, max_batch_size=512 * 1024
    )
    await consumer.start()
    await producer.start()
    sink = settings.topic("passthrough")
    try:
        seen = 0
        began = None
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000)
            if began is None and batches:
                began = time.monotonic()
            for tp, records in batches.items():
                for record in records:
                    await producer.send(sink, record.value, key=record.key, partition=tp.partition)
                seen += len(records)
        await producer.flush()
        await consumer.commit()
        assert began is not None
        return time.monotonic() - began
    finally:
        await producer.stop()
        await consumer.stop()


def committed(settings: Settings) -> int:
    """How many ``actions`` records the worker group has committed, over all partitions."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap)
    try:
        offsets = admin.list_group_offsets(settings.app_id).get(settings.app_id, {})
    finally:
        admin.close()
    return sum(
        meta.offset
        for tp, meta in offsets.items()
        if tp.topic == settings.topic("actions") and meta.offset > 0
    )


def changes_end(settings: Settings) -> int:
    """How many offsets ``changes`` holds, over all partitions (markers included)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap)
    try:
        parts = consumer.partitions_for_topic(settings.topic("changes")) or set()
        tps = [TopicPartition(settings.topic("changes"), p) for p in parts]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def wait_indexed(worker: Worker, end: int, timeout_s: float = 600.0) -> float:
    """When the worker's feed index has read ``changes`` up to ``end`` offsets."""
    deadline = time.monotonic() + timeout_s
    while worker.index_positions() < end:
        worker.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the feed index did not catch up; see {worker.log_path}")
        time.sleep(0.05)
    return time.monotonic()


def wait_committed(settings: Settings, count: int, workers: list[Worker]) -> tuple[float, float]:
    """When the workers' committed offsets cover ``count`` actions; peak RSS (MB) of one."""
    peak = 0.0
    while True:
        peak = max([peak, *(worker.rss_mb() for worker in workers)])
        if committed(settings) >= count:
            return time.monotonic(), round(peak, 1)
        for worker in workers:
            worker.check_alive()
        time.sleep(0.1)


# -- logic -------------------------------------------------------------------------------


class RocksState:
    """The tables of one partition in RocksDB, as the worker keeps them, minus Faust."""

    def __init__(self, path: Path) -> None:
        options = rocksdict.Options(raw_mode=True)
        self.dbs = {
            name: rocksdict.Rdict(str(path / name), options=options) for name in models.TABLE_NAMES
        }

    def get(self, table: str, key: bytes) -> bytes | None:
        value: bytes | None = self.dbs[table].get(key)
        return value

    def apply(self, writes: list[Any]) -> None:
        for write in writes:
            db = self.dbs[write.table]
            if write.value is None:
                db.delete(write.key)
            else:
                db.put(write.key, write.value)

    def close(self) -> None:
        for db in self.dbs.values():
            db.close()


def logic(args: argparse.Namespace) -> dict[str, Any]:
    records = list(encoded_actions(args.actions))
    rates: dict[str, list[float]] = {"python_default_gc": [], "worker_gc": []}
    defaults = gc.get_threshold()
    for _ in range(2):  # alternated, so that drift of the machine's speed hits both alike
        for label, runs in rates.items():
            if label == "worker_gc":
                settle_garbage_collector()
            else:
                gc.unfreeze()
                gc.set_threshold(*defaults)
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(_run_logic(records, RocksState(Path(tmp))))
            _log(f"logic ({label}): {runs[-1]:,.0f} actions/s")
    gc.unfreeze()
    gc.set_threshold(*defaults)
    best = {label: max(runs) for label, runs in rates.items()}
    return {
        "actions": len(records),
        "python_default_gc_actions_per_s": round(best["python_default_gc"]),
        "worker_gc_actions_per_s": round(best["worker_gc"]),
        "worker_gc_over_default": round(best["worker_gc"] / best["python_default_gc"], 3),
    }


def _run_logic(records: list[tuple[bytes, bytes]], state: RocksState) -> float:
    settings = Settings()
    pipeline = ActionPipeline(
        codec=default_codec(),
        redactor=Redactor(settings.redact_paths, b"bench-secret-0123456789abcdef"),
        retention_ms=settings.retention_ms,
        source="/bench",
    )
    topic = settings.topic("actions")
    try:
        began = time.perf_counter()
        for offset, (key, value) in enumerate(records):
            raw = RawRecord(topic, 0, offset, None, key, value, [])
            state.apply(pipeline.process(raw, state).writes)
        return len(records) / (time.perf_counter() - began)
    finally:
        state.close()


# -- latency -----------------------------------------------------------------------------


def latency(bootstrap: str, args: argparse.Namespace, rate: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(bootstrap, args, Path(tmp) / "worker")
        worker = Worker(settings, Path(tmp))
        try:
            worker.wait_ready()
            _log(f"latency at {rate:,.0f} actions/s for {args.latency_seconds:.0f}s")
            samples = measure_latency(settings, rate, args.latency_seconds)
        finally:
            worker.stop()
    samples.sort()
    quantiles = statistics.quantiles(samples, n=100)
    return {
        "rate_actions_per_s": round(rate),
        "changes_measured": len(samples),
        "p50_ms": round(quantiles[49], 1),
        "p99_ms": round(quantiles[98], 1),
        "max_ms": round(samples[-1], 1),
    }


def project_update(
    codec: Any,
    event_id: str,
    subject: str,
    *,
    version: int,
    payload: dict[str, Any],
    occurred_at_us: int | None = None,
) -> tuple[bytes, bytes]:
    """One update of project ``subject`` of tenant acme (occurring now, or at
    ``occurred_at_us``): (key, value)."""
    record = {
        "event_id": event_id,
        "request_id": f"r-{event_id}",
        "tenant_id": "acme",
        "action": "update",
        "event_type": "project:updated",
        "subject_type": "project",
        "subject_id": subject,
        "version": version,
        "occurred_at": time.time_ns() // 1000 if occurred_at_us is None else occurred_at_us,
        "actor": {"user_id": "u"},
        "payload": json.dumps(payload),
    }
    return f"acme/project/{subject}".encode(), codec.encode("changefeed.ApiAction", record)


def measure_latency(settings: Settings, rate: float, seconds: float) -> list[float]:
    """Milliseconds from each action's due time to its change being read (read_committed).

    The harness shares the two cores with the worker and the broker, so it is kept cheap:
    every action is encoded before the clock starts, due at ``t0 + n / rate`` and stamped
    with that instant as ``occurred_at`` (a publisher running late adds its delay to the
    figures rather than hiding it), and aiokafka publishes and reads them (a fraction of
    kafka-python's CPU per record, measured: 8.5 us against 51 us a send).
    """
    return asyncio.run(_measure_latency(settings, rate, seconds))


def _header_time_us(headers: Any) -> int:
    for key, value in headers or ():
        if key == "ce_time":
            moment = datetime.fromisoformat(value.decode().replace("Z", "+00:00"))
            return int(moment.timestamp() * 1_000_000)
    raise RuntimeError("a change without its CloudEvents time header")


async def _measure_latency(settings: Settings, rate: float, seconds: float) -> list[float]:
    codec = default_codec()
    total = int(rate * seconds)
    topic = settings.topic("changes")
    consumer = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=100,
    )
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks=1, linger_ms=1)
    await consumer.start()
    await producer.start()
    try:
        partitions = [aiokafka.TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for partition in partitions:
            await consumer.position(partition)
        t0 = time.time() + 1.0 + total / 50_000  # after the encoding below
        due = [t0 + n / rate for n in range(total)]
        actions = [
            project_update(
                codec,
                f"lat-{n}",
                str(n % 5000),
                version=n,
                payload={"n": n, "name": "Northwind", "budget": n * 3},
                occurred_at_us=int(due[n] * 1_000_000),
            )
            for n in range(total)
        ]

        async def publish() -> None:
            n = 0
            while n < total:
                delay = due[n] - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.time()
                while n < total and due[n] <= now:  # everything due by now, in one go
                    key, value = actions[n]
                    await producer.send(settings.topic("actions"), key=key, value=value)
                    n += 1
            await producer.flush()

        publisher = asyncio.create_task(publish())
        samples: list[float] = []
        deadline = t0 + seconds + 60
        while len(samples) < total and time.time() < deadline:
            batches = await consumer.getmany(timeout_ms=100)
            now_us = time.time_ns() // 1000
            for records in batches.values():
                for record in records:
                    # The change's CloudEvents ``time`` header is its action's occurred_at
                    # (the due instant): read without decoding the Avro body, which would
                    # cost the harness more CPU than the worker's own reading of it.
                    due_us = _header_time_us(record.headers)
                    if len(samples) % 500 == 0:  # the header and the body agree
                        change = codec.decode(record.value, "changefeed.ChangeEvent")
                        body_us = int(change["subject_changed_at"].timestamp() * 1_000_000)
                        if body_us != due_us:
                            raise RuntimeError(f"ce_time {due_us} != subject_changed_at {body_us}")
                    samples.append((now_us - due_us) / 1000)
        await publisher
    finally:
        await producer.stop()
        await consumer.stop()
    if len(samples) < total:
        _log(f"only {len(samples)} of {total} changes arrived within the deadline")
    return samples


# -- memory ------------------------------------------------------------------------------


def memory(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(bootstrap, args, Path(tmp) / "worker", args.reuse)
        if args.reuse:
            _log(f"reusing the changelogs of run {args.reuse}")
        else:
            _log(
                f"run {settings.app_id.removeprefix('bench-')}: filling the changelogs"
                " (with --keep-topics, a later run can --reuse them)"
            )
            fill_changelogs(settings, args.subjects, args.ids)
        worker = Worker(settings, Path(tmp))
        try:
            began = time.monotonic()
            peak = 0.0
            while not worker.ready():
                peak = max(peak, worker.rss_mb())
                worker.check_alive()
                time.sleep(0.5)
            restored_s = time.monotonic() - began
            after_restore = worker.rss_mb()
            _log(f"restored in {restored_s:.0f}s, RSS {after_restore:.0f} MB; loading")
            loaded_peak = load_random_subjects(settings, args, worker)
        finally:
            worker.stop()
    return {
        "subjects": args.subjects,
        "dedupe_ids": args.ids,
        "restore_s": round(restored_s, 1),
        "rss_after_restore_mb": round(after_restore, 1),
        "rss_peak_during_restore_mb": round(peak, 1),
        "rss_peak_under_load_mb": round(loaded_peak, 1),
    }


def fill_changelogs(settings: Settings, subjects: int, ids: int) -> None:
    """Write what a worker would have written for ``subjects`` and ``ids`` into the changelogs.

    Subject states go to the partition of their key (where their actions land); ids are
    spread by key. Values are as :mod:`processors.models` encodes them.
    """
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap, acks=1, linger_ms=50, batch_size=512 * 1024
    )
    began = time.monotonic()
    state_topic = changelog_topic(settings, models.SUBJECT_STATE)
    seen_topic = changelog_topic(settings, models.SEEN_EVENTS)
    now_ms = int(time.time() * 1000)
    for n in range(subjects):
        payload = json.dumps(
            {
                "id": str(n),
                "name": f"Project {n}",
                "client": "Tailspin",
                "status": "active",
                "budget_cents": n * 100,
                "currency": "EUR",
                "updated_at": "2026-11-23T00:00:00Z",
            }
        )
        recent = tuple(
            models.RecentChange(v, 1_700_000_000_000_000 + v, f"e{n}-{v}") for v in (1, 2, 3)
        )
        state = models.SubjectState(
            payload, False, 3, 1_700_000_000_000_003, 3, f"e{n}-3", str(uuid.uuid4()), recent
        )
        producer.send(state_topic, key=f"acme/project/{n}".encode(), value=state.encode())
    _log(f"{subjects} subject states written in {time.monotonic() - began:.0f}s")
    for n in range(ids):
        event_id = str(uuid.UUID(int=random.getrandbits(128)))
        seen_ms = now_ms - (ids - n)  # oldest first, all inside the window
        # Each id keeps the payload its change left (for diffing late actions), as a change does.
        payload = f'{{"id":"{n}","name":"Project {n}","status":"active","budget_cents":{n}}}'
        seen = models.SeenEvent(seen_ms, str(uuid.UUID(int=n)), payload)
        producer.send(
            seen_topic,
            key=models.seen_key(event_id),
            value=seen.encode(),
            partition=n % settings.partitions,
        )
    producer.flush()
    producer.close()
    _log(f"{ids} ids written in {time.monotonic() - began:.0f}s")


def load_random_subjects(settings: Settings, args: argparse.Namespace, worker: Worker) -> float:
    codec = default_codec()
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks=1, linger_ms=20)
    rate = 3000.0
    total = int(rate * args.memory_load_seconds)
    peak = 0.0
    split = (0.0, 0.0)
    began = time.monotonic()
    for n in range(total):
        subject = str(random.randrange(args.subjects))
        key, value = project_update(
            codec,
            f"mem-{n}",
            subject,
            version=4 + n,
            payload={"id": subject, "name": f"Project {subject}", "n": n},
        )
        producer.send(settings.topic("actions"), key=key, value=value)
        if n % 1000 == 0:
            now = worker.rss_split_mb()
            if sum(now) > peak:
                peak, split = sum(now), now
            delay = began + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    producer.flush()
    producer.close()
    done, loaded = wait_committed(settings, total, [worker])
    _log(f"under load: worker {split[0]:.0f} MB + feed index writer {split[1]:.0f} MB")
    return max(peak, loaded)


# -- quix --------------------------------------------------------------------------------


def quix_phase(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    """Phase ``quix`` on its own: fresh topics, filled, drained by ``bench/quix_job.py``."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(bootstrap, args, Path(tmp) / "worker")
        count = fill_actions(settings, args.actions)
        return quix_drain(settings, Path(tmp), count)


def quix_drain(
    settings: Settings,
    tmp: Path,
    count: int,
    worker_rate: float | None = None,
    worker_metrics: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The Quix Streams job draining the ``count`` actions of ``settings``' ``actions``."""
    quix_settings = dataclasses.replace(settings, data_dir=tmp / "quix")
    group = dataclasses.replace(settings, app_id=f"{settings.app_id}-quix")  # the job's group
    marker, stats = tmp / "quix-marker.json", tmp / "quix-stats.json"
    _log("starting the Quix Streams job")
    job = Worker(
        quix_settings,
        tmp,
        200,
        argv=[sys.executable, str(REPO / "bench" / "quix_job.py")],
        env={"QUIX_JOB_MARKER": str(marker), "QUIX_JOB_STATS": str(stats)},
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            job.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Quix job consumed nothing; see {job.log_path}")
            time.sleep(0.01)
        first = json.loads(marker.read_text())
        done_at, rss = wait_committed(group, count, [job])
        cpu_s = job.cpu_seconds() - first["cpu_s"]
    finally:
        job.stop()
    counts = json.loads(stats.read_text()) if stats.exists() else None
    readable, distinct = count_readable(settings, settings.topic("quix.changes"))
    seconds = done_at - first["monotonic"]
    rate = count / seconds
    per_1k = cpu_s / count * 1000
    _log(f"quix: {rate:,.0f}/s, {per_1k:.3f} CPU s per 1,000 actions, {readable} changes")
    result: dict[str, Any] = {
        "actions": count,
        "quix_actions_per_s": round(rate),
        "quix_cpu_s_per_1k_actions": round(per_1k, 3),
        "quix_cpu_s_total": job.cpu_seconds_at_stop,
        "quix_peak_rss_mb": rss,
        "quix_changes_readable": readable,
        "quix_distinct_change_ids": distinct,
        "quix_counts": counts,
        "wall_s": round(seconds, 1),
    }
    if worker_rate is not None:
        result["worker_over_quix_actions_per_s"] = round(worker_rate / rate, 3)
        _log(f"worker/quix: {worker_rate / rate:.2f}")
    if worker_metrics:
        result["worker_changes"] = sum(m.get("changed", 0) for m in worker_metrics)
    return result


def count_readable(settings: Settings, topic: str) -> tuple[int, int]:
    """Records of ``topic`` readable with read_committed, and their distinct ``ce_id``s."""
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
        ends = consumer.end_offsets(partitions)
        records, ids = 0, set()
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not read {topic} to its end")
            for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                records += len(batch)
                ids.update(dict(record.headers).get("ce_id") for record in batch)
        return records, len(ids)
    finally:
        consumer.close()


# -- the worker process ------------------------------------------------------------------


class Worker:
    """``changefeed worker`` in a subprocess, log in ``log_dir/worker.log``."""

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        number: int = 0,
        *,
        argv: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = _free_port()
        env = {
            **os.environ,
            **(env or {}),
            "CHANGEFEED_BOOTSTRAP": settings.bootstrap,
            "CHANGEFEED_TOPIC_PREFIX": settings.topic_prefix,
            "CHANGEFEED_APP_ID": settings.app_id,
            "CHANGEFEED_PARTITIONS": str(settings.partitions),
            "CHANGEFEED_DATA_DIR": str(settings.data_dir / str(number)),
            "CHANGEFEED_WORKER_PORT": str(self.port),
        }
        self.data_dir = settings.data_dir / str(number)
        self.changes_topic = settings.topic("changes")
        self.log_path = log_dir / f"worker-{number}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv or [sys.executable, "-m", "changefeed.cli", "worker", "--loglevel", "warn"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        self.cpu_seconds_at_stop = 0.0

    def ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(json.loads(response.read()).get("ready"))
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def metrics(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/metrics.json"
        with urllib.request.urlopen(url, timeout=5) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body

    def wait_ready(self, timeout_s: float = 600.0) -> float:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready; see {self.log_path}")
            time.sleep(0.05)
        return time.monotonic()

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker exited; {self.log_path} ends with:\n{tail}")

    def rss_mb(self) -> float:
        """RSS of the worker and its children (the feed index writer)."""
        main, children = self.rss_split_mb()
        return main + children

    def rss_split_mb(self) -> tuple[float, float]:
        """RSS of the worker process itself, and of its children together."""
        pid = self.process.pid
        return _rss_mb(pid), sum(_rss_mb(child) for child in _children(pid))

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.process.pid)

    def cpu_split(self) -> tuple[float, float]:
        """CPU seconds of the worker process itself, and of its children (the index writer)."""
        pid = self.process.pid
        return _cpu_seconds(pid), sum(_cpu_seconds(child) for child in _children(pid))

    def index_positions(self) -> int:
        """How many ``changes`` offsets the worker's feed index has read, over all partitions."""
        path = self.data_dir / "feed" / f"{self.changes_topic}.sqlite3"
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
                row = db.execute("SELECT coalesce(sum(next_offset), 0) FROM partitions").fetchone()
        except sqlite3.Error:
            return 0
        return int(row[0])

    def stop(self) -> None:
        self.cpu_seconds_at_stop = round(self.cpu_seconds(), 1)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    found = [int(child) for child in text.split()]
    return found + [grand for child in found for grand in _children(child)]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


if __name__ == "__main__":
    sys.exit(main())
