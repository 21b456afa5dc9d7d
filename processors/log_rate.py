"""Repeated warnings and errors are logged once per window, with a count of the rest.

A broker outage makes every Kafka client of a worker (the processors' consumer and
producers, the feed indexer, the key follower) report the same failure many times a second:
a 31-second outage wrote about 5,300 ERROR lines. :class:`RepeatedRecordFilter`, installed
on the handlers of the worker's root logger (:func:`install_repeat_filter`), lets through
the first ``burst`` records of each kind per ``window_s`` seconds and drops the rest; the
first record after the window says how many were dropped. A kind is the logger, the level
and the message template (``"Unable connect to node %s"``, not the formatted text), so
the same failure with another node id or offset is the same kind. Records below WARNING
are never touched (they are off in production, and debugging wants them all).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 10.0
BURST = 3
MAX_KINDS = 1000


@dataclass
class _Kind:
    window_start: float
    passed: int = 0
    dropped: int = 0


class RepeatedRecordFilter(logging.Filter):
    """Drops repeats of a WARNING+ record kind beyond ``burst`` per ``window_s``."""

    def __init__(
        self,
        window_s: float = WINDOW_S,
        burst: int = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.burst = burst
        self.clock = clock
        self._kinds: dict[tuple[str, int, str], _Kind] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        kind = self._kinds.get(key)
        if kind is None or now - kind.window_start >= self.window_s:
            dropped = kind.dropped if kind is not None else 0
            if kind is None and len(self._kinds) >= MAX_KINDS:
                self._kinds.clear()
            self._kinds[key] = _Kind(window_start=now, passed=1)
            if dropped:
                note = f" [{dropped} more like this in the previous {self.window_s:g}s not logged]"
                record.msg = f"{record.msg}{note.replace('%', '%%') if record.args else note}"
            return True
        if kind.passed < self.burst:
            kind.passed += 1
            return True
        kind.dropped += 1
        return False


def install_repeat_filter(logger: logging.Logger, **options: float) -> None:
    """Add a :class:`RepeatedRecordFilter` to each handler of ``logger`` (one each, so that
    a record written by two handlers is counted once by each)."""
    for handler in logger.handlers:
        if not any(isinstance(f, RepeatedRecordFilter) for f in handler.filters):
            handler.addFilter(RepeatedRecordFilter(**options))  # type: ignore[arg-type]
