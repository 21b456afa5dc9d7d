"""The findings of the hardening review, each against a real broker and a real worker.

One worker (processors and events API) serves the module. Records reach ``actions`` through
changefeed's own :class:`~producers.publisher.Publisher` and, as another producer would
write them, straight from a Kafka producer; poison records are also written straight to
``changes``. Secrets are looked for in the raw bytes of every topic, changelog and index file.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from worker_process import WorkerProcess, wait_until

from changefeed.cli import main
from changefeed.config import BrokerSettings, Settings, WebLimits
from changefeed.topics import changelog_topic, ensure_topics
from events_api.access.errors import ApiKeyError
from events_api.access.key_topic import KeyStore
from events_api.access.keys import Role, new_key
from processors import models
from producers.errors import InvalidActionError
from producers.publisher import Publisher
from schemas.action_contract import subject_key
from schemas.codec import default_codec

T0 = 1_700_000_000_000_000


def http_get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@dataclass
class Deployment:
    settings: Settings
    worker: WorkerProcess
    publisher: Publisher
    raw: KafkaProducer
    keys: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.worker.port}"

    def get(self, path: str, key: str = "acme", **params: str) -> tuple[int, Any]:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, _, body = http_get(f"{self.base}{path}{query}", {"X-Api-Key": self.keys[key]})
        return status, json.loads(body) if body else None

    def send_raw(self, topic: str, key: str | bytes | None, value: bytes | None) -> None:
        raw_key = key.encode() if isinstance(key, str) else key
        self.raw.send(self.settings.topic(topic), key=raw_key, value=value).get(timeout=30)

    def wait_for_event(self, event_id: str, key: str = "acme", timeout_s: float = 60) -> Any:
        found: list[Any] = []

        def indexed() -> bool:
            status, body = self.get("/v1/events", key, limit="1000")
            assert status == 200, body
            found[:] = [e for e in body["events"] if e["event_id"] == event_id]
            return bool(found)

        wait_until(indexed, timeout_s, f"event {event_id} in the feed")
        return found[0]


@pytest.fixture(scope="module")
def deployment(
    kafka_bootstrap: str, broker_settings: BrokerSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    unique = uuid.uuid4().hex[:10]
    base: Path = tmp_path_factory.mktemp("hardening")
    settings = Settings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"t{unique}.",
        app_id=f"cf-{unique}",
        partitions=2,
        data_dir=base / "worker",
        broker=broker_settings,
        web_limits=WebLimits(header_timeout_s=2.0, max_connections=200),
    )
    ensure_topics(settings)
    store = KeyStore(settings)
    keys = {}
    for tenant in ("acme", "globex"):
        key, record = new_key(tenant, Role.ADMIN, name=tenant)
        store.put(record)
        keys[tenant] = key
    worker = WorkerProcess(settings, base).start()
    publisher = Publisher(settings, spool_dir=base / "spool")
    raw = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        worker.wait_ready()
        yield Deployment(settings, worker, publisher, raw, keys)
    finally:
        publisher.close()
        raw.close()
        worker.stop()


def action(event_id: str, **changes: Any) -> dict[str, Any]:
    record = {
        "event_id": event_id,
        "request_id": f"req-{event_id}",
        "tenant_id": "acme",
        "action": "create",
        "event_type": "project:created",
        "subject_type": "project",
        "subject_id": event_id,
        "subject_ref": None,
        "version": 1,
        "occurred_at": T0,
        "actor": {
            "user_id": "u-1",
            "application_id": None,
            "api_version": "v1",
            "api_key_fingerprint": None,
        },
        "criticality": 0,
        "code": 0,
        "internal": True,
        "payload_content_type": "application/json",
        "payload": '{"name": "P"}',
        "source": "/test",
    }
    record.update(changes)
    return record


def raw_value(record: dict[str, Any]) -> bytes:
    return default_codec().encode("changefeed.ApiAction", record)


def key_of(record: dict[str, Any]) -> str:
    return subject_key(record["tenant_id"], record["subject_type"], record["subject_id"])


def topic_bytes(settings: Settings, topic: str) -> bytes:
    """Every key, value and header of ``topic``, aborted transactions included."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        consumer.seek_to_beginning(*tps)
        chunks: list[bytes] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for messages in consumer.poll(timeout_ms=500).values():
                for m in messages:
                    chunks += [m.key or b"", m.value or b""]
                    chunks += [v for _, v in m.headers]
        return b"\n".join(chunks)
    finally:
        consumer.close()


# -- 1. no poison record ------------------------------------------------------------------


def test_poison_records_on_changes_never_stop_the_feed(deployment: Deployment) -> None:
    d = deployment
    codec = default_codec()
    poison = {
        "change_id": str(uuid.uuid4()),
        "event_id": "poison-1",
        "request_id": "req-poison-1",
        "tenant_id": "acme",
        "action": "create",
        "event_type": "project:created",
        "subject_type": "project",
        "subject_id": "poison-1",
        "subject_ref": None,
        "version": 1,
        "actor": {
            "user_id": "u-1",
            "application_id": None,
            "api_version": "v1",
            "api_key_fingerprint": None,
        },
        "criticality": 0,
        "code": 0,
        "internal": True,
        "payload_content_type": "application/json",
        "previous_payload": None,
        "current_payload": '{"name":"broken emoji \\ud83d"}',
        "payload_changes": [],
        "field_changes": {},
        "late": False,
        "subject_sequence": 0,
        "subject_changed_at": T0,
        "created_at": int(time.time() * 1_000_000),
        "source": "/other",
    }
    infinite = {
        **poison,
        "change_id": str(uuid.uuid4()),
        "event_id": "poison-2",
        "action": "custom",
        "subject_id": "poison-2",
        "current_payload": '{"reading": 1e400}',
    }
    before = d.worker.metrics().get("feed_skipped", 0)
    d.send_raw("changes", "acme/project/poison-1", codec.encode("changefeed.ChangeEvent", poison))
    d.send_raw("changes", "acme/project/poison-2", codec.encode("changefeed.ChangeEvent", infinite))
    d.send_raw("changes", "acme/project/poison-3", b"not a change event")
    # The same surrogate written to actions by another producer is dead-lettered, not indexed.
    bad = action("poison-action", payload='{"name":"broken emoji \\ud83d"}')
    d.send_raw("actions", key_of(bad), raw_value(bad))
    d.publisher.publish(action("after-poison", tenant_id="globex"))

    after = d.wait_for_event("after-poison", key="globex")  # other tenants keep being served
    assert after["tenant_id"] == "globex"
    served = d.wait_for_event("poison-1")
    assert served["current_payload"] == '{"name":"broken emoji \\ud83d"}'  # text, strict JSON
    status, _, body = http_get(f"{d.base}/v1/events?limit=1000", {"X-Api-Key": d.keys["acme"]})
    assert status == 200 and b"Infinity" not in body
    status, subject = d.get("/v1/subjects/project/poison-1")
    assert status in (200, 404), subject  # never a 500
    wait_until(
        lambda: d.worker.metrics().get("feed_skipped", 0) >= before + 1, 30, "the skip counted"
    )
    health = d.worker.health() or {}
    assert health["checks"]["feed_index"]["skipped_records"] >= 1
    assert health["ready"] is True, health


# -- 2. unambiguous keys --------------------------------------------------------------------


def test_acme_and_acme_x_can_never_share_a_subject(deployment: Deployment) -> None:
    d = deployment
    with pytest.raises(InvalidActionError, match="tenant_id"):
        d.publisher.publish(action("slash-tenant", tenant_id="acme/x", subject_id="1"))
    with pytest.raises(ApiKeyError, match="tenant"):
        new_key("acme/x", Role.ADMIN)
    # acme's own subject whose id holds a slash: its key is escaped, its URL encodes the slash.
    mine = action(
        "acme-slash", subject_type="x", subject_id="project/1", payload='{"name": "acme-own"}'
    )
    d.publisher.publish(mine)
    # Another producer writing tenant "acme/x" is dead-lettered, never stored.
    foreign = action(
        "foreign-acme-x",
        tenant_id="acme/x",
        subject_id="1",
        payload='{"name": "acme-x-secret-name"}',
    )
    d.send_raw("actions", "acme/x/project/1", raw_value(foreign))
    d.wait_for_event("acme-slash")
    status, state = d.get("/v1/subjects/x/project%2F1")
    assert status == 200, state
    assert state["subject_id"] == "project/1" and state["state"]["name"] == "acme-own"
    status, history = d.get("/v1/subjects/x/project%2F1/history")
    assert [e["event_id"] for e in history["events"]] == ["acme-slash"]
    status, body = d.get("/v1/subjects/x%2Fproject/1")
    assert status == 400 and "subject_type" in body["error"]["message"]
    states = read_committed_changelog(d.settings, models.SUBJECT_STATE)
    assert subject_key("acme", "x", "project/1").encode() in states
    assert not any(b"acme-x-secret-name" in value for value in states.values())


def read_committed_changelog(settings: Settings, table: str) -> dict[bytes, bytes]:
    """The last committed value of each key of a table's changelog."""
    topic = changelog_topic(settings, table)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap, group_id=None, isolation_level="read_committed"
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        consumer.seek_to_beginning(*tps)
        latest: dict[bytes, bytes] = {}
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for messages in consumer.poll(timeout_ms=500).values():
                for m in messages:
                    if m.value is None:
                        latest.pop(m.key, None)
                    else:
                        latest[m.key] = m.value
        return latest
    finally:
        consumer.close()


# -- 3. no secret in clear -------------------------------------------------------------------


def test_planted_secrets_reach_no_topic_table_or_index_in_clear(deployment: Deployment) -> None:
    d = deployment
    ours = {
        "nested": {"password": "PLANT-ours-nested"},
        "list": [{"secret": "PLANT-ours-array"}],
        "Password": "PLANT-ours-case",
        "integration": {"api_key": "PLANT-ours-integration"},
        "name": "visible-ours",
    }
    theirs = {
        "nested": {"password": "PLANT-theirs-nested"},
        "list": [{"Secret": "PLANT-theirs-array"}],
        "TOKEN": "PLANT-theirs-case",
        "name": "visible-theirs",
    }
    d.publisher.publish(action("secrets-ours", payload=json.dumps(ours)))
    d.publisher.publish(
        action(
            "secrets-text",
            action="custom",
            event_type="custom:10001",
            payload_content_type="text/plain",
            payload="login ok password=PLANT-ours-text user=bob",
        )
    )
    other = action("secrets-theirs", payload=json.dumps(theirs))
    d.send_raw("actions", key_of(other), raw_value(other))  # another producer: clear on actions
    dead = action("secrets-dead", payload='{"password": "PLANT-dlq", "broken": ')
    d.send_raw("actions", key_of(dead), raw_value(dead))
    for event_id in ("secrets-ours", "secrets-text", "secrets-theirs"):
        d.wait_for_event(event_id)
    wait_until(lambda: dlq_has(d, "secrets-dead"), 60, "its dead letter")

    planted_ours = [
        b"PLANT-ours-nested",
        b"PLANT-ours-array",
        b"PLANT-ours-case",
        b"PLANT-ours-integration",
        b"PLANT-ours-text",
    ]
    planted_all = [
        *planted_ours,
        b"PLANT-theirs-nested",
        b"PLANT-theirs-array",
        b"PLANT-theirs-case",
        b"PLANT-dlq",
    ]
    s = d.settings
    assert not [p for p in planted_ours if p in topic_bytes(s, s.topic("actions"))]
    blobs = {
        "changes": topic_bytes(s, s.topic("changes")),
        "actions.dlq": topic_bytes(s, s.topic("actions.dlq")),
        "subject_state": topic_bytes(s, changelog_topic(s, models.SUBJECT_STATE)),
        "seen_events": topic_bytes(s, changelog_topic(s, models.SEEN_EVENTS)),
    }
    for path in s.data_dir.rglob("*"):  # the feed index and the tables' local files
        if path.is_file():
            blobs[str(path.relative_to(s.data_dir))] = path.read_bytes()
    leaks = [(name, p) for name, blob in blobs.items() for p in planted_all if p in blob]
    assert leaks == []
    assert b"visible-ours" in blobs["changes"] and b"visible-theirs" in blobs["changes"]


def dlq_has(d: Deployment, text: str) -> bool:
    from changefeed.dlq import list_dead_letters

    return any(text in (entry.get("key") or "") for entry in list_dead_letters(d.settings))


# -- DLQ commands ------------------------------------------------------------------------


def test_dlq_list_show_and_redrive(
    deployment: Deployment,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    d = deployment
    for name, value in d.worker.env.items():
        if name.startswith("CHANGEFEED_"):
            monkeypatch.setenv(name, value)
    broken = action("dlq-broken", payload='{"password": "hunter2-dlq", "name": ')
    wrong_key = action("dlq-wrong-key")  # valid, dead-lettered for its key only
    d.send_raw("actions", key_of(broken), raw_value(broken))
    d.send_raw("actions", "acme/project/not-this-one", raw_value(wrong_key))
    wait_until(lambda: dlq_has(d, "dlq-broken") and dlq_has(d, "not-this-one"), 60, "letters")

    assert main(["dlq", "list"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    offsets = {e["key"]: e["offset"] for e in listed}
    entry = next(e for e in listed if e["key"] == key_of(broken))
    assert entry["original"] == "sealed" and "hunter2-dlq" not in json.dumps(listed)

    assert main(["dlq", "show", str(offsets[key_of(broken)])]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert "hunter2-dlq" in shown["action"]["payload"]  # opened, for the admin

    # Still invalid: not sent, the reason given, exit 1.
    assert main(["dlq", "redrive", "--offset", str(offsets[key_of(broken)])]) == 1
    assert "not sent" in capsys.readouterr().out
    # Valid now (the key is rebuilt from the action): sent, and it becomes a change.
    assert main(["dlq", "redrive", "--offset", str(offsets["acme/project/not-this-one"])]) == 0
    d.wait_for_event("dlq-wrong-key")
    # Fixed by the admin: the edited action is sent, masked like any other.
    fixed = {**shown["action"], "payload": '{"password": "hunter2-dlq", "name": "fixed"}'}
    path = tmp_path / "fixed.json"
    path.write_text(json.dumps(fixed))
    offset = str(offsets[key_of(broken)])
    assert main(["dlq", "redrive", "--offset", offset, "--fixed", str(path)]) == 0
    event = d.wait_for_event("dlq-broken")
    assert event["current_payload"]["name"] == "fixed"
    assert "hunter2-dlq" not in json.dumps(event)


# -- 5. health and resources ---------------------------------------------------------------


def test_half_sent_headers_are_closed_and_health_shows_its_checks(deployment: Deployment) -> None:
    d = deployment
    health = d.worker.health() or {}
    assert health["ready"] is True
    assert health["checks"]["broker"]["ok"] and health["checks"]["feed_index"]["ok"]
    sockets = []
    try:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", d.worker.port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
            sockets.append(sock)
        began = time.monotonic()
        for sock in sockets:
            assert sock.recv(1024) == b""  # closed by the worker (header timeout 2 s)
        assert time.monotonic() - began < 9.0
    finally:
        for sock in sockets:
            sock.close()
    assert (d.worker.health() or {}).get("ready") is True
    files = list((d.settings.data_dir / "feed").iterdir())
    assert files and all(p.stat().st_mode & 0o077 == 0 for p in files)
