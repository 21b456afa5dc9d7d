"""Rate limiting against a monotonic clock: slot ``k`` is due at ``start + k / rate``.

Waiting for a slot computed from the start, rather than sleeping a fixed interval after each
item, keeps the average rate exact however long each item takes: time spent working is
taken out of the next wait, and a late item is followed at once by the next (no drift).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Pacer:
    """Hands out slots at ``rate`` per second; ``clock`` is injectable for tests."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self._interval = 1.0 / rate
        self._clock = clock
        self._next: float | None = None
        self.behind_s = 0.0  # how late the latest slot was taken

    def delay(self, slots: int = 1) -> float:
        """Seconds until the next slot is due (0 if overdue); reserves ``slots`` slots."""
        now = self._clock()
        if self._next is None:
            self._next = now
        due = self._next
        self._next = due + slots * self._interval
        self.behind_s = max(0.0, now - due)
        return max(0.0, due - now)

    def wait(self, slots: int = 1) -> None:
        delay = self.delay(slots)
        if delay > 0:
            time.sleep(delay)  # rate limiting: the wait is the point

    async def wait_async(self, slots: int = 1) -> None:
        delay = self.delay(slots)
        if delay > 0:
            await asyncio.sleep(delay)  # rate limiting: the wait is the point
