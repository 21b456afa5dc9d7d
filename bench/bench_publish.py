"""Publishing throughput: the full publisher path against kafka-python's raw ceiling.

Measured side by side in one process, on one broker, with the same producer settings:

  (a) raw      kafka-python ``send`` of pre-encoded values and keys, no headers: the ceiling
  (a+h) raw+h  the same with pre-built CloudEvents headers (what headers cost on the wire)
  (b) full     ``Publisher.publish_async`` of ApiAction dicts: Avro encoding, key and
               headers built per action, delivery tracking, then ``flush``
  (c) encode   ``ActionEncoder.encode`` alone, no Kafka

and prints actions/s, microseconds per action and the ratio (b)/(a). Actions come from the
load generator (realistic sizes), built before any timing starts.

    python bench/bench_publish.py                      # starts or reuses the broker on :9092
    python bench/bench_publish.py --bootstrap host:port --count 200000 --compression lz4
    python bench/bench_publish.py --profile            # where the time of (b) goes
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from changefeed.broker import broker_for
from changefeed.config import Settings
from changefeed.topics import TopicSpec, ensure_topics
from producers.envelope import ActionEncoder
from producers.kafka_client import producer_config
from producers.loadgen import LoadProfile, generate_actions
from producers.outgoing import OutgoingRecord
from producers.publisher import Publisher
from producers.publisher_options import PublisherOptions
from schemas.codec import default_codec


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    bootstrap, started = broker_for(args.bootstrap)
    try:
        return _run(args, bootstrap)
    finally:
        if started is not None and not args.keep_broker:
            started.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="an existing broker; default: the project broker")
    parser.add_argument("--count", type=int, default=200_000, help="actions per measurement")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--compression", default=PublisherOptions().compression, help="lz4, gzip, zstd or none"
    )
    parser.add_argument("--linger-ms", type=int, default=PublisherOptions().linger_ms)
    parser.add_argument("--batch-size", type=int, default=PublisherOptions().batch_size)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of (a), (b), (c)")
    parser.add_argument("--profile", action="store_true", help="cProfile the full path (b)")
    parser.add_argument("--keep-broker", action="store_true", help="leave a started broker up")
    return parser


def _run(args: argparse.Namespace, bootstrap: str) -> int:
    compression = None if args.compression == "none" else args.compression
    options = PublisherOptions(
        compression=compression, linger_ms=args.linger_ms, batch_size=args.batch_size
    )
    settings = Settings(
        bootstrap=bootstrap,
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        partitions=args.partitions,
    )
    ensure_topics(settings, [TopicSpec(settings.topic("actions"), args.partitions)])
    actions = list(
        generate_actions(
            LoadProfile(seed=1, tenants=5, duplicate_rate=0, out_of_order_rate=0),
            count=args.count,
            source=settings.source,
        )
    )
    encoder = ActionEncoder(
        settings.topic("actions"), default_codec(), settings.source, settings.redactor()
    )
    records = [encoder.encode(action) for action in actions]
    mean_value = sum(len(r.value) for r in records) / len(records)
    print(
        f"{args.count} actions, mean value {mean_value:.0f} B, {len(records[0].headers)} headers,"
        f" compression={compression}, linger_ms={options.linger_ms},"
        f" batch_size={options.batch_size}, partitions={args.partitions}, bootstrap={bootstrap}"
    )
    for round_number in range(1, args.repeat + 1):
        raw = _measure(lambda: _publish_raw(bootstrap, options, records, headers=False))
        raw_h = _measure(lambda: _publish_raw(bootstrap, options, records, headers=True))
        full = _measure(lambda: _publish_full(settings, options, actions, profile=args.profile))
        encode = _measure(lambda: [encoder.encode(action) for action in actions])
        print(f"round {round_number}")
        _line("(a)   raw bytes, no headers", raw, args.count)
        _line("(a+h) raw bytes + headers", raw_h, args.count)
        _line("(b)   Publisher (Avro + headers)", full, args.count)
        _line("(c)   encode only", encode, args.count)
        print(
            f"  (b)/(a) = {raw / full:.2f}   encoding overhead = {1 - raw / full:.0%} of raw"
            f" publish throughput   (b)/(a+h) = {raw_h / full:.2f}"
        )
    return 0


def _measure(work: Callable[[], Any]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def _line(label: str, seconds: float, count: int) -> None:
    print(f"  {label:34s} {count / seconds:>9,.0f} actions/s  {seconds / count * 1e6:6.1f} µs each")


def _publish_raw(
    bootstrap: str, options: PublisherOptions, records: list[OutgoingRecord], *, headers: bool
) -> None:
    producer = KafkaProducer(**producer_config(bootstrap, options))
    topic = records[0].topic
    producer.partitions_for(topic)
    send = producer.send
    if headers:
        for record in records:
            send(topic, value=record.value, key=record.key, headers=record.headers)
    else:
        for record in records:
            send(topic, value=record.value, key=record.key)
    producer.flush()
    producer.close()


def _publish_full(
    settings: Settings, options: PublisherOptions, actions: list[dict[str, Any]], *, profile: bool
) -> None:
    with tempfile.TemporaryDirectory() as spool_dir:
        publisher = Publisher(settings, spool_dir=Path(spool_dir), options=options)
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        publish = publisher.publish_async
        for action in actions:
            publish(action)
        publisher.flush()
        if profiler:
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(18)
        stats = publisher.stats()
        publisher.close()
    if stats.delivered != len(actions):
        raise SystemExit(f"only {stats.delivered} of {len(actions)} delivered: {stats}")


if __name__ == "__main__":
    sys.exit(main())
