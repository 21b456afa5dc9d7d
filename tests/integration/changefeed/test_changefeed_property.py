"""Property: no action, however odd, stops the feed or gets a 5xx from the events API.

Random Unicode (lone surrogates included, raw and as ``\\ud83d`` escapes), random JSON
shapes (deep nesting, NaN, huge numbers, slashes, percent signs and NUL in ids) go through
publish -> process -> index -> API on a real broker and a real worker, both through
changefeed's publisher (which must accept or refuse at once, never crash) and straight onto
``actions`` as another producer would write them. After each example every accepted action
must be served, strict JSON, by id, in its subject's history and state, and no request may
answer 5xx. Example counts are bounded so that the module runs in well under two minutes.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer
from worker_process import WorkerProcess, wait_until

from changefeed.config import BrokerSettings, Settings
from changefeed.topics import ensure_topics
from events_api.access.key_topic import KeyStore
from events_api.access.keys import Role, new_key
from producers.errors import InvalidActionError
from producers.publisher import Publisher
from schemas.action_contract import ContractViolation, check_action, subject_key
from schemas.codec import default_codec
from schemas.errors import EncodeError
from schemas.identity import change_id

T0 = 1_700_000_000_000_000
TEXT = st.text(st.characters(exclude_categories=()), max_size=12)  # surrogates included
IDS = st.text(
    st.sampled_from(list("ab/%2F\x00 é\ud83d\U0001f600.:-_")) | st.characters(),
    min_size=1,
    max_size=10,
)
NUMBERS = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([1e308, -0.0, 5e-324])
)
JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)


@st.composite
def payload_texts(draw: st.DrawFn, event_id: str) -> str:
    """JSON text as producers write it: escaped (json.dumps) or raw, sometimes deeply nested
    or with a number no float holds. It names the event, so no update is a no-op."""
    value = {"id": event_id, "v": draw(JSON), "name": draw(TEXT)}
    depth = draw(st.sampled_from([0, 0, 0, 70, 300]))
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    if depth:
        text = f'{{"id": "{event_id}", "deep": ' + "[" * depth + "]" * depth + "}"
    if draw(st.integers(0, 9)) == 0:
        text = text[:-1] + ', "reading": 1e400}'
    return text


@st.composite
def actions(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["create", "update", "custom", "custom-text"]))
    event_id = str(uuid.uuid4())
    text = draw(payload_texts(event_id)) if kind != "custom-text" else draw(TEXT)
    return {
        "event_id": event_id,
        "request_id": f"req-{event_id}",
        "tenant_id": draw(st.sampled_from(["acme"] * 6 + ["acme/x", "a%b"])),
        "action": "custom" if kind.startswith("custom") else kind,
        "event_type": "custom:10001" if kind.startswith("custom") else f"thing:{kind}d",
        "subject_type": draw(st.sampled_from(["thing"] * 6 + ["a/b", "x y"])),
        "subject_id": draw(IDS),
        "subject_ref": None,
        "version": None,
        "occurred_at": T0 + draw(st.integers(0, 10**9)),
        "actor": {
            "user_id": "u-1",
            "application_id": None,
            "api_version": "v1",
            "api_key_fingerprint": None,
        },
        "criticality": 0,
        "code": 10001 if kind.startswith("custom") else 0,
        "internal": not kind.startswith("custom"),
        "payload_content_type": "text/plain" if kind == "custom-text" else "application/json",
        "payload": text,
        "source": "/property",
    }


@dataclass
class Deployment:
    settings: Settings
    worker: WorkerProcess
    publisher: Publisher
    raw: KafkaProducer
    key: str

    def get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.worker.port}{path}"
        request = urllib.request.Request(url, headers={"X-Api-Key": self.key})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@pytest.fixture(scope="module")
def deployment(
    kafka_bootstrap: str, broker_settings: BrokerSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    unique = uuid.uuid4().hex[:10]
    base: Path = tmp_path_factory.mktemp("property")
    cfg = Settings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"t{unique}.",
        app_id=f"cf-{unique}",
        partitions=2,
        data_dir=base / "worker",
        broker=broker_settings,
    )
    ensure_topics(cfg)
    key, record = new_key("acme", Role.ADMIN, name="property")
    KeyStore(cfg).put(record)
    worker = WorkerProcess(cfg, base).start()
    publisher = Publisher(cfg, spool_dir=base / "spool")
    raw = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        worker.wait_ready()
        yield Deployment(cfg, worker, publisher, raw, key)
    finally:
        publisher.close()
        raw.close()
        worker.stop()


def strict(body: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} served: not strict JSON")

    return json.loads(body.decode("utf-8"), parse_constant=refuse)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.tuples(actions(), st.booleans()), min_size=1, max_size=4))
def test_no_action_stops_the_feed_or_gets_a_5xx(
    deployment: Deployment, batch: list[tuple[dict[str, Any], bool]]
) -> None:
    d = deployment
    redactor = d.settings.redactor()
    accepted = []
    for record, through_publisher in batch:
        try:
            expected = check_action(record, redactor)
        except ContractViolation:
            expected = None
        if through_publisher:
            try:
                d.publisher.publish(record)
            except InvalidActionError:
                assert expected is None, "the publisher refused what the contract accepts"
                continue
            assert expected is not None, "the publisher accepted what the processors refuse"
        else:  # another producer: whatever Avro can carry goes onto actions as it is
            try:
                value = default_codec().encode("changefeed.ApiAction", record)
                key = subject_key(record["tenant_id"], record["subject_type"], record["subject_id"])
                d.raw.send(
                    d.settings.topic("actions"),
                    key=key.encode("utf-8", "surrogatepass"),
                    value=value,
                ).get(timeout=30)
            except EncodeError:
                continue
            if expected is None:
                continue  # dead-lettered by the processors
        accepted.append(record)

    sentinel = f"sentinel-{uuid.uuid4()}"
    d.publisher.publish(
        {
            **batch[0][0],
            "tenant_id": "acme",
            "subject_type": "thing",
            "subject_id": sentinel,
            "event_id": sentinel,
            "action": "create",
            "event_type": "thing:created",
            "payload_content_type": "application/json",
            "payload": '{"ok": true}',
            "code": 0,
        }
    )
    for record in [*accepted, {"event_id": sentinel}]:
        path = f"/v1/events/{change_id(record['event_id'])}"
        wait_until(lambda path=path: d.get(path)[0] == 200, 60, f"{path} served")
        status, body = d.get(path)
        served = strict(body)
        assert served["event_id"] == record["event_id"]
    for record in accepted:
        quoted_type = urllib.parse.quote(record["subject_type"], safe="")
        quoted_id = urllib.parse.quote(record["subject_id"], safe="")
        for path in (
            f"/v1/subjects/{quoted_type}/{quoted_id}",
            f"/v1/subjects/{quoted_type}/{quoted_id}/history",
            f"/v1/events?subject_id={quoted_id}&limit=5",
        ):
            status, body = d.get(path)
            assert status < 500, (path, body[:300])
            strict(body)
    status, body = d.get("/v1/events?limit=1000&order=desc")
    assert status == 200
    strict(body)
    health = d.worker.health() or {}
    assert health.get("ready") is True, health


def test_the_index_kept_up_through_every_example(deployment: Deployment) -> None:
    """After the property ran: the feed index is healthy and nothing stopped it."""

    def index_ok() -> bool:
        health = deployment.worker.health() or {}
        return bool(health.get("checks", {}).get("feed_index", {}).get("ok"))

    wait_until(index_ok, 30, "a healthy feed index")
    health = deployment.worker.health() or {}
    assert health["checks"]["feed_index"]["lag_s"] < 30
