"""Both Kafka clients the product uses work against the pinned broker version.

kafka-python (producers, admin) is exercised directly; aiokafka is exercised through a
Faust worker running with exactly-once processing and a RocksDB table, as the
processors do.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer

from changefeed.config import Settings
from changefeed.topics import TopicSpec, describe_topics, ensure_topics

ECHO_APP = Path(__file__).with_name("faust_echo_app.py")


def _consume(
    bootstrap: str, topic: str, group: str, expected: int, timeout_s: float = 60.0, alive=None
):
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        consumer_timeout_ms=1000,
    )
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            if alive is not None and not alive():
                break
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def test_kafka_python_idempotent_produce_and_consume(settings: Settings, group_id: str) -> None:
    topic = settings.topic("actions")
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type="gzip",
    )
    for i in range(50):
        producer.send(topic, key=f"k{i % 5}".encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()
    records = _consume(settings.bootstrap, topic, group_id, 50)
    assert sorted(r.value for r in records) == sorted(f"v{i}".encode() for i in range(50))
    # one key, one partition, in order
    for key in {r.key for r in records}:
        same_key = [r for r in records if r.key == key]
        assert len({r.partition for r in same_key}) == 1
        assert [r.offset for r in same_key] == sorted(r.offset for r in same_key)


def test_aiokafka_through_a_faust_exactly_once_worker(
    settings: Settings, group_id: str, tmp_path: Path
) -> None:
    source, sink = settings.topic("echo.in"), settings.topic("echo.out")
    ensure_topics(
        settings,
        [
            TopicSpec(source, settings.partitions),
            TopicSpec(sink, settings.partitions),
        ],
    )
    env = {
        **os.environ,
        "ECHO_BOOTSTRAP": settings.bootstrap,
        "ECHO_APP_ID": settings.app_id,
        "ECHO_SOURCE": source,
        "ECHO_SINK": sink,
        "ECHO_PARTITIONS": str(settings.partitions),
        "ECHO_DATADIR": str(tmp_path / "faust"),
    }
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, str(ECHO_APP), "worker", "-l", "warn", "--without-web"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        for i in range(20):
            producer.send(source, key=f"s{i % 4}".encode(), value=json.dumps({"n": i}).encode())
        producer.flush()
        producer.close()
        records = _consume(
            settings.bootstrap,
            sink,
            group_id,
            20,
            timeout_s=120,
            alive=lambda: worker.poll() is None,
        )
        log = (tmp_path / "worker.log").read_text(errors="replace")
        assert len(records) == 20, log[-3000:]
        counts = {}
        for r in records:
            body = json.loads(r.value)
            counts[r.key] = body["seen"]
            assert body["n"] % 4 == int(r.key.decode()[1:])
        assert counts == {f"s{k}".encode(): 5 for k in range(4)}
        changelog = f"{settings.app_id}-echo_counts-changelog"
        described = describe_topics(settings, [changelog, source])
        assert described[changelog]["partitions"] == described[source]["partitions"]
    finally:
        worker.kill()
        worker.wait()
