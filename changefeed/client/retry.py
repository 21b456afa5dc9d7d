"""When the client retries, and how long it waits: bounded exponential backoff, full jitter.

A request is retried when the API answers 502, 503 or 504 (a worker restoring its tables,
workers rebalancing, a proxy in front of a restarting worker) or when no answer comes
(connection refused or reset, timeouts). Waits grow as ``base_s * 2**n`` up to ``cap_s``;
each wait is drawn uniformly from ``[0, that]`` ("full jitter"), so many clients that lost
the same worker do not come back in step. After ``attempts`` tries the caller gets
:class:`~changefeed.client.errors.Unavailable`. A 503's ``Retry-After`` (seconds), when
present, is used as the wait if it is shorter than the cap.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

RETRYABLE_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How many tries a request gets and how long to wait between them."""

    attempts: int = 10
    base_s: float = 0.25
    cap_s: float = 8.0
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_s < 0 or self.cap_s < self.base_s:
            raise ValueError("need 0 <= base_s <= cap_s")

    def delay(self, retry: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        if retry_after_s is not None and 0 <= retry_after_s <= self.cap_s:
            return retry_after_s
        ceiling = min(self.cap_s, self.base_s * (2**retry))
        return ceiling * self.random()

    def budget_s(self) -> float:
        """The longest the waits of one request can add up to."""
        return sum(min(self.cap_s, self.base_s * (2**n)) for n in range(self.attempts - 1))


def retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header given in seconds; None for anything else."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
