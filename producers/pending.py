"""Actions between ``publish`` and their outcome, and the reports that close them.

The publisher does not register callbacks on kafka-python's futures: its background thread
settles in-flight actions in publish order by looking at their futures (see
:mod:`producers.publisher`). That keeps the producer's I/O thread free of our work and our
lock, and costs one attribute check per action instead of two callback registrations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from producers.delivery import DeliveryOutcome, DeliveryReport
from producers.outgoing import OutgoingRecord

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[DeliveryReport], None]


class PendingAction:
    """One action in flight or waiting for the spool.

    ``future`` is kafka-python's future once ``send`` returned; ``send_error`` what ``send``
    raised instead; ``sent_at`` the monotonic time it was handed to the producer.
    """

    __slots__ = ("seq", "record", "on_delivery", "future", "send_error", "sent_at")

    def __init__(
        self, seq: int, record: OutgoingRecord, on_delivery: DeliveryCallback | None
    ) -> None:
        self.seq = seq
        self.record = record
        self.on_delivery = on_delivery
        self.future: Any = None
        self.send_error: BaseException | None = None
        self.sent_at = 0.0

    def outcome(self) -> tuple[bool, BaseException | None]:
        """``(settled, error)``: whether Kafka answered, and the error if it refused."""
        if self.send_error is not None:
            return True, self.send_error
        future = self.future
        if future is None or not future.is_done:
            return False, None
        return True, future.exception

    def report(self, outcome: DeliveryOutcome, error: BaseException | None = None) -> Report:
        record = self.record
        partition = offset = None
        if outcome is DeliveryOutcome.DELIVERED:
            partition, offset = self.future.value.partition, self.future.value.offset
        return self, DeliveryReport(
            record.event_id, outcome, record.topic, partition, offset, error
        )


Report = tuple[PendingAction, DeliveryReport]


def deliver_reports(reports: list[Report]) -> None:
    """Call each action's ``on_delivery``; a callback that raises is logged, not propagated."""
    for pending, report in reports:
        if pending.on_delivery is not None:
            try:
                pending.on_delivery(report)
            except Exception:
                log.exception("a delivery callback raised; ignored")


class Backoff:
    """Exponential delays between attempts, from 0.1 s up to ``maximum``."""

    def __init__(self, maximum: float) -> None:
        self._maximum = maximum
        self._delay = 0.1

    def next_delay(self) -> float:
        delay = self._delay
        self._delay = min(self._delay * 2, self._maximum)
        return delay

    def reset(self) -> None:
        self._delay = 0.1
