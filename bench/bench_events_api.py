"""Latency of the events API with a week's worth of change events in retention.

Run ``python bench/bench_events_api.py`` (a broker on ``--bootstrap``, default the test
broker 127.0.0.1:29092). It creates fresh topics, publishes ``--events`` ChangeEvents (1M by
default) for ``--tenants`` tenants (100) straight to ``changes`` (created_at spread over the
last six days), creates one admin key per tenant, starts one real ``changefeed worker``
(processors and events API) and waits until its feed index holds everything. Then, with one
client in this process talking HTTP to the worker:

* **fetch by id**: ``GET /v1/events/{id}`` of random events of random tenants;
* **filtered page of 100**: ``GET /v1/events?limit=100`` with a filter (event type pattern,
  user, subject type + criticality, time range), half first pages, half cursor pages;
* **long-poll wake-up**: a poll waits on a cursor at the tip; a transactional producer
  commits one event; the time from the commit's return to the poll's answer;
* **1,000 concurrent long polls** held by the one worker: its threads, file descriptors and
  memory while they wait, then one transaction with an event per tenant wakes them all.

Figures are printed as p50/p99 (ms) with the targets from the issue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kafka import KafkaProducer

from changefeed.config import Settings
from changefeed.kafka.admin import admin_client
from changefeed.topics import ensure_topics
from events_api.access.key_topic import KeyStore
from events_api.access.keys import Role, new_key
from events_api.views import subject_partition
from schemas.action_contract import subject_key as contract_subject_key
from schemas.codec import default_codec
from schemas.identity import change_id

DAY_US = 86_400_000_000
SUBJECT_TYPES = ("expense_report", "expense", "invoice")
VERBS = ("create", "update", "update", "update", "delete", "custom")
USERS = 20
SUBJECTS_PER_TYPE = 300


def event_of(i: int, n: int, tenants: int, start_us: int, span_us: int) -> dict[str, Any]:
    """Event ``i`` of ``n``: deterministic, so the bench can recompute ids and keys."""
    rng = random.Random(i)
    tenant = f"tenant-{i % tenants:03d}"
    subject_type = SUBJECT_TYPES[rng.randrange(len(SUBJECT_TYPES))]
    verb = VERBS[rng.randrange(len(VERBS))]
    created = start_us + i * span_us // n
    payload = {
        "id": str(rng.randrange(SUBJECTS_PER_TYPE)),
        "title": "Client visit, Lyon",
        "status": rng.choice(["draft", "submitted", "approved"]),
        "amount_cents": rng.randrange(100_000),
        "currency": "EUR",
        "line_items": rng.randrange(10),
        "tags": ["travel", "q3"],
    }
    return {
        "change_id": change_id(f"bench-{i}"),
        "event_id": f"bench-{i}",
        "request_id": f"req-{i // 2}",
        "tenant_id": tenant,
        "action": verb,
        "event_type": f"{subject_type}:{'approved' if verb == 'custom' else verb + 'd'}",
        "subject_type": subject_type,
        "subject_id": payload["id"],
        "subject_ref": {"key": "workspace", "id": "77"},
        "version": i,
        "actor": {
            "user_id": f"u-{rng.randrange(USERS)}",
            "application_id": "app-9",
            "api_version": "v2",
            "api_key_fingerprint": "sha256:3f2a9c1e",
        },
        "criticality": rng.randrange(6),
        "code": rng.choice([0, 1001, 1204, 10_001, 10_002]),
        "internal": True,
        "payload_content_type": "application/json",
        "previous_payload": None if verb == "create" else json.dumps(payload),
        "current_payload": None if verb == "delete" else json.dumps(payload),
        "payload_changes": [
            {"op": "replace", "path": "/status", "from": None, "value": '"approved"'}
        ],
        "field_changes": {"/status": {"old": '"submitted"', "new": '"approved"'}},
        "late": False,
        "subject_sequence": rng.randrange(50),
        "subject_changed_at": created,
        "created_at": created,
        "source": "/changefeed/bench",
    }


def subject_key(event: dict[str, Any]) -> str:
    return contract_subject_key(event["tenant_id"], event["subject_type"], event["subject_id"])


def _publish_range(args: tuple[str, str, int, int, int, int, int, int]) -> int:
    bootstrap, topic, first, last, n, tenants, start_us, span_us = args
    codec = default_codec()
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=512 * 1024
    )
    for i in range(first, last):
        event = event_of(i, n, tenants, start_us, span_us)
        value = codec.encode("changefeed.ChangeEvent", event)
        producer.send(topic, key=subject_key(event).encode(), value=value)
    producer.flush()
    producer.close()
    return last - first


def publish(settings: Settings, n: int, tenants: int, start_us: int, span_us: int) -> float:
    """Publish events 0..n-1 from two processes; returns the seconds it took."""
    began = time.monotonic()
    half = n // 2
    jobs = [
        (settings.bootstrap, settings.topic("changes"), a, b, n, tenants, start_us, span_us)
        for a, b in ((0, half), (half, n))
    ]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert sum(pool.map(_publish_range, jobs)) == n
    return time.monotonic() - began


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def status(self) -> dict[str, int]:
        """Threads, open file descriptors and resident memory (KiB) of the worker."""
        pid = self.process.pid
        fields = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("Threads", "VmRSS"):
                fields[name] = int(value.split()[0])
        fields["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        return fields


def start_worker(settings: Settings, port: int, log: Path) -> WorkerProcess:
    env = {
        **os.environ,
        "CHANGEFEED_BOOTSTRAP": settings.bootstrap,
        "CHANGEFEED_TOPIC_PREFIX": settings.topic_prefix,
        "CHANGEFEED_APP_ID": settings.app_id,
        "CHANGEFEED_PARTITIONS": str(settings.partitions),
        "CHANGEFEED_DATA_DIR": str(settings.data_dir),
        "CHANGEFEED_WORKER_PORT": str(port),
        "CHANGEFEED_SECRET": settings.secret.decode(),
    }
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "changefeed.cli", "worker", "--loglevel", "warning"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return WorkerProcess(process, f"http://127.0.0.1:{port}", log)


def delete_own_topics(settings: Settings) -> None:
    """Delete the topics this run created (its prefix and its app id), nothing else."""
    own = (settings.topic_prefix, f"{settings.app_id}-")
    with admin_client(settings.bootstrap) as admin:
        names = [t for t in admin.list_topics() if t.startswith(own)]
        if names:
            admin.delete_topics(names)


def percentiles(samples_s: list[float]) -> str:
    ordered = sorted(samples_s)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return f"p50 {at(0.50):7.2f} ms   p99 {at(0.99):7.2f} ms   max {ordered[-1] * 1000:7.2f} ms"


class Bench:
    def __init__(self, args: argparse.Namespace, settings: Settings, worker: WorkerProcess):
        self.args = args
        self.settings = settings
        self.worker = worker
        self.keys: dict[str, str] = {}
        self.rng = random.Random(42)
        self.session: aiohttp.ClientSession

    def tenant(self, i: int) -> str:
        return f"tenant-{i % self.args.tenants:03d}"

    def auth(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    async def get(self, path: str, tenant: str, **params: Any) -> tuple[int, Any]:
        url = self.worker.base_url + path
        async with self.session.get(url, params=params, headers=self.auth(tenant)) as response:
            return response.status, await response.json()

    async def wait_indexed(self, n: int, timeout_s: float) -> float:
        """Until the last event of every partition can be fetched; returns seconds."""
        last: dict[int, int] = {}
        for i in range(n - 1, max(-1, n - 50_000), -1):
            event = event_of(i, n, self.args.tenants, 0, 1)
            last.setdefault(subject_partition(subject_key(event), self.settings.partitions), i)
            if len(last) == self.settings.partitions:
                break
        began = time.monotonic()
        pending = dict(last)
        while pending:
            if time.monotonic() - began > timeout_s:
                raise SystemExit(f"not indexed after {timeout_s:.0f}s; see {self.worker.log}")
            for partition, i in list(pending.items()):
                try:
                    status, _ = await self.get(
                        f"/v1/events/{change_id(f'bench-{i}')}", self.tenant(i)
                    )
                except aiohttp.ClientError:
                    status = 0
                if status == 200:
                    del pending[partition]
            await asyncio.sleep(0.5)
        return time.monotonic() - began

    async def fetch_by_id(self, samples: int) -> list[float]:
        latencies = []
        for _ in range(samples):
            i = self.rng.randrange(self.args.events)
            path = f"/v1/events/{change_id(f'bench-{i}')}"
            began = time.perf_counter()
            status, _ = await self.get(path, self.tenant(i))
            latencies.append(time.perf_counter() - began)
            assert status == 200
        return latencies

    def a_filter(self) -> dict[str, str]:
        choice = self.rng.randrange(4)
        if choice == 0:
            return {"event_type": f"{self.rng.choice(SUBJECT_TYPES)}:*"}
        if choice == 1:
            return {"user": f"u-{self.rng.randrange(USERS)}"}
        if choice == 2:
            return {
                "subject_type": self.rng.choice(SUBJECT_TYPES),
                "criticality": f"{self.rng.randrange(1, 6)}",
            }
        start = time.time() - self.rng.uniform(1, 5) * 86_400
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
        return {"start": stamp, "code": "10001,10002"}

    async def filtered_pages(self, samples: int) -> tuple[list[float], list[float], int]:
        first_pages, next_pages, events = [], [], 0
        for _ in range(samples // 2):
            tenant = self.tenant(self.rng.randrange(self.args.tenants))
            params = {"limit": "100", **self.a_filter()}
            began = time.perf_counter()
            status, page = await self.get("/v1/events", tenant, **params)
            first_pages.append(time.perf_counter() - began)
            assert status == 200, page
            events += page["count"]
            began = time.perf_counter()
            status, page = await self.get("/v1/events", tenant, cursor=page["next_cursor"])
            next_pages.append(time.perf_counter() - began)
            assert status == 200, page
            events += page["count"]
        return first_pages, next_pages, events

    def transactional_producer(self) -> KafkaProducer:
        producer = KafkaProducer(
            bootstrap_servers=self.settings.bootstrap,
            transactional_id=f"bench-{uuid.uuid4().hex[:8]}",
            enable_idempotence=True,
            linger_ms=0,
        )
        producer.init_transactions()
        return producer

    def commit(self, producer: KafkaProducer, events: list[dict[str, Any]]) -> float:
        """Send ``events`` in one transaction; returns the time its commit returned."""
        codec = default_codec()
        producer.begin_transaction()
        for event in events:
            value = codec.encode("changefeed.ChangeEvent", event)
            producer.send(
                self.settings.topic("changes"), key=subject_key(event).encode(), value=value
            )
        producer.commit_transaction()
        return time.perf_counter()

    def live_event(self, tenant_index: int, serial: int) -> dict[str, Any]:
        event = event_of(tenant_index, self.args.events, self.args.tenants, 0, 1)
        event = {**event, "event_id": f"live-{serial}", "change_id": change_id(f"live-{serial}")}
        event["created_at"] = event["subject_changed_at"] = time.time_ns() // 1000
        return event

    async def tip(self, tenant: str) -> str:
        status, page = await self.get("/v1/events", tenant, cursor="now", limit="1")
        assert status == 200, page
        cursor: str = page["next_cursor"]
        return cursor

    async def long_poll_wakeup(self, trials: int) -> list[float]:
        producer = await asyncio.to_thread(self.transactional_producer)
        latencies = []
        try:
            for serial in range(trials):
                index = self.rng.randrange(self.args.tenants)
                tenant = self.tenant(index)
                cursor = await self.tip(tenant)
                poll = asyncio.create_task(
                    self.get("/v1/events/poll", tenant, cursor=cursor, timeout="30")
                )
                await asyncio.sleep(0.02)  # let the request reach the worker and park
                committed = await asyncio.to_thread(
                    self.commit, producer, [self.live_event(index, serial)]
                )
                status, body = await poll
                latencies.append(time.perf_counter() - committed)
                assert status == 200 and body["message"] == "new_change", body
        finally:
            producer.close()
        return latencies

    async def many_pollers(self, pollers: int) -> dict[str, Any]:
        producer = await asyncio.to_thread(self.transactional_producer)
        tenants = [self.tenant(i) for i in range(self.args.tenants)]
        cursors = {t: await self.tip(t) for t in tenants}
        before = self.worker.status()
        answered: list[float] = []

        async def poll(tenant: str) -> dict[str, Any]:
            status, body = await self.get(
                "/v1/events/poll", tenant, cursor=cursors[tenant], timeout="60"
            )
            answered.append(time.perf_counter())
            assert status == 200, body
            return dict(body)

        tasks = [asyncio.create_task(poll(tenants[i % len(tenants)])) for i in range(pollers)]
        deadline = time.monotonic() + 30
        while self.worker.status()["fds"] < before["fds"] + pollers * 0.98:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        parked = self.worker.status()
        early = sum(t.done() for t in tasks)
        events = [self.live_event(i, 1_000_000 + i) for i in range(len(tenants))]
        committed = await asyncio.to_thread(self.commit, producer, events)
        bodies = await asyncio.gather(*tasks)
        producer.close()
        woken = sum(b["message"] == "new_change" for b in bodies)
        return {
            "before": before,
            "parked": parked,
            "answered_early": early,
            "woken": woken,
            "latencies": [t - committed for t in answered],
        }


async def run(args: argparse.Namespace, settings: Settings, worker: WorkerProcess) -> None:
    bench = Bench(args, settings, worker)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        bench.session = session
        began = time.monotonic()
        while True:
            try:
                async with session.get(f"{worker.base_url}/healthz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if worker.process.poll() is not None or time.monotonic() - began > 180:
                raise SystemExit(f"the worker did not start; see {worker.log}")
            await asyncio.sleep(0.5)
        for key_tenant, key in args.keys.items():
            bench.keys[key_tenant] = key
        indexed_s = await bench.wait_indexed(args.events, args.index_timeout)
        total_s = time.monotonic() - began
        print(
            f"index      {args.events:,} events indexed {total_s:.0f}s after the worker started"
            f" ({args.events / total_s:,.0f} events/s, {indexed_s:.0f}s after it was ready)"
        )
        await bench.fetch_by_id(200)  # warm the page cache and connections
        fetch = await bench.fetch_by_id(args.samples)
        print(
            f"fetch      by id, {args.samples} requests:        {percentiles(fetch)}"
            "   (target p99 <= 5 ms)"
        )
        first, following, events = await bench.filtered_pages(args.samples)
        print(f"page       filtered, first page of 100:    {percentiles(first)}")
        print(f"page       filtered, next page (cursor):   {percentiles(following)}")
        print(
            f"page       filtered, all {len(first) + len(following)} pages:"
            f"            {percentiles(first + following)}   (target p99 <= 50 ms;"
            f" {events / (len(first) + len(following)):.0f} events/page on average)"
        )
        wake = await bench.long_poll_wakeup(args.wakeups)
        print(
            f"long poll  wake-up after commit, {args.wakeups} polls: {percentiles(wake)}"
            "   (target p99 <= 100 ms)"
        )
        many = await bench.many_pollers(args.pollers)
        before, parked = many["before"], many["parked"]
        print(
            f"pollers    {args.pollers} concurrent long polls held by one worker: threads "
            f"{before['Threads']} -> {parked['Threads']}, open fds {before['fds']} -> "
            f"{parked['fds']}, RSS {before['VmRSS'] / 1024:.0f} -> "
            f"{parked['VmRSS'] / 1024:.0f} MiB; answered before the commit: "
            f"{many['answered_early']}"
        )
        print(
            f"pollers    one commit woke {many['woken']}/{args.pollers}: "
            f"{percentiles(many['latencies'])}"
        )


def prepare(args: argparse.Namespace, name: str) -> tuple[Settings, Path, KeyStore]:
    """Fresh topics named after ``name``, ``args.events`` ChangeEvents over six days of
    ``args.tenants`` tenants, and an admin key of each tenant (in ``args.keys``)."""
    unique = uuid.uuid4().hex[:8]
    data_dir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    settings = Settings(
        bootstrap=args.bootstrap,
        topic_prefix=f"{name}{unique}.",
        app_id=f"{name}-{unique}",
        partitions=args.partitions,
        data_dir=data_dir,
        secret=os.urandom(24).hex().encode(),
    )
    ensure_topics(settings)
    now_us = time.time_ns() // 1000
    span_us = 6 * DAY_US
    seconds = publish(settings, args.events, args.tenants, now_us - span_us - 60_000_000, span_us)
    print(
        f"publish    {args.events:,} ChangeEvents for {args.tenants} tenants to "
        f"{settings.topic('changes')} ({args.partitions} partitions) in {seconds:.0f}s"
    )
    store = KeyStore(settings)
    args.keys = {}
    for i in range(args.tenants):
        tenant = f"tenant-{i:03d}"
        key, record = new_key(tenant, Role.ADMIN, name="bench")
        store.put(record)
        args.keys[tenant] = key
    return settings, data_dir, store


def corpus_arguments(parser: argparse.ArgumentParser) -> None:
    """The options :func:`prepare` and the index wait read: broker, events, tenants."""
    parser.add_argument(
        "--bootstrap", default=os.environ.get("CHANGEFEED_BOOTSTRAP", "127.0.0.1:29092")
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--index-timeout", type=float, default=900.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    corpus_arguments(parser)
    parser.add_argument("--samples", type=int, default=2000, help="requests per latency figure")
    parser.add_argument("--wakeups", type=int, default=200, help="long-poll wake-up trials")
    parser.add_argument("--pollers", type=int, default=1000, help="concurrent long polls")
    parser.add_argument("--port", type=int, default=16099, help="the worker's web port")
    parser.add_argument("--keep", action="store_true", help="keep the worker's data directory")
    args = parser.parse_args()

    settings, data_dir, _ = prepare(args, "bench")
    worker = start_worker(settings, args.port, data_dir / "worker.log")
    try:
        asyncio.run(run(args, settings, worker))
    finally:
        worker.process.send_signal(signal.SIGTERM)
        try:
            worker.process.wait(60)
        except subprocess.TimeoutExpired:
            worker.process.kill()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(data_dir)], check=False)
            delete_own_topics(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
