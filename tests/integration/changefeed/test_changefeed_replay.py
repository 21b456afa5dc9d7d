"""Replay copies exactly a time window of history, in order, with filters."""

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from changefeed.config import Settings
from changefeed.replay import ReplayError, ReplayWindow, replay
from changefeed.topics import TopicSpec, ensure_topics
from schemas.action_contract import subject_key
from schemas.codec import default_codec

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)


def _change(i: int, tenant: str, event_type: str) -> dict:
    at = BASE + timedelta(minutes=i)
    subject_type = event_type.split(":")[0]
    return {
        "change_id": f"c{i}",
        "event_id": f"e{i}",
        "request_id": f"r{i}",
        "tenant_id": tenant,
        "action": "update",
        "event_type": event_type,
        "subject_type": subject_type,
        "subject_id": str(i % 3),
        "actor": {"user_id": "u1"},
        "current_payload": json.dumps({"n": i}),
        "previous_payload": json.dumps({"n": i - 1}),
        "subject_changed_at": at,
        "created_at": at,
    }


@pytest.fixture
def history(settings: Settings) -> list[dict]:
    """60 change events one minute apart, two tenants, two event types."""
    codec = default_codec()
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    events = []
    for i in range(60):
        tenant = "acme" if i % 2 else "globex"
        event_type = "expense:updated" if i % 3 else "expense_report:updated"
        change = _change(i, tenant, event_type)
        key = subject_key(tenant, change["subject_type"], change["subject_id"]).encode()
        producer.send(
            settings.topic("changes"),
            key=key,
            value=codec.encode("changefeed.ChangeEvent", change),
            headers=[("ce_type", event_type.encode()), ("ce_id", change["change_id"].encode())],
            timestamp_ms=int(change["created_at"].timestamp() * 1000),
        )
        events.append(change)
    producer.flush()
    producer.close()
    return events


def _read_all(settings: Settings, topic: str) -> list:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    records = []
    while any(consumer.position(tp) < ends[tp] for tp in tps):
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()
    return records


def test_window_and_filters_to_a_topic(settings: Settings, history: list[dict]) -> None:
    target = settings.topic("backfill")
    ensure_topics(settings, [TopicSpec(target, settings.partitions)])
    window = ReplayWindow(
        since=BASE + timedelta(minutes=10),
        until=BASE + timedelta(minutes=40),
        tenant="acme",
        event_type="expense:*",
    )
    report = replay(settings, window, source=settings.topic("changes"), target_topic=target)

    expected = {
        e["change_id"]
        for i, e in enumerate(history)
        if 10 <= i < 40 and e["tenant_id"] == "acme" and e["event_type"].startswith("expense:")
    }
    copied = _read_all(settings, target)
    codec = default_codec()
    got = [codec.decode(r.value, "changefeed.ChangeEvent")["change_id"] for r in copied]
    assert sorted(got) == sorted(expected) and len(got) == len(expected)
    assert report.written == len(expected)
    # keys and headers are carried unchanged, so each subject keeps its order
    for record in copied:
        assert record.key.startswith(b"acme/")
        assert dict(record.headers)["ce_type"] == b"expense:updated"
    by_subject: dict[bytes, list[int]] = {}
    for record in copied:
        n = int(codec.decode(record.value, "changefeed.ChangeEvent")["change_id"][1:])
        by_subject.setdefault(record.key, []).append(n)
    assert all(ns == sorted(ns) for ns in by_subject.values())


def test_jsonl_output_decodes_every_record(settings: Settings, history: list[dict]) -> None:
    out = io.StringIO()
    window = ReplayWindow(since=BASE + timedelta(minutes=50))
    report = replay(settings, window, source=settings.topic("changes"), out=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(line["value"]["change_id"] for line in lines) == sorted(
        f"c{i}" for i in range(50, 60)
    )
    assert report.written == 10
    assert report.earliest_available is None


def test_window_older_than_retention_says_history_is_gone(
    settings: Settings, history: list[dict]
) -> None:
    out = io.StringIO()
    window = ReplayWindow(since=datetime.now(UTC) - timedelta(days=30))
    report = replay(settings, window, source=settings.topic("changes"), out=out)
    assert report.earliest_available is not None
    assert "is gone (retention)" in report.describe()
    assert report.written == 60


def test_missing_target_topic_is_a_clear_error(settings: Settings, history: list[dict]) -> None:
    with pytest.raises(ReplayError, match="does not exist"):
        replay(
            settings,
            ReplayWindow(since=BASE),
            source=settings.topic("changes"),
            target_topic=settings.topic("nope"),
        )
