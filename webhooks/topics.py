"""The ``webhooks`` and ``webhook_jobs`` topics: where subscriptions and failed jobs live.

Both are compacted: the latest record of a key is its state, a tombstone deletes it, and a
restart (even after SIGKILL) reads the state back.

* ``webhooks`` (one partition): key = subscription id, value = the subscription with its
  secrets sealed (:meth:`~webhooks.subscriptions.Subscription.seal`).
* ``webhook_jobs`` (as many partitions as ``changes``; compacted and deleted past retention,
  like the changes they carry): key = job id, written to the partition of its change, so
  the worker that delivers a ``changes`` partition owns the jobs of the same partition.

:class:`~changefeed.kafka.follower.TopicFollower` reads them into
:class:`SubscriptionBook` and :class:`JobBook` are the folded state every worker keeps.
:class:`WebhookWriter` writes both topics (acks from all replicas before a write counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaProducer

from changefeed.config import Settings
from webhooks.errors import SealError
from webhooks.jobs import FailedJob
from webhooks.sealing import SecretSealer
from webhooks.subscriptions import Subscription

log = logging.getLogger(__name__)

SUBSCRIPTIONS_TOPIC = "webhooks"
JOBS_TOPIC = "webhook_jobs"


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
