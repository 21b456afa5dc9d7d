"""The worker's webhook delivery: reads ``changes`` and POSTs each matching change.

**Reading.** An aiokafka consumer of its own, in the consumer group ``<app_id>-webhooks``,
reads ``changes`` with ``read_committed`` (only changes whose processing transaction
committed), so the partitions of ``changes`` are shared among the workers and each change
is delivered by the worker that owns its partition. It runs beside the processors, which
it never waits for nor delays: a slow endpoint slows nothing but its own lane.

**Lanes.** Each subscription has a lane: per subject (the ``changes`` key) a chain of
deliveries attempted one after the other, so a subscription receives a subject's changes in
order; distinct subjects go out concurrently, at most ``CHANGEFEED_WEBHOOK_CONCURRENCY`` at
a time per subscription. A lane holds up to :data:`LANE_CAPACITY` deliveries in memory that
are not jobs yet. When a lane is full, the reader waits for it if its endpoint is healthy
(the whole system is behind: reading on would only turn deliveries into jobs); a lane whose
endpoint is slow (attempts taking over :data:`SLOW_ATTEMPT_S`) or failing turns what it
cannot hold into queued jobs on ``webhook_jobs`` (:mod:`webhooks.jobs`) instead, so it
never holds the reader back. Changes behind a failed change of their subject, and
deliveries that waited :data:`FRESH_MAX_AGE_S` in a lane, become jobs too.

**At least once.** A record's offset is held until every subscription it matches has it
delivered or durable as a job (:mod:`webhooks.progress`); the consumer group's committed
offset never passes a held offset. After SIGKILL, the partition's new owner loads its
queued jobs, then reads from the committed offset: nothing is lost, some deliveries repeat
(receivers dedupe on ``webhook-id``, the change id).

**Failures.** A failed attempt becomes (or updates) a job queued for its next retry
(:mod:`webhooks.retry`); once retries are exhausted it quits, and so do the jobs queued
behind it for the same subject (they would arrive out of order). ``410 Gone`` quits the job
and pauses the subscription. An endpoint failing without a success for
``CHANGEFEED_WEBHOOK_PAUSE_AFTER_S`` pauses its subscription. An admin's resume or delete
(written to ``webhook_jobs`` by the API) reaches the owning worker through the job topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from changefeed.config import Settings
from changefeed.kafka.follower import TopicFollower
from events_api.events import CHANGE_EVENT_SCHEMA, epoch_micros, event_json
from schemas.codec import default_codec
from webhooks.jobs import FailedJob, JobState, Request, job_id_of, quit_job, waiting_job
from webhooks.progress import PartitionProgress
from webhooks.retry import Outcome, after_failure, after_gone, classify, should_pause
from webhooks.sender import AttemptResult, Sender
from webhooks.signing import signed_headers
from webhooks.subscriptions import Subscription
from webhooks.topics import JobBook, SubscriptionBook, WebhookWriter

log = logging.getLogger(__name__)

LANE_CAPACITY = 2000
FRESH_MAX_AGE_S = 30.0
"""A delivery read from ``changes`` that waited this long in its lane (its endpoint is slow,
or busy with earlier changes of the subject) becomes a job, so a slow endpoint never holds
the committed position back for long."""
SLOW_ATTEMPT_S = 1.0
"""A lane whose attempts take longer than this on average (or whose last attempt failed)
is slow: it never makes the reader wait."""
MAX_HELD = 100_000
COMMIT_INTERVAL_S = 0.2
FETCH_RECORDS = 2000
LOAD_TIMEOUT_S = 60.0

WAITING_FOR_SUBJECT = "waiting: an earlier change of this subject is not delivered yet"
DEFERRED = "waiting: the endpoint is slower than the feed; deliveries queued ahead of it"
HELD_PAUSED = "waiting: the subscription is paused"
QUIT_BEHIND = "not attempted: an earlier change of this subject quit"


def group_id(settings: Settings) -> str:
    return f"{settings.app_id}-webhooks"


@dataclass(eq=False)
class Delivery:
    """One change for one subscription, in memory; ``job`` once it is durable as one."""

    subscription_id: str
    tenant_id: str
    change_id: str
    subject: str
    partition: int
    offset: int
    body: bytes
    job: FailedJob | None = None
    progress: PartitionProgress | None = None  # set while it holds its offset
    due_s: float = 0.0
    in_flight: bool = False
    cancelled: bool = False
    read_at: float = 0.0

    @property
    def job_id(self) -> str:
        return job_id_of(self.subscription_id, self.change_id)

    def as_waiting_job(self, reason: str, now_us: int) -> FailedJob:
        return waiting_job(
            subscription_id=self.subscription_id,
            tenant_id=self.tenant_id,
            change_id=self.change_id,
            subject=self.subject,
            partition=self.partition,
            offset=self.offset,
            body=self.body.decode(),
            reason=reason,
            now_us=now_us,
        )

    @classmethod
    def of_job(cls, job: FailedJob) -> Delivery:
        due = (job.next_attempt_us or job.updated_us) / 1e6
        return cls(
            job.subscription_id,
            job.tenant_id,
            job.change_id,
            job.subject,
            job.partition,
            job.offset,
            job.body.encode(),
            job=job,
            due_s=due,
        )


@dataclass
class Stats:
    delivered: int = 0
    failed_attempts: int = 0
    jobs_written: int = 0
    quit: int = 0
    undecodable: int = 0


class Journal:
    """Writes jobs in the order asked, in batches; calls back once a write is acked."""

    def __init__(self, writer: WebhookWriter) -> None:
        self.writer = writer
        self._queue: asyncio.Queue[tuple[FailedJob, bool, Callable[[], None] | None]] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-journal")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def put(self, job: FailedJob, done: Callable[[], None] | None = None) -> None:
        self._queue.put_nowait((job, False, done))

    def delete(self, job: FailedJob, done: Callable[[], None] | None = None) -> None:
        self._queue.put_nowait((job, True, done))

    async def _run(self) -> None:
        producer = self.writer.producer
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < 5000:
                batch.append(self._queue.get_nowait())
            while True:
                try:
                    futures = []
                    for n, (job, tombstone, _) in enumerate(batch, 1):
                        futures.append(
                            await producer.send(
                                self.writer.jobs_topic,
                                key=job.job_id.encode(),
                                value=None if tombstone else job.encode(),
                                partition=job.partition,
                            )
                        )
                        if n % 200 == 0:
                            await asyncio.sleep(0)  # let deliveries run between chunks
                    await asyncio.gather(*futures)
                    break
                except KafkaError:
                    log.exception("writing %d webhook jobs failed; retrying", len(batch))
                    await asyncio.sleep(1.0)
            for _, _, done in batch:
                if done is not None:
                    done()


class Lane:
    """One subscription's deliveries on this worker (see the module's contract)."""

    def __init__(self, service: DeliveryService, subscription_id: str) -> None:
        self.service = service
        self.subscription_id = subscription_id
        self.chains: dict[str, deque[Delivery]] = {}
        self._ready: list[tuple[float, int, str]] = []
        self._scheduled: dict[str, int] = {}
        self._seq = 0
        self.fresh = 0
        self.in_flight = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        self._swept = 0.0
        self._attempt_s = 0.0  # moving average of attempt durations
        self._started: dict[int, float] = {}  # id of a delivery in flight -> its start
        self._failing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lane-{self.subscription_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._attempts):
            task.cancel()

    def wake(self) -> None:
        self._wake.set()

    @property
    def slow(self) -> bool:
        """Slow or failing endpoint: what this lane cannot hold becomes jobs."""
        if self._failing or self._attempt_s > SLOW_ATTEMPT_S:
            return True
        oldest = min(self._started.values(), default=None)  # attempts in flight
        return oldest is not None and time.monotonic() - oldest > SLOW_ATTEMPT_S

    @property
    def full(self) -> bool:
        """Full but healthy: the reader waits for it."""
        return self.fresh >= LANE_CAPACITY and not self.slow

    # -- placing deliveries --------------------------------------------------------------

    def offer(self, delivery: Delivery) -> None:
        """A fresh delivery read from ``changes`` (it holds its offset)."""
        chain = self.chains.setdefault(delivery.subject, deque())
        if chain and chain[-1].job is not None:
            chain.append(delivery)
            self.service.spill(delivery, WAITING_FOR_SUBJECT)
        elif self.fresh >= LANE_CAPACITY and self.slow:
            chain.append(delivery)
            self.service.spill(delivery, DEFERRED)
            if len(chain) == 1:
                self.schedule(delivery.subject, delivery.due_s)
        else:
            chain.append(delivery)
            self.fresh += 1
            if len(chain) == 1:
                self.schedule(delivery.subject, 0.0)

    def place_job(self, delivery: Delivery) -> None:
        """A delivery loaded or resumed from a job: into its subject's chain, in offset
        order, never ahead of an attempt in flight."""
        chain = self.chains.setdefault(delivery.subject, deque())
        position = len(chain)
        while position > 0 and chain[position - 1].offset > delivery.offset:
            if position - 1 == 0 and chain[0].in_flight:
                break
            position -= 1
        chain.insert(position, delivery)
        for behind in list(chain)[position + 1 :]:
            if behind.job is None and not behind.in_flight:
                self.fresh -= 1
                self.service.spill(behind, WAITING_FOR_SUBJECT)
        if position == 0:
            self.schedule(delivery.subject, delivery.due_s)

    def schedule(self, subject: str, due_s: float) -> None:
        self._seq += 1
        self._scheduled[subject] = self._seq
        heapq.heappush(self._ready, (due_s, self._seq, subject))
        self._wake.set()

    def remove(self, delivery: Delivery) -> None:
        """Take a delivery that is not in flight out of its chain."""
        chain = self.chains.get(delivery.subject)
        if not chain:
            return
        was_head = chain[0] is delivery
        with contextlib.suppress(ValueError):
            chain.remove(delivery)
        if delivery.job is None and delivery.progress is not None:
            self.fresh -= 1
        if not chain:
            del self.chains[delivery.subject]
            self._scheduled.pop(delivery.subject, None)
        elif was_head:
            self.schedule(delivery.subject, chain[0].due_s)

    def spill_aged(self, now: float) -> None:
        """Make fresh deliveries that waited past :data:`FRESH_MAX_AGE_S` durable jobs."""
        oldest = now - FRESH_MAX_AGE_S
        for chain in self.chains.values():
            for delivery in chain:
                if delivery.job is None and not delivery.in_flight and delivery.read_at < oldest:
                    self.fresh -= 1
                    self.service.spill(delivery, DEFERRED)

    def deliveries(self) -> list[Delivery]:
        return [d for chain in self.chains.values() for d in chain]

    # -- attempting ----------------------------------------------------------------------

    async def _run(self) -> None:
        concurrency = self.service.settings.webhooks.concurrency
        while True:
            sub = self.service.book.by_id.get(self.subscription_id)
            if sub is None:
                return
            now = self.service.clock()
            if not sub.paused:
                while self._ready and self.in_flight < concurrency and self._ready[0][0] <= now:
                    _, seq, subject = heapq.heappop(self._ready)
                    if self._scheduled.get(subject) != seq:
                        continue  # superseded
                    del self._scheduled[subject]
                    chain = self.chains.get(subject)
                    if not chain or chain[0].in_flight:
                        continue
                    head = chain[0]
                    if head.due_s > now:
                        self.schedule(subject, head.due_s)
                        continue
                    head.in_flight = True
                    self.in_flight += 1
                    task = asyncio.create_task(self._attempt(sub, head))
                    self._attempts.add(task)
                    task.add_done_callback(self._attempts.discard)
            if self.fresh and now - self._swept >= 1.0:
                self._swept = now
                self.spill_aged(now)
            self._wake.clear()
            timeout: float | None = None
            if self._ready and not sub.paused and self.in_flight < concurrency:
                timeout = max(0.0, self._ready[0][0] - self.service.clock())
            if self.fresh:
                timeout = 1.0 if timeout is None else min(timeout, 1.0)
            if timeout is None:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)

    async def _attempt(self, sub: Subscription, head: Delivery) -> None:
        service = self.service
        try:
            now_s = service.clock()
            headers = signed_headers(
                sub.signing_keys(int(now_s * 1e6)), head.change_id, int(now_s), head.body
            )
            began = self._started[id(head)] = time.monotonic()
            result = await service.sender.post(sub.url, headers, head.body)
            self._attempt_s = 0.8 * self._attempt_s + 0.2 * (time.monotonic() - began)
        except Exception as exc:  # noqa: BLE001 - a failed attempt, never a stuck lane
            log.exception("webhook attempt for %s failed", sub.subscription_id)
            result = AttemptResult(None, f"{type(exc).__name__}: {exc}")
        finally:
            self._started.pop(id(head), None)
            head.in_flight = False
            self.in_flight -= 1
            self._wake.set()
        if head.cancelled:
            self.remove(head)
            return
        now_us = int(service.clock() * 1e6)
        outcome = classify(result.status)
        self._failing = outcome is not Outcome.DELIVERED
        if outcome is Outcome.DELIVERED:
            service.stats.delivered += 1
            self._delivered(head)
            service.note_success(sub)
        elif outcome is Outcome.GONE:
            base = head.job or head.as_waiting_job("", now_us)
            self._quit(head, after_gone(base, now_us))
            service.pause(sub, "the endpoint answered 410 Gone")
        else:
            service.stats.failed_attempts += 1
            base = head.job or head.as_waiting_job("", now_us)
            job = after_failure(
                base,
                result.status,
                result.error,
                now_us,
                service.settings.webhooks.retry_schedule_s,
                service.rng,
            )
            if job.state is JobState.QUIT:
                self._quit(head, job)
            else:
                self._requeue(head, job)
            service.note_failure(sub, now_us)

    def _delivered(self, head: Delivery) -> None:
        chain = self.chains[head.subject]
        chain.popleft()
        if head.job is not None:
            self.service.forget_job(head)
            self.service.journal.delete(head.job)
        elif head.progress is not None:
            self.fresh -= 1
        self.service.release(head)
        if chain:
            self.schedule(head.subject, chain[0].due_s)
        else:
            del self.chains[head.subject]

    def _requeue(self, head: Delivery, job: FailedJob) -> None:
        if head.job is None and head.progress is not None:
            self.fresh -= 1
        head.job = job
        head.due_s = (job.next_attempt_us or 0) / 1e6
        self.service.remember_job(head)
        progress, head_ = head.progress, head
        self.service.journal.put(job, lambda: self.service.release(head_, progress))
        for behind in list(self.chains[head.subject])[1:]:
            if behind.job is None:
                self.fresh -= 1
                self.service.spill(behind, WAITING_FOR_SUBJECT)
        self.schedule(head.subject, head.due_s)

    def _quit(self, head: Delivery, job: FailedJob) -> None:
        """``head`` quit; the deliveries behind it in its chain quit too."""
        now_us = job.updated_us
        chain = self.chains.pop(head.subject, deque())
        self._scheduled.pop(head.subject, None)
        for delivery in chain:
            if delivery is head:
                final = job
            else:
                final = quit_job(
                    delivery.job or delivery.as_waiting_job("", now_us), QUIT_BEHIND, now_us
                )
            if delivery.job is None and delivery.progress is not None:
                self.fresh -= 1
            self.service.forget_job(delivery)
            self.service.stats.quit += 1
            progress, d = delivery.progress, delivery
            self.service.journal.put(
                final, lambda d=d, progress=progress: self.service.release(d, progress)
            )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: DeliveryService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.service.revoke([tp.partition for tp in revoked])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.service.assign([tp.partition for tp in assigned])


class DeliveryService:
    def __init__(
        self,
        settings: Settings,
        book: SubscriptionBook,
        jobs: JobBook,
        subscription_follower: TopicFollower,
        job_follower: TopicFollower,
        writer: WebhookWriter,
        sender: Sender,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.book = book
        self.jobs = jobs
        self.subscription_follower = subscription_follower
        self.job_follower = job_follower
        self.writer = writer
        self.sender = sender
        self.clock = clock
        self.rng = rng or random.Random()
        self.codec = default_codec()
        self.topic = settings.topic("changes")
        self.journal = Journal(writer)
        self.stats = Stats()
        self.lanes: dict[str, Lane] = {}
        self.progress: dict[int, PartitionProgress] = {}
        self._by_tenant: dict[str, list[Subscription]] = {}
        self._job_deliveries: dict[str, Delivery] = {}
        self._marked: dict[str, bool] = {}  # subscription id -> failing mark we last wrote
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        book.listeners.append(self._on_subscription)
        jobs.listeners.append(self._on_job)
        for sub_id, sub in list(book.by_id.items()):
            self._on_subscription(sub_id, sub)

    async def start(self) -> None:
        self.journal.start()
        self._task = asyncio.create_task(self._run(), name="webhook-delivery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for lane in self.lanes.values():
            await lane.stop()
        await self.journal.stop()
        for task in list(self._background):
            task.cancel()

    # -- reading changes -----------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep delivering after any broker trouble
                log.exception("webhook delivery's consumer failed; restarting it")
                await self.revoke(list(self.progress))
                await asyncio.sleep(1.0)

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=group_id(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=50,
            max_poll_records=FETCH_RECORDS,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            consumer.subscribe([self.topic], listener=_Rebalance(self))
            last_commit = time.monotonic()
            while True:
                if sum(p.holding for p in self.progress.values()) > MAX_HELD or any(
                    lane.full for lane in self.lanes.values()
                ):
                    await asyncio.sleep(0.02)
                else:
                    batches = await consumer.getmany(timeout_ms=100, max_records=FETCH_RECORDS)
                    for tp, messages in batches.items():
                        progress = self.progress.get(tp.partition)
                        if progress is None:
                            continue
                        for message in messages:
                            self._dispatch(progress, tp.partition, message)
                if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                    await self._commit(consumer)
                    last_commit = time.monotonic()
        finally:
            self._consumer = None
            with contextlib.suppress(Exception):
                await self._commit(consumer)
            await consumer.stop()

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        offsets = {}
        for partition, progress in self.progress.items():
            position = progress.committable()
            if position > progress.committed:
                offsets[TopicPartition(self.topic, partition)] = position
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            log.warning("committing webhook positions failed (%s); will retry", exc)
            return
        for tp, position in offsets.items():
            progress = self.progress.get(tp.partition)
            if progress is not None:
                progress.committed = max(progress.committed, position)

    def _dispatch(self, progress: PartitionProgress, partition: int, message: Any) -> None:
        if not self._by_tenant or message.value is None:
            progress.read(message.offset)
            return
        try:
            change = self.codec.decode(message.value, CHANGE_EVENT_SCHEMA)
        except Exception as exc:  # noqa: BLE001 - a bad record is skipped, never blocks
            self.stats.undecodable += 1
            log.warning("skipping changes %d/%d: %s", partition, message.offset, exc)
            progress.read(message.offset)
            return
        created_us = epoch_micros(change["created_at"])
        matching = [
            sub
            for sub in self._by_tenant.get(change["tenant_id"], ())
            if not sub.paused
            and sub.matches(
                change["tenant_id"], change["event_type"], change["subject_type"], created_us
            )
            and job_id_of(sub.subscription_id, change["change_id"]) not in self._job_deliveries
        ]
        progress.read(message.offset, len(matching))
        if not matching:
            return
        body = event_json(change, partition, message.offset).encode()
        subject = (
            message.key.decode(errors="replace")
            if message.key
            else f"{change['tenant_id']}/{change['subject_type']}/{change['subject_id']}"
        )
        now = self.clock()
        for sub in matching:
            delivery = Delivery(
                sub.subscription_id,
                sub.tenant_id,
                change["change_id"],
                subject,
                partition,
                message.offset,
                body,
                progress=progress,
                read_at=now,
            )
            self._lane(sub.subscription_id).offer(delivery)

    # -- partitions ----------------------------------------------------------------------

    async def assign(self, partitions: list[int]) -> None:
        """Load the partitions' queued jobs, then read from their committed offsets."""
        consumer = self._consumer
        if consumer is None:
            return
        for follower in (self.subscription_follower, self.job_follower):
            if not await follower.catch_up(LOAD_TIMEOUT_S):
                log.warning("%s not caught up within %ss", follower.topic, LOAD_TIMEOUT_S)
        for partition in partitions:
            tp = TopicPartition(self.topic, partition)
            committed = await consumer.committed(tp)
            start = (await consumer.beginning_offsets([tp]))[tp] if committed is None else committed
            consumer.seek(tp, start)
            self.progress[partition] = PartitionProgress(start)
            for job in sorted(self.jobs.of_partition(partition), key=lambda j: j.offset):
                if job.state is JobState.QUEUED and job.subscription_id in self.book.by_id:
                    self._load_job(job)

    async def revoke(self, partitions: list[int]) -> None:
        """Commit what is done, then drop the partitions' deliveries (the next owner
        resumes from the commit and its jobs)."""
        consumer = self._consumer
        if consumer is not None:
            with contextlib.suppress(Exception):
                await self._commit(consumer)
        gone = set(partitions)
        for lane in self.lanes.values():
            for delivery in lane.deliveries():
                if delivery.partition in gone:
                    delivery.cancelled = True
                    self.forget_job(delivery)
                    if not delivery.in_flight:
                        lane.remove(delivery)
        for partition in partitions:
            self.progress.pop(partition, None)

    # -- bookkeeping used by lanes -------------------------------------------------------

    def _lane(self, subscription_id: str) -> Lane:
        lane = self.lanes.get(subscription_id)
        if lane is None:
            lane = self.lanes[subscription_id] = Lane(self, subscription_id)
            lane.start()
        return lane

    def spill(self, delivery: Delivery, reason: str) -> None:
        """Make a fresh delivery durable as a queued job; its offset is released once the
        job is written."""
        now_us = int(self.clock() * 1e6)
        delivery.job = delivery.as_waiting_job(reason, now_us)
        delivery.due_s = now_us / 1e6
        self.remember_job(delivery)
        progress = delivery.progress
        self.stats.jobs_written += 1
        self.journal.put(delivery.job, lambda: self.release(delivery, progress))

    def release(self, delivery: Delivery, progress: PartitionProgress | None = None) -> None:
        held = progress if progress is not None else delivery.progress
        if held is not None and delivery.progress is held:
            delivery.progress = None
            if self.progress.get(delivery.partition) is held:
                held.resolve(delivery.offset)

    def remember_job(self, delivery: Delivery) -> None:
        self._job_deliveries[delivery.job_id] = delivery

    def forget_job(self, delivery: Delivery) -> None:
        if self._job_deliveries.get(delivery.job_id) is delivery:
            del self._job_deliveries[delivery.job_id]

    def _load_job(self, job: FailedJob) -> None:
        if job.job_id in self._job_deliveries:
            return
        delivery = Delivery.of_job(job)
        self.remember_job(delivery)
        self._lane(job.subscription_id).place_job(delivery)

    def note_success(self, sub: Subscription) -> None:
        latest = self.book.by_id.get(sub.subscription_id)
        if (
            latest is not None
            and latest.failing_since_us is not None
            and self._marked.get(sub.subscription_id, True)
        ):
            self._marked[sub.subscription_id] = False
            now_us = int(self.clock() * 1e6)
            self._write_subscription(replace(latest, failing_since_us=None, updated_us=now_us))

    def note_failure(self, sub: Subscription, now_us: int) -> None:
        latest = self.book.by_id.get(sub.subscription_id)
        if latest is None or latest.paused:
            return
        pause_after = self.settings.webhooks.pause_after_s
        if latest.failing_since_us is None:
            if not self._marked.get(sub.subscription_id, False):
                self._marked[sub.subscription_id] = True
                self._write_subscription(
                    replace(latest, failing_since_us=now_us, updated_us=now_us)
                )
        elif should_pause(latest.failing_since_us, now_us, pause_after):
            self.pause(
                latest,
                f"the endpoint failed without a success for more than {pause_after:g}s",
            )

    def pause(self, sub: Subscription, reason: str) -> None:
        latest = self.book.by_id.get(sub.subscription_id)
        if latest is None or latest.paused:
            return
        log.warning("pausing webhook subscription %s: %s", sub.subscription_id, reason)
        now_us = int(self.clock() * 1e6)
        paused = latest.paused_by(reason, now_us)
        self.book.by_id[sub.subscription_id] = paused  # at once; the topic follows
        self._on_subscription(sub.subscription_id, paused)
        self._write_subscription(paused)

    def _write_subscription(self, sub: Subscription) -> None:
        task = asyncio.create_task(self.writer.put_subscription(sub))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- what the topics say -------------------------------------------------------------

    def _on_subscription(self, sub_id: str, sub: Subscription | None) -> None:
        for tenant, subs in list(self._by_tenant.items()):
            kept = [s for s in subs if s.subscription_id != sub_id]
            if kept:
                self._by_tenant[tenant] = kept
            else:
                del self._by_tenant[tenant]
        if sub is not None:
            self._by_tenant.setdefault(sub.tenant_id, []).append(sub)
        lane = self.lanes.get(sub_id)
        if lane is None:
            return
        if sub is None:
            del self.lanes[sub_id]
            for delivery in lane.deliveries():
                delivery.cancelled = True
                self.forget_job(delivery)
                self.release(delivery)
            task = asyncio.ensure_future(lane.stop())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        if sub.paused:
            for delivery in lane.deliveries():
                if delivery.job is None and not delivery.in_flight:
                    lane.fresh -= 1
                    self.spill(delivery, HELD_PAUSED)
        lane.wake()

    def _on_job(self, partition: int, job_id: str, job: FailedJob | None) -> None:
        if partition not in self.progress:
            return  # another worker owns it
        held = self._job_deliveries.get(job_id)
        if job is None:
            if held is not None:  # deleted by an admin
                held.cancelled = True
                self.forget_job(held)
                lane = self.lanes.get(held.subscription_id)
                if lane is not None and not held.in_flight:
                    lane.remove(held)
                if held.job is not None:
                    self.journal.delete(held.job)  # the last word, after any update of ours
            return
        if job.request is not Request.RESUME or job.subscription_id not in self.book.by_id:
            return
        if held is not None:
            if not held.in_flight:
                held.job = job
                held.due_s = self.clock()
                lane = self.lanes.get(held.subscription_id)
                chain = lane.chains.get(held.subject) if lane else None
                if lane is not None and chain and chain[0] is held:
                    lane.schedule(held.subject, held.due_s)
            return
        self._load_job(job)
