"""The publisher: ApiAction dicts to the ``actions`` topic, with a durable spool for outages.

Modes
    *Direct*: each action is encoded and handed to an idempotent kafka-python producer
    (``acks=all``); its delivery report arrives when the broker acknowledged it.

    *Spooling*: entered when an action whose delivery failed for a reason worth retrying
    (broker down, timeouts) is settled, or at start when the spool is not empty or no broker
    answers. Every
    action goes to the durable spool (:mod:`producers.spool`), and a drainer thread re-sends
    the spool from its head once the broker answers, acknowledging (removing) records only
    after Kafka confirmed them. When the spool is empty again, the publisher returns to
    direct mode.

    A watchdog in the drainer thread also enters spooling mode when the oldest action in
    flight has waited longer than ``delivery_timeout_ms + request_timeout_ms``: everything
    in flight is then spooled in publish order and the producer replaced. kafka-python
    3.0.12 was seen to stop expiring records of an idempotent producer while no broker
    answered, and not to recover when the broker came back; the watchdog makes the
    publisher independent of that.

Order
    The rule is global and simple: while anything is in the spool, new actions go to the
    spool too, behind it. Actions in flight are settled strictly in publish order (a failed
    one is looked at only once every earlier one is settled), and an action is written to
    the spool only when every earlier action is settled, delivered or itself spooled: spool
    order is publish order, however the producer's batches of different partitions failed.
    Draining starts only when nothing is in flight any more. Hence actions of one subject
    (one key, one partition) reach Kafka in the order they were published, first
    occurrences at least: a re-send after a lost acknowledgement may repeat an action after
    later ones.

    One gap is left to the processors' per-subject order guard: if the broker comes back
    exactly while the producer is expiring batches of a partition, a later batch of that
    partition can be accepted after an earlier one expired into the spool, and so reach
    Kafka before it.

Guarantees
    Delivery from the spool is at-least-once (a crash between a re-send and its
    acknowledgement re-sends it after restart); the processors dedupe on ``event_id``, so the
    effect downstream is exactly-once. An action whose report says ``spooled`` survives a
    crash of this process (see the spool's fsync policy for a crash of the machine).

Synchronous publish
    :meth:`Publisher.publish` returns the :class:`DeliveryReport` once the action is delivered
    **or** durably spooled (``report.outcome`` tells which; both mean the caller is done), and
    raises :class:`PublishError` only when it could be neither. An invalid action raises
    :class:`InvalidActionError` at once and is never spooled.

Threads
    ``publish``/``publish_async`` may be called from any thread. One background thread
    settles in-flight actions in publish order (it reads their kafka-python futures rather
    than registering callbacks on them), runs the watchdog, fsyncs the spool on its
    interval and drains the spool. Delivery callbacks run on that thread, or on the caller's
    when an action is spooled at once: they must be quick and must not block.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from changefeed.config import Settings
from producers.delivery import DeliveryOutcome, DeliveryReport
from producers.drain import drain_once
from producers.envelope import ActionEncoder
from producers.errors import (
    BrokerUnavailableError,
    PublisherClosedError,
    PublishError,
    PublishTimeoutError,
    SpoolError,
    TopicMissingError,
)
from producers.kafka_client import close_quietly, connect_producer, is_rejected_record
from producers.outgoing import OutgoingRecord
from producers.pending import (
    Backoff,
    DeliveryCallback,
    PendingAction,
    Report,
    deliver_reports,
)
from producers.publisher_options import PublisherOptions
from producers.spool import Spool
from schemas.codec import Codec, default_codec

log = logging.getLogger(__name__)

ProducerFactory = Callable[[str, str, PublisherOptions], KafkaProducer]
HEAD_WAIT_S = 0.05  # how long the background thread blocks on the oldest action at a time


def default_spool_dir(settings: Settings, owner: str = "publisher") -> Path:
    """Where a publisher spools when not told: per topic and per ``owner`` under the data dir.

    A spool directory has one publisher at a time, so processes that publish side by side
    (the demo API, the load generator) name themselves as different owners.
    """
    return settings.data_dir / "spool" / settings.topic("actions") / owner


@dataclass(frozen=True)
class PublisherStats:
    """Counters since the publisher started; ``spool_pending`` is what the spool holds now."""

    published: int
    delivered: int
    spooled: int
    drained: int
    failed: int
    spool_pending: int
    spooling: bool


class Publisher:
    """Publishes ApiActions to ``settings.topic("actions")``; see the module docstring.

    ``spool_dir`` defaults to :func:`default_spool_dir`; one directory serves one publisher
    at a time (it is locked). ``codec`` defaults to the process-wide
    :func:`~schemas.codec.default_codec`. The constructor tries to reach the broker for up to
    ``options.connect_timeout_s``: if none answers it starts in spooling mode and keeps
    trying in the background; if one answers without the topic it raises
    :class:`TopicMissingError`. ``producer_factory`` builds the kafka-python producer
    (:func:`~producers.kafka_client.connect_producer`; tests pass a stand-in).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        spool_dir: Path | None = None,
        codec: Codec | None = None,
        options: PublisherOptions | None = None,
        producer_factory: ProducerFactory = connect_producer,
    ) -> None:
        self.options = options or PublisherOptions()
        self._producer_factory = producer_factory
        self.topic = settings.topic("actions")
        self._bootstrap = settings.bootstrap
        self._encoder = ActionEncoder(
            self.topic, codec or default_codec(), settings.source, settings.redactor()
        )
        self._spool = Spool(
            spool_dir or default_spool_dir(settings),
            segment_bytes=self.options.segment_bytes,
            fsync_interval_s=self.options.fsync_interval_s,
        )
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # wakes the background thread
        self._settled = threading.Condition(self._lock)  # wakes flush()
        self._next_seq = 0
        self._inflight: dict[int, PendingAction] = {}  # insertion order == seq order
        self._held: list[tuple[int, PendingAction]] = []  # heap: waiting for earlier ones
        self._spooling = not self._spool.is_empty()
        self._closing = False
        self._counts = dict.fromkeys(("published", "delivered", "spooled", "drained", "failed"), 0)
        self._producer: KafkaProducer | None = None
        try:
            self._producer = producer_factory(self._bootstrap, self.topic, self.options)
        except BrokerUnavailableError as exc:
            log.warning("publisher starts spooling: %s", exc)
            self._spooling = True
        except BaseException:
            self._spool.close()
            raise
        self._background = threading.Thread(
            target=self._run_background, name="changefeed-publisher", daemon=True
        )
        self._background.start()

    # -- publishing -------------------------------------------------------------------------
    def publish(self, action: Mapping[str, Any], timeout_s: float | None = None) -> DeliveryReport:
        """Publish and wait for the outcome: delivered or spooled (see module docstring).

        Raises :class:`InvalidActionError` for a bad action, :class:`PublishError` when the
        action could be neither delivered nor spooled, :class:`PublishTimeoutError` when no
        outcome came within ``timeout_s`` (default: long enough for one always to come).
        """
        done = threading.Event()
        outcome: list[DeliveryReport] = []

        def remember(report: DeliveryReport) -> None:
            outcome.append(report)
            done.set()

        self.publish_async(action, remember)
        wait_s = self.options.outcome_wait_s if timeout_s is None else timeout_s
        if not done.wait(wait_s):
            raise PublishTimeoutError(
                f"no outcome for action {action.get('event_id')!r} within {wait_s:.1f}s"
            )
        report = outcome[0]
        if report.outcome is DeliveryOutcome.FAILED:
            raise PublishError(f"action {report.event_id!r} was not published: {report.error}")
        return report

    def publish_async(
        self, action: Mapping[str, Any], on_delivery: DeliveryCallback | None = None
    ) -> None:
        """Hand over ``action``; ``on_delivery`` receives its :class:`DeliveryReport` once.

        Encoding happens here, so :class:`InvalidActionError` is raised to the caller
        synchronously; every other outcome comes through ``on_delivery``.
        """
        self.publish_record(self._encoder.encode(action), on_delivery)

    def publish_record(
        self, record: OutgoingRecord, on_delivery: DeliveryCallback | None = None
    ) -> None:
        """Publish an already encoded record (see :class:`~producers.envelope.ActionEncoder`)."""
        with self._lock:
            if self._closing:
                raise PublisherClosedError("the publisher is closed")
            seq = self._next_seq
            self._next_seq = seq + 1
            self._counts["published"] += 1
            pending = PendingAction(seq, record, on_delivery)
            producer = None if self._spooling else self._producer
            if producer is None:
                reports = self._hold(pending)
            else:
                pending.sent_at = time.monotonic()
                self._inflight[seq] = pending
                if len(self._inflight) == 1:
                    self._work.notify_all()
        if producer is None:
            deliver_reports(reports)
            return
        try:
            pending.future = producer.send(
                record.topic, value=record.value, key=record.key, headers=record.headers
            )
        except Exception as exc:  # kafka-python raises assorted types from send()
            pending.send_error = exc

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every action published so far has an outcome; False on timeout.

        Spooled actions count as settled: this does not wait for the spool to drain (see
        :meth:`wait_until_drained`).
        """
        deadline = self._deadline(timeout_s)
        failed = self._flush_producer(deadline)
        if failed is not None:  # a timeout or a producer being replaced: we wait below
            log.debug("flush: %s", failed)
        with self._lock:
            return self._settled.wait_for(
                lambda: not self._inflight and not self._held,
                timeout=max(0.0, deadline - time.monotonic()),
            )

    def _deadline(self, timeout_s: float | None) -> float:
        return time.monotonic() + (self.options.outcome_wait_s if timeout_s is None else timeout_s)

    def _flush_producer(self, deadline: float) -> Exception | None:
        """Flush the current producer until ``deadline``; what stopped it, if anything."""
        producer = self._producer
        if producer is None:
            return None
        try:
            producer.flush(timeout=max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # kafka-python raises assorted types from flush()
            return exc
        return None

    def wait_until_drained(self, timeout_s: float) -> bool:
        """Wait until every action has an outcome and the spool is empty; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            return self._settled.wait_for(
                lambda: not self._inflight and not self._held and not self._spooling,
                timeout=max(0.0, deadline - time.monotonic()),
            )

    def stats(self) -> PublisherStats:
        with self._lock:
            return PublisherStats(
                **self._counts, spool_pending=self._spool.pending, spooling=self._spooling
            )

    # -- shutdown ---------------------------------------------------------------------------
    def close(self, timeout_s: float | None = None) -> None:
        """Stop accepting actions, settle the ones in flight, release the spool.

        Waits up to ``timeout_s`` (default: the delivery timeout and a margin) for in-flight
        actions to be acknowledged; whatever is still unacknowledged then is written to the
        spool, to be re-sent by the next publisher on the same directory (it may have reached
        Kafka too: at-least-once). Idempotent.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._work.notify_all()
        deadline = self._deadline(timeout_s)
        failed = self._flush_producer(deadline)
        if failed is not None:
            log.warning("closing with undelivered actions; they go to the spool: %s", failed)
        self._background.join(timeout=max(0.0, deadline - time.monotonic()))
        reports = self._settle_done()
        with self._lock:
            for pending in self._inflight.values():
                heapq.heappush(self._held, (pending.seq, pending))
            self._inflight.clear()
            reports += self._spool_held()
        deliver_reports(reports)
        if self._producer is not None:
            close_quietly(self._producer, timeout_s=max(0.0, deadline - time.monotonic()))
        self._spool.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- settling actions in flight (background thread, and close) ----------------------------
    def _settle_done(self) -> list[Report]:
        """Settle the longest prefix of in-flight actions that Kafka answered, in order.

        Delivered ones are reported; refused ones are reported failed when the refusal is
        final, otherwise they start spooling mode and go to the spool, in order.
        """
        reports: list[Report] = []
        with self._lock:
            inflight = self._inflight
            while inflight:
                pending = next(iter(inflight.values()))
                settled, error = pending.outcome()
                if not settled:
                    break
                del inflight[pending.seq]
                if error is None:
                    self._counts["delivered"] += 1
                    if pending.on_delivery is not None:
                        reports.append(pending.report(DeliveryOutcome.DELIVERED))
                elif is_rejected_record(error):
                    self._counts["failed"] += 1
                    reports.append(pending.report(DeliveryOutcome.FAILED, error))
                else:
                    if not self._spooling:
                        log.warning("delivery failed (%r); spooling until Kafka is back", error)
                        self._spooling = True
                    heapq.heappush(self._held, (pending.seq, pending))
            if self._held:
                reports += self._spool_held()
            if not inflight:
                self._settled.notify_all()
        return reports

    def _wait_for_oldest(self) -> None:
        """Block up to :data:`HEAD_WAIT_S` until the oldest action in flight is answered."""
        with self._lock:
            oldest = next(iter(self._inflight.values()), None)
        future = None if oldest is None else oldest.future
        if future is None:
            with self._lock:  # being sent right now, or nothing in flight: a short nap
                self._work.wait(0.001 if oldest is not None else HEAD_WAIT_S)
            return
        try:
            future.get(timeout=HEAD_WAIT_S)
        except Exception:  # its outcome, good or bad, is read by _settle_done
            return

    # -- the spool side (all under self._lock) ------------------------------------------------
    def _hold(self, pending: PendingAction) -> list[Report]:
        heapq.heappush(self._held, (pending.seq, pending))
        return self._spool_held()

    def _spool_held(self) -> list[Report]:
        """Spool held actions in seq order, up to the first action still in flight."""
        first_inflight = next(iter(self._inflight), None)
        reports: list[Report] = []
        while self._held and (first_inflight is None or self._held[0][0] < first_inflight):
            _, pending = heapq.heappop(self._held)
            try:
                self._spool.append(pending.record)
            except SpoolError as exc:
                log.error("action %s could not be spooled: %s", pending.record.event_id, exc)
                self._counts["failed"] += 1
                reports.append(pending.report(DeliveryOutcome.FAILED, exc))
                continue
            self._counts["spooled"] += 1
            reports.append(pending.report(DeliveryOutcome.SPOOLED))
        if reports:
            self._work.notify_all()
            if not self._held and not self._inflight:
                self._settled.notify_all()
        return reports

    # -- the background thread ------------------------------------------------------------
    def _run_background(self) -> None:
        """Settle what is in flight, else drain the spool; fsync and watchdog on the way."""
        backoff = Backoff(self.options.drain_backoff_max_s)
        while True:
            with self._lock:
                self._work.wait_for(
                    lambda: self._closing or bool(self._inflight) or self._spooling,
                    timeout=max(self.options.fsync_interval_s, 0.05),
                )
                if self._closing:
                    return
                settling = bool(self._inflight)
                draining = self._spooling and not settling
            try:
                self._spool.sync_if_due()
                if settling:
                    self._wait_for_oldest()
                    deliver_reports(self._settle_done())
                    self._give_up_on_stuck_producer()
                elif draining and not self._drain_step():
                    self._pause(backoff.next_delay())
                else:
                    backoff.reset()
            except Exception:
                log.exception("the publisher's background thread failed; retrying")
                self._pause(backoff.next_delay())

    def _give_up_on_stuck_producer(self) -> None:
        """Spool everything in flight if the oldest action outlived its delivery timeout.

        kafka-python should fail such records itself; when it does not (see
        :func:`~producers.kafka_client.close_quietly`), the publisher moves them to the spool,
        in publish order, and replaces the producer. A record that reaches Kafka anyway is
        then sent twice, which downstream dedupe absorbs.
        """
        limit_s = (self.options.delivery_timeout_ms + self.options.request_timeout_ms) / 1000
        with self._lock:
            oldest = next(iter(self._inflight.values()), None)
            if oldest is None or time.monotonic() - oldest.sent_at < limit_s:
                return
            log.warning(
                "%d action(s) unacknowledged after %.0fs; spooling them, replacing the producer",
                len(self._inflight),
                limit_s,
            )
            for pending in self._inflight.values():
                heapq.heappush(self._held, (pending.seq, pending))
            self._inflight.clear()
            self._spooling = True
            reports = self._spool_held()
            producer, self._producer = self._producer, None
        deliver_reports(reports)
        if producer is not None:
            close_quietly(producer, timeout_s=0)

    def _drain_step(self) -> bool:
        """Re-send one batch from the spool head; False when the broker is not taking it."""
        producer = self._producer or self._reconnect()
        if producer is None:
            return False
        result = drain_once(self._spool, producer, self.options)
        with self._lock:
            self._counts["drained"] += result.delivered
            self._counts["failed"] += result.rejected
            if result.empty and self._spool.is_empty() and not self._held and not self._inflight:
                self._spooling = False
                self._settled.notify_all()
                log.info("spool drained; publishing directly again")
        if result.retry_error is not None:
            log.info("re-sending from the spool failed (%r); will retry", result.retry_error)
            self._discard_producer()
            return False
        return True

    def _reconnect(self) -> KafkaProducer | None:
        try:
            producer = self._producer_factory(self._bootstrap, self.topic, self.options)
        except (BrokerUnavailableError, TopicMissingError) as exc:
            log.debug("still no broker for the spool: %s", exc)
            return None
        with self._lock:
            self._producer = producer
        return producer

    def _discard_producer(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            close_quietly(producer, timeout_s=1.0)

    def _pause(self, seconds: float) -> None:
        with self._lock:
            if not self._closing:
                self._work.wait(seconds)
