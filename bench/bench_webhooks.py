"""Webhook delivery: deliveries per second and commit -> delivery latency, with a slow endpoint.

Run ``python bench/bench_webhooks.py`` (``--bootstrap``, default: start or reuse the
project's broker). It creates fresh topics, starts one real ``changefeed worker`` (which
delivers webhooks) and, in a child process, ten receivers on 127.0.0.1; it subscribes each
receiver to every change of one tenant. Nine receivers answer 204 at once; the tenth
answers after ``--slow-s`` (5 s), past the worker's attempt timeout, so its deliveries fail,
become jobs and are retried all along. Changes are produced straight to ``changes``
(acks=all: the ack is the commit; ``read_committed`` readers see the record from then on).

* **ceiling**: the same bodies POSTed by a bare aiohttp client (no Kafka, no signing, no
  bookkeeping), 16 at a time per receiver: what the receivers and HTTP on this machine take.
* **throughput**: ``--backlog`` changes produced at once; healthy deliveries per second from
  the first produce to the last arrival (target >= 2,000/s), and the ratio to the ceiling.
* **latency**: ``--rate`` changes/s for ``--seconds``; for each healthy delivery, the time
  from the produce ack to its arrival at the receiver: p50/p99 (target p99 <= 500 ms) while
  the slow endpoint is being retried (its attempts and queued jobs are printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from kafka import KafkaProducer

from changefeed.broker.local import broker_for
from changefeed.config import Settings
from changefeed.kafka.admin import admin_client
from changefeed.topics import ensure_topics
from events_api.access.key_topic import KeyStore
from events_api.access.keys import KeyScope, Role, new_key
from schemas.codec import default_codec

RECEIVERS = 10
TENANT = "bench"


# -- receivers (child process) ------------------------------------------------------------


def serve_receivers(base_port: int, slow_s: float, ready: Any) -> None:
    """Ten receivers on base_port.. (the last one slow) and a control port that reports what
    arrived: {port: [[webhook_id, arrival_time], ...]}."""
    arrivals: dict[int, list[tuple[str, float]]] = {base_port + i: [] for i in range(RECEIVERS)}

    def receiver(port: int, slow: bool) -> web.Application:
        async def receive(request: web.Request) -> web.Response:
            await request.read()
            if slow:
                await asyncio.sleep(slow_s)
            arrivals[port].append((request.headers.get("webhook-id", ""), time.time()))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", receive)
        return app

    async def report(request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        body = {
            str(p): a[since:] if request.query.get("full") else len(a) for p, a in arrivals.items()
        }
        return web.json_response(body)

    async def main() -> None:
        runners = []
        for i in range(RECEIVERS):
            runner = web.AppRunner(receiver(base_port + i, i == RECEIVERS - 1), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", base_port + i, backlog=1024).start()
            runners.append(runner)
        control = web.Application()
        control.router.add_get("/arrivals", report)
        runner = web.AppRunner(control, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", base_port + RECEIVERS).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def arrivals(base_port: int, full: bool = False) -> dict[int, Any]:
    url = f"http://127.0.0.1:{base_port + RECEIVERS}/arrivals" + ("?full=1" if full else "")
    with urllib.request.urlopen(url, timeout=60) as answer:
        return {int(k): v for k, v in json.loads(answer.read()).items()}


# -- the worker and the API ---------------------------------------------------------------


def start_worker(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CHANGEFEED_BOOTSTRAP": settings.bootstrap,
        "CHANGEFEED_TOPIC_PREFIX": settings.topic_prefix,
        "CHANGEFEED_APP_ID": settings.app_id,
        "CHANGEFEED_PARTITIONS": str(settings.partitions),
        "CHANGEFEED_DATA_DIR": str(settings.data_dir),
        "CHANGEFEED_WORKER_PORT": str(port),
        "CHANGEFEED_SECRET": settings.secret.decode(),
        "CHANGEFEED_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
    }
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "changefeed.cli", "worker", "--loglevel", "warning"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def api(port: int, key: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return bool(json.loads(answer.read()).get("ready"))
    except (OSError, ValueError):
        return False


# -- traffic ------------------------------------------------------------------------------


def change(n: int) -> dict[str, Any]:
    now_us = time.time_ns() // 1000
    payload = {"amount": n, "currency": "EUR", "status": "submitted", "lines": [n, n + 1]}
    return {
        "change_id": str(uuid.uuid4()),
        "event_id": f"bench-{n}-{uuid.uuid4().hex[:8]}",
        "request_id": f"req-{n}",
        "tenant_id": TENANT,
        "action": "update",
        "event_type": "expense_report:updated",
        "subject_type": "expense_report",
        "subject_id": str(n % 500),
        "subject_ref": None,
        "version": n,
        "actor": {
            "user_id": "u-1",
            "application_id": "app",
            "api_version": "v1",
            "api_key_fingerprint": "sha256:0011",
        },
        "criticality": 0,
        "code": 0,
        "internal": True,
        "payload_content_type": "application/json",
        "previous_payload": json.dumps({**payload, "status": "draft"}),
        "current_payload": json.dumps(payload),
        "payload_changes": [
            {"op": "replace", "path": "/status", "from": None, "value": '"submitted"'}
        ],
        "field_changes": {"/status": {"old": '"draft"', "new": '"submitted"'}},
        "late": False,
        "subject_sequence": n,
        "subject_changed_at": now_us,
        "created_at": now_us,
        "source": "/bench",
    }


class Producer:
    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic("changes")
        self.codec = default_codec()
        self.producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=1)
        self.acked: dict[str, float] = {}

    def send(self, record: dict[str, Any]) -> None:
        key = f"{TENANT}/expense_report/{record['subject_id']}".encode()
        future = self.producer.send(
            self.topic, key=key, value=self.codec.encode("changefeed.ChangeEvent", record)
        )
        change_id = record["change_id"]
        future.add_callback(lambda _meta, cid=change_id: self.acked.__setitem__(cid, time.time()))

    def flush(self) -> None:
        self.producer.flush()


async def ceiling(base_port: int, bodies: list[bytes]) -> float:
    """Healthy deliveries per second of a bare client to the nine healthy receivers."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(port: int) -> None:
            queue = list(bodies)

            async def worker() -> None:
                while queue:
                    body = queue.pop()
                    async with session.post(
                        f"http://127.0.0.1:{port}/hook", data=body, headers={"webhook-id": "c"}
                    ) as answer:
                        await answer.read()

            await asyncio.gather(*(worker() for _ in range(16)))

        began = time.perf_counter()
        await asyncio.gather(*(one(base_port + i) for i in range(RECEIVERS - 1)))
        return len(bodies) * (RECEIVERS - 1) / (time.perf_counter() - began)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("CHANGEFEED_BOOTSTRAP"))
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--backlog", type=int, default=4000, help="changes for the throughput phase"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="changes/s, latency phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="latency phase length")
    parser.add_argument("--slow-s", type=float, default=5.0, help="the slow endpoint's delay")
    parser.add_argument("--port", type=int, default=16199, help="the worker's web port")
    parser.add_argument("--receiver-port", type=int, default=16200, help="first receiver port")
    args = parser.parse_args()

    bootstrap, started = broker_for(args.bootstrap)
    unique = uuid.uuid4().hex[:8]
    data_dir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    settings = Settings(
        bootstrap=bootstrap,
        topic_prefix=f"bench{unique}.",
        app_id=f"bench-{unique}",
        partitions=args.partitions,
        data_dir=data_dir,
        secret=os.urandom(24).hex().encode(),
    )
    ensure_topics(settings)
    key, record = new_key(TENANT, Role.ADMIN, name="bench", scopes=(KeyScope.READ, KeyScope.WRITE))
    KeyStore(settings).put(record)
    ready = multiprocessing.Event()
    receivers = multiprocessing.Process(
        target=serve_receivers, args=(args.receiver_port, args.slow_s, ready), daemon=True
    )
    receivers.start()
    ready.wait(30)
    worker = start_worker(settings, args.port, data_dir / "worker.log")
    base = args.receiver_port
    try:
        wait_until(lambda: healthy(args.port), 180, "the worker")
        for i in range(RECEIVERS):
            api(
                args.port,
                key,
                "POST",
                "/v1/webhooks",
                {
                    "url": f"http://127.0.0.1:{base + i}/hook",
                    "event_types": ["expense_report:*"],
                    "description": "slow" if i == RECEIVERS - 1 else f"healthy {i}",
                },
            )
        bodies = [json.dumps(change(n)).encode() for n in range(2000)]
        bare = asyncio.run(ceiling(base, bodies))
        print(f"ceiling     bare aiohttp client -> 9 receivers: {bare:8,.0f} deliveries/s")
        healthy_ports = [base + i for i in range(RECEIVERS - 1)]
        before = arrivals(base)

        producer = Producer(settings)
        began = time.time()
        for n in range(args.backlog):
            producer.send(change(n))
        producer.flush()
        goal = {p: before[p] + args.backlog for p in healthy_ports}
        wait_until(
            lambda: all(arrivals(base)[p] >= goal[p] for p in healthy_ports), 600, "the backlog"
        )
        full = arrivals(base, full=True)
        last = max(t for p in healthy_ports for _, t in full[p][before[p] :])
        rate = args.backlog * len(healthy_ports) / (last - began)
        print(
            f"throughput  {args.backlog:,} changes x 9 healthy subscriptions: {rate:8,.0f} "
            f"deliveries/s (target >= 2,000; {rate / bare:.2f} of the ceiling)"
        )

        before = arrivals(base)
        sent = 0
        began = time.time()
        while time.time() - began < args.seconds:
            due = int((time.time() - began) * args.rate)
            while sent < due:
                producer.send(change(args.backlog + sent))
                sent += 1
            time.sleep(0.005)
        producer.flush()
        goal = {p: before[p] + sent for p in healthy_ports}
        wait_until(
            lambda: all(arrivals(base)[p] >= goal[p] for p in healthy_ports), 300, "paced changes"
        )
        full = arrivals(base, full=True)
        latencies = [
            t - producer.acked[cid]
            for p in healthy_ports
            for cid, t in full[p][before[p] :]
            if cid in producer.acked
        ]
        windows: dict[int, list[float]] = {}
        for p in healthy_ports:
            for cid, t in full[p][before[p] :]:
                if cid in producer.acked:
                    second = int((producer.acked[cid] - began) // 5) * 5
                    windows.setdefault(second, []).append(t - producer.acked[cid])
        print(
            "            by 5 s window (p99 ms): "
            + "  ".join(
                f"{w}s:{percentile(v, 0.99) * 1000:.0f}" for w, v in sorted(windows.items())
            )
        )
        slow_port = base + RECEIVERS - 1
        jobs = api(args.port, key, "GET", "/v1/webhooks/failed?count=1")
        p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
        print(
            f"latency     {sent:,} changes at {args.rate:g}/s x 9 healthy: commit -> delivery "
            f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms (target p99 <= 500 ms)"
        )
        print(
            f"slow        endpoint answering after {args.slow_s:g}s: {len(full[slow_port])} "
            f"attempts completed by it; jobs {jobs['counts']}"
        )
    finally:
        worker.terminate()
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
        receivers.terminate()
        with admin_client(settings.bootstrap) as admin:
            own = (settings.topic_prefix, f"{settings.app_id}-")
            names = [t for t in admin.list_topics() if t.startswith(own)]
            if names:
                admin.delete_topics(names)
        subprocess.run(["rm", "-rf", str(data_dir)], check=False)
        if started is not None:
            started.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
