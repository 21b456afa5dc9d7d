"""What became of a published action: delivered, spooled, or failed."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DeliveryOutcome(StrEnum):
    """``delivered``: Kafka acknowledged it (acks=all). ``spooled``: Kafka could not be reached
    in time and the action is durable in the spool, from which it will be re-sent in order.
    ``failed``: neither; the action is lost unless the caller publishes it again."""

    DELIVERED = "delivered"
    SPOOLED = "spooled"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """The outcome of one action; ``partition``/``offset`` only when delivered."""

    event_id: str
    outcome: DeliveryOutcome
    topic: str
    partition: int | None = None
    offset: int | None = None
    error: BaseException | None = None

    @property
    def durable(self) -> bool:
        """True when the action will reach Kafka without the caller doing anything more."""
        return self.outcome is not DeliveryOutcome.FAILED
