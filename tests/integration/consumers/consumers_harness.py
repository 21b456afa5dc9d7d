"""A small deployment for the consumers' tests: topics, a real worker, keys and actions.

Actions are published to ``actions`` with kafka-python and the project codec, keyed by
subject as the producers do; the worker derives the changes. Each subject gets a create then
updates, so changes carry diffs.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from changefeed.config import BrokerSettings, Settings
from changefeed.topics import ensure_topics
from events_api.access.key_topic import KeyStore
from events_api.access.keys import Role, new_key
from schemas.action_contract import subject_key
from schemas.codec import default_codec
from schemas.identity import change_id

T0_US = 1_700_000_000_000_000


def fresh_settings(bootstrap: str, broker: BrokerSettings, data_dir: Path) -> Settings:
    unique = uuid.uuid4().hex[:10]
    settings = Settings(
        bootstrap=bootstrap,
        topic_prefix=f"t{unique}.",
        app_id=f"cf-{unique}",
        partitions=2,
        data_dir=data_dir,
        broker=broker,
        secret=b"consumers-test-secret-0123456789",
    )
    ensure_topics(settings)
    return settings


def action(
    n: int, subject: str, *, tenant: str = "acme", user: str = "u-1", run: str = "r"
) -> dict[str, Any]:
    """Action number ``n`` of ``subject``: a create for n == 0, else an update."""
    return {
        "event_id": f"{run}-{subject}-{n}",
        "request_id": f"req-{run}-{n}",
        "tenant_id": tenant,
        "action": "create" if n == 0 else "update",
        "event_type": "expense_report:created" if n == 0 else "expense_report:updated",
        "subject_type": "expense_report",
        "subject_id": subject,
        "version": n,
        "occurred_at": T0_US + n * 1000,
        "actor": {"user_id": user},
        "payload": json.dumps(
            {"amount": n, "title": f"report {subject}", "lines": list(range(n % 4))}
        ),
    }


def actions_for(
    subjects: list[str], rounds: int, *, first: int = 0, **kw: Any
) -> list[dict[str, Any]]:
    """Versions ``first .. first + rounds - 1`` of every subject, round by round."""
    return [action(n, s, **kw) for n in range(first, first + rounds) for s in subjects]


def create_keys(
    settings: Settings, specs: dict[str, tuple[str, Role, str | None]]
) -> dict[str, str]:
    """Keys created the way ``changefeed keys create`` does: records on the key topic."""
    store = KeyStore(settings)
    keys = {}
    for label, (tenant, role, user) in specs.items():
        key, record = new_key(tenant, role, user_id=user, name=label)
        store.put(record)
        keys[label] = key
    return keys


def publish_actions(settings: Settings, actions: list[dict[str, Any]]) -> list[str]:
    """Publish ``actions``; returns the change ids the worker will derive, in order."""
    codec = default_codec()
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    for record in actions:
        key = subject_key(
            record["tenant_id"], record["subject_type"], record["subject_id"]
        ).encode()
        value = codec.encode("changefeed.ApiAction", record)
        producer.send(settings.topic("actions"), key=key, value=value)
    producer.flush()
    producer.close()
    return [change_id(a["event_id"]) for a in actions]


def read_topic(settings: Settings, topic: str) -> list[Any]:
    """Every committed record of ``topic`` up to its end offsets now, partition by partition."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
    )
    try:
        from kafka import TopicPartition

        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        ends = consumer.end_offsets(partitions)
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        out: list[Any] = []
        pending = {tp for tp in partitions if ends[tp] > 0}
        deadline = time.monotonic() + 60
        while pending:
            assert time.monotonic() < deadline, f"could not read {topic} to its end in 60 s"
            for tp, records in consumer.poll(timeout_ms=500).items():
                out.extend(r for r in records if r.offset < ends[tp])
            pending = {tp for tp in pending if consumer.position(tp) < ends[tp]}
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def count_committed(settings: Settings, topic: str) -> int:
    return len(read_topic(settings, topic))
