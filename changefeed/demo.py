"""``changefeed demo``: the whole pipeline on one machine, with realistic traffic.

Starts (or reuses) the local broker, declares the topics, starts the processors worker
(which also serves the events API) and the demo business API as child processes, drives
demo traffic through the demo API, waits until the change events it caused are readable
on ``changes`` (read_committed), and prints what happened and where to look.

Webhooks: before the traffic, it starts ``changefeed webhooks listen`` on ``webhook_port``,
subscribes it (through the events API, with an admin key of tenant ``acme``) to every
change of ``acme``, and afterwards shows what the listener received, signatures verified.
The worker is allowed to deliver to 127.0.0.0/8 (``CHANGEFEED_WEBHOOK_ALLOW_NETWORKS``,
unless set already); nothing else is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from changefeed.broker import LocalBroker
from changefeed.config import Settings
from changefeed.errors import ChangefeedError
from changefeed.kafka.admin import metadata_answers
from changefeed.topics import ensure_topics


@dataclass
class ChangeTap:
    """Counts change events on a topic from its current end, in a background thread."""

    settings: Settings
    topic: str
    count: int = 0
    sample: dict[str, object] | None = None
    last_seen: float = field(default_factory=time.monotonic)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        partitions = [
            TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic))
        ]
        consumer.assign(partitions)
        consumer.seek_to_end(*partitions)
        for tp in partitions:
            consumer.position(tp)  # resolve the end offsets before traffic starts
        threading.Thread(target=self._run, args=(consumer,), daemon=True).start()

    def _run(self, consumer: KafkaConsumer) -> None:
        from events_api.events import render_event
        from schemas.codec import default_codec

        codec = default_codec()
        while not self._stop.is_set():
            for batch in consumer.poll(timeout_ms=200).values():
                self.count += len(batch)
                self.last_seen = time.monotonic()
                if self.sample is None or (self.sample.get("action") != "update"):
                    last = batch[-1]
                    change = codec.decode(last.value, "changefeed.ChangeEvent")
                    self.sample = render_event(change, last.partition, last.offset)
        consumer.close()

    def stop(self) -> None:
        self._stop.set()


def run_demo(
    settings: Settings,
    *,
    duration_s: float,
    rate: float,
    keep_running: bool,
    webhook_port: int | None = None,
) -> int:
    log_dir = settings.data_dir.parent / "demo"
    log_dir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    if settings.bootstrap != settings.broker.bootstrap:  # CHANGEFEED_BOOTSTRAP: not ours
        if not metadata_answers(settings.bootstrap, timeout_s=30.0):
            raise ChangefeedError(f"no Kafka broker answers at {settings.bootstrap}")
        print(f"==> Kafka at {settings.bootstrap}")
    else:
        status = LocalBroker(settings.broker).start()
        print(
            f"==> Kafka {settings.broker.kafka_version}: {status.describe()}"
            f" [{time.monotonic() - began:.1f}s]"
        )
        settings = settings.with_(bootstrap=status.bootstrap)
    for report in ensure_topics(settings):
        print(f"    topic {report.describe()}")

    env = _child_env(settings)
    children = {
        "worker": _spawn(["worker"], env, log_dir / "worker.log"),
        "demo-api": _spawn(["demo-api"], env, log_dir / "demo-api.log"),
    }
    try:
        worker_url = f"http://127.0.0.1:{settings.worker_web_port}"
        demo_url = f"http://{settings.api_host}:{settings.demo_api_port}"
        _wait_healthy("worker", f"{worker_url}/healthz", children["worker"], log_dir, 180)
        _wait_healthy("demo-api", f"{demo_url}/healthz", children["demo-api"], log_dir, 60)
        print(f"==> worker and events API ready at {worker_url}; demo API at {demo_url}")
        key, key_id = _admin_key(settings, "acme")
        port = webhook_port or settings.demo_api_port + 1
        hook = _subscribe_listener(worker_url, key, port, env, log_dir)
        children["webhooks-listen"] = hook.listener

        tap = ChangeTap(settings, settings.topic("changes"))
        tap.start()
        from producers.loadgen import LoadProfile, run_loadgen

        print(f"==> sending demo traffic: {rate:g} requests/s for {duration_s:g}s")
        profile = LoadProfile(
            rate=rate,
            duration_s=duration_s,
            tenants=3,
            duplicate_rate=0.05,
            out_of_order_rate=0.05,
            seed=None,
        )
        run_loadgen(settings, profile, target=demo_url)
        _wait_quiet(tap, quiet_s=3.0, limit_s=60.0)
        tap.stop()
        _print_summary(settings, tap, worker_url, demo_url, log_dir)
        _show_webhooks(hook, worker_url, key)
        _show_events_api(worker_url, "acme", key, key_id, keep_running=keep_running)
        if keep_running:
            print("==> services keep running; Ctrl-C stops them (the broker stays up)")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0 if tap.count > 0 else 1
    finally:
        for child in children.values():
            _terminate(child)


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CHANGEFEED_BOOTSTRAP=settings.bootstrap,
        CHANGEFEED_TOPIC_PREFIX=settings.topic_prefix,
        CHANGEFEED_PARTITIONS=str(settings.partitions),
        CHANGEFEED_APP_ID=settings.app_id,
        CHANGEFEED_DATA_DIR=str(settings.data_dir),
        CHANGEFEED_WORKER_PORT=str(settings.worker_web_port),
        CHANGEFEED_DEMO_API_PORT=str(settings.demo_api_port),
    )
    env.setdefault("CHANGEFEED_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8")
    return env


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "changefeed.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _wait_healthy(
    name: str, url: str, child: subprocess.Popen[bytes], log_dir: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise ChangefeedError(
                f"{name} exited with {child.returncode}; see {log_dir / (name + '.log')}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)  # polling a condition
    raise ChangefeedError(f"{name} was not healthy at {url} within {timeout_s:.0f}s")


def _wait_quiet(tap: ChangeTap, *, quiet_s: float, limit_s: float) -> None:
    """Wait until change events stop arriving (the pipeline has caught up), or the limit."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if tap.count and time.monotonic() - tap.last_seen >= quiet_s:
            return
        time.sleep(0.2)


def _print_summary(
    settings: Settings, tap: ChangeTap, worker_url: str, demo_url: str, log_dir: Path
) -> None:
    print(f"==> {tap.count} change events are readable on '{settings.topic('changes')}'")
    if tap.sample is not None:
        print("    a sample change event:")
        print(json.dumps(tap.sample, indent=2, default=str)[:3000])
    print(
        f"""
Where to look
  events API       {worker_url}   (see README: /v1/events ..., /openapi.json)
  events explorer  {worker_url}/explorer   (sign in with an API key)
  worker health    {worker_url}/healthz     metrics: {worker_url}/metrics
  demo API         {demo_url}   (POST /v1/projects, /v1/expense_reports, ...)
  topics           changefeed topics describe
  logs             {log_dir}
  broker           changefeed broker status | changefeed broker stop"""
    )


def _admin_key(settings: Settings, tenant: str) -> tuple[str, str]:
    """A new admin key of ``tenant`` (stored as a digest) and its key id."""
    from events_api.access.key_topic import KeyStore
    from events_api.access.keys import KeyScope, Role, new_key

    # read,write: the demo subscribes its webhook listener with this key.
    key, record = new_key(
        tenant, Role.ADMIN, name="changefeed demo", scopes=(KeyScope.READ, KeyScope.WRITE)
    )
    KeyStore(settings).put(record)
    return key, record.key_id


@dataclass
class DemoWebhook:
    subscription: dict[str, object]
    listener: subprocess.Popen[bytes]
    log: Path


def _api_call(url: str, key: str, method: str = "GET", body: object = None) -> object:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-Api-Key": key, "Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        return json.load(response)


def _subscribe_listener(
    worker_url: str, key: str, port: int, env: dict[str, str], log_dir: Path
) -> DemoWebhook:
    """Subscribe a ``changefeed webhooks listen`` on ``port`` to every change of the key's
    tenant, and start it with the subscription's secret (passed in its environment)."""
    subscription = _api_call(
        worker_url + "/v1/webhooks",
        key,
        "POST",
        {
            "url": f"http://127.0.0.1:{port}/changefeed",
            "event_types": ["*"],
            "description": "changefeed demo: webhooks listen",
        },
    )
    assert isinstance(subscription, dict)
    secret = str(subscription.pop("secret"))
    log = log_dir / "webhooks-listen.log"
    log.write_bytes(b"")
    listener = _spawn(
        ["webhooks", "listen", "--port", str(port)],
        {**env, "CHANGEFEED_WEBHOOK_SECRET": secret},
        log,
    )
    deadline = time.monotonic() + 30
    while "listening on" not in log.read_text(errors="replace"):
        if listener.poll() is not None or time.monotonic() > deadline:
            raise ChangefeedError(f"webhooks listen did not start; see {log}")
        time.sleep(0.1)  # polling a condition
    print(
        f"==> webhook subscription {subscription['id']} -> http://127.0.0.1:{port}/changefeed "
        "(changefeed webhooks listen, verifying signatures)"
    )
    return DemoWebhook(subscription, listener, log)


def _show_webhooks(hook: DemoWebhook, worker_url: str, key: str, limit_s: float = 30.0) -> None:
    """What the listener received, once deliveries have stopped arriving."""
    lines: list[dict[str, object]] = []
    deadline = time.monotonic() + limit_s
    last_count, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        lines = [
            json.loads(line)
            for line in hook.log.read_text(errors="replace").splitlines()
            if line.startswith("{")
        ]
        if len(lines) != last_count:
            last_count, last_change = len(lines), time.monotonic()
        elif lines and time.monotonic() - last_change >= 2.0:
            break
        time.sleep(0.2)  # polling a condition
    verified = sum(1 for line in lines if line.get("verified") is True)
    print(f"==> webhooks: {verified} deliveries received, signatures verified ({hook.log})")
    for line in lines[:3]:
        print(f"    {json.dumps(line)}")
    failed = _api_call(f"{worker_url}/v1/webhooks/failed?count=1", key)
    assert isinstance(failed, dict)
    print(
        f"    failed jobs of the tenant: {failed.get('counts')}; "
        f"try: changefeed webhooks listen --port 9999 --secret whsec_..."
    )


def _show_events_api(
    worker_url: str, tenant: str, key: str, key_id: str, *, keep_running: bool
) -> None:
    """Read ``tenant``'s feed through the events API with an admin key."""
    query = "/v1/events?limit=3&order=desc"
    request = urllib.request.Request(worker_url + query, headers={"X-Api-Key": key})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            page = json.load(response)
    except urllib.error.HTTPError as exc:
        print(f"==> events API answered {exc.code}: {exc.read()[:500]!r}")
        return
    events = page.get("events", [])
    print(f"==> events API: the {len(events)} latest change events of tenant '{tenant}'")
    for event in events:
        changed = ", ".join(sorted(event.get("field_changes") or {})) or "-"
        print(
            f"    {event.get('event_type', '?'):<28} {event.get('subject_id', '?'):<14}"
            f" changed: {changed[:60]}"
        )
    print(
        f"""    an admin key for '{tenant}' was created for you (stored as a digest only):
      export CHANGEFEED_KEY={key}
      curl -s -H "X-Api-Key: $CHANGEFEED_KEY" '{worker_url}{query}'
      curl -s -H "X-Api-Key: $CHANGEFEED_KEY" \\
        '{worker_url}/v1/events/poll?cursor=now&timeout=30'
      curl -s -H "X-Api-Key: $CHANGEFEED_KEY" '{worker_url}/v1/webhooks'
    revoke it with: changefeed keys revoke {key_id}"""
    )
    if not keep_running:
        print(
            "    (the worker and the demo API stop when this command ends; "
            "./scripts/demo.sh --keep-running leaves them up to try the above)"
        )


def _terminate(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
