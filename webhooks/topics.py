"""The ``webhooks`` and ``webhook_jobs`` topics: where subscriptions and failed jobs live.

Both are compacted: the latest record of a key is its state, a tombstone deletes it, and a
restart (even after SIGKILL) reads the state back.

* ``webhooks`` (one partition): key = subscription id, value = the subscription with its
  secrets sealed (:meth:`~webhooks.subscriptions.Subscription.seal`).
* ``webhook_jobs`` (as many partitions as ``changes``; compacted and deleted past retention,
  like the changes they carry): key = job id, written to the partition of its change, so
  the worker that delivers a ``changes`` partition owns the jobs of the same partition.

:class:`TopicFollower` reads every partition of a topic from the start and then follows it,
handing each record to a callback; :meth:`TopicFollower.catch_up` waits until every record
written before the call has been applied (read-your-writes for the API).
:class:`SubscriptionBook` and :class:`JobBook` are the folded state every worker keeps.
:class:`WebhookWriter` writes both topics (acks from all replicas before a write counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from changefeed.config import Settings
from webhooks.errors import SealError
from webhooks.jobs import FailedJob
from webhooks.sealing import SecretSealer
from webhooks.subscriptions import Subscription

log = logging.getLogger(__name__)

SUBSCRIPTIONS_TOPIC = "webhooks"
JOBS_TOPIC = "webhook_jobs"
RETRY_S = 1.0
Apply = Callable[[int, bytes | None, bytes | None], None]


class TopicFollower:
    """Applies every record of ``topic`` (all partitions), from the start, then live."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, apply: Apply) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.apply = apply
        self.loaded = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._positions: dict[int, int] = {}
        self._advanced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"follow-{self.topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def catch_up(self, timeout_s: float) -> bool:
        """Whether every record written before this call was applied within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            await asyncio.wait_for(self.loaded.wait(), timeout_s)
            consumer = self._consumer
            if consumer is None:
                return False
            tps = [TopicPartition(self.topic, p) for p in self._positions]
            ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout_s)
        except (KafkaError, TimeoutError):
            return False
        while any(self._positions.get(tp.partition, 0) < end for tp, end in ends.items()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._advanced.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), remaining)
        return True

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep following after any broker trouble
                log.exception("following %s failed; retrying", self.topic)
                await asyncio.sleep(RETRY_S)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            isolation_level="read_committed",
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            initial = await consumer.end_offsets(tps)
            self._positions = {tp.partition: 0 for tp in tps}
            self._consumer = consumer
            while True:
                batches = await consumer.getmany(*tps, timeout_ms=500, max_records=5000)
                for tp, messages in batches.items():
                    for message in messages:
                        self.apply(tp.partition, message.key, message.value)
                for tp in tps:
                    self._positions[tp.partition] = await consumer.position(tp)
                if not self.loaded.is_set() and all(
                    self._positions[tp.partition] >= initial[tp] for tp in tps
                ):
                    self.loaded.set()
                self._advanced.set()
        finally:
            self._consumer = None
            await consumer.stop()


SubscriptionListener = Callable[[str, Subscription | None], None]
JobListener = Callable[[int, str, FailedJob | None], None]


class SubscriptionBook:
    """Every subscription, as folded from the ``webhooks`` topic."""

    def __init__(self, sealer: SecretSealer) -> None:
        self.sealer = sealer
        self.by_id: dict[str, Subscription] = {}
        self.listeners: list[SubscriptionListener] = []

    def apply(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        sub_id = key.decode(errors="replace") if key else ""
        if value is None:
            sub: Subscription | None = None
            self.by_id.pop(sub_id, None)
        else:
            try:
                sub = Subscription.unseal(value, self.sealer)
            except (SealError, ValueError, TypeError, KeyError) as exc:
                log.warning("skipping subscription record %s: %s", sub_id, exc)
                return
            self.by_id[sub_id] = sub
        for listener in self.listeners:
            listener(sub_id, sub)

    def of_tenant(self, tenant_id: str) -> list[Subscription]:
        return sorted(
            (s for s in self.by_id.values() if s.tenant_id == tenant_id),
            key=lambda s: (s.created_us, s.subscription_id),
        )


class JobBook:
    """Every failed job, as folded from the ``webhook_jobs`` topic."""

    def __init__(self) -> None:
        self.by_id: dict[str, FailedJob] = {}
        self.listeners: list[JobListener] = []

    def apply(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        job_id = key.decode(errors="replace") if key else ""
        if value is None:
            job: FailedJob | None = None
            self.by_id.pop(job_id, None)
        else:
            try:
                job = FailedJob.decode(value)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("skipping job record %s: %s", job_id, exc)
                return
            self.by_id[job_id] = job
        for listener in self.listeners:
            listener(partition, job_id, job)

    def of_partition(self, partition: int) -> list[FailedJob]:
        return [j for j in self.by_id.values() if j.partition == partition]

    def select(self, tenant_id: str, subscription_id: str | None = None) -> list[FailedJob]:
        return sorted(
            (
                j
                for j in self.by_id.values()
                if j.tenant_id == tenant_id
                and (subscription_id is None or j.subscription_id == subscription_id)
            ),
            key=lambda j: (j.created_us, j.job_id),
        )


class WebhookWriter:
    """Writes subscriptions and jobs; each write returns once the broker acknowledged it."""

    def __init__(self, settings: Settings, sealer: SecretSealer) -> None:
        self.bootstrap = settings.bootstrap
        self.subscriptions_topic = settings.topic(SUBSCRIPTIONS_TOPIC)
        self.jobs_topic = settings.topic(JOBS_TOPIC)
        self.sealer = sealer
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            linger_ms=2,
            compression_type="lz4",
            max_request_size=4 * 1024 * 1024,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the webhook writer is not started")
        return self._producer

    async def put_subscription(self, sub: Subscription) -> None:
        await self.producer.send_and_wait(
            self.subscriptions_topic,
            key=sub.subscription_id.encode(),
            value=sub.seal(self.sealer),
            partition=0,
        )

    async def delete_subscription(self, subscription_id: str) -> None:
        await self.producer.send_and_wait(
            self.subscriptions_topic, key=subscription_id.encode(), value=None, partition=0
        )

    async def put_jobs(self, jobs: Iterable[FailedJob]) -> None:
        futures = [
            await self.producer.send(
                self.jobs_topic, key=j.job_id.encode(), value=j.encode(), partition=j.partition
            )
            for j in jobs
        ]
        if futures:
            await asyncio.gather(*futures)

    async def delete_jobs(self, jobs: Iterable[FailedJob]) -> None:
        futures = [
            await self.producer.send(
                self.jobs_topic, key=j.job_id.encode(), value=None, partition=j.partition
            )
            for j in jobs
        ]
        if futures:
            await asyncio.gather(*futures)
