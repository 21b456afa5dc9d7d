"""Health that tells the truth: broker silence and a stuck or lagging index are 503s with a
reason; repeated errors are logged once per window, with the count of the rest."""

from __future__ import annotations

import logging

from events_api.indexer import LagTracker, index_health
from processors.health import BROKER_DOWN_AFTER_S, BrokerProbe, broker_health
from processors.log_rate import RepeatedRecordFilter


def test_a_broker_silent_beyond_the_bound_is_unhealthy_with_the_reason() -> None:
    ok = broker_health(100.0, last_ok=98.0, since=0.0, last_error="", down_after_s=6.0)
    assert ok.ok
    down = broker_health(
        100.0, last_ok=90.0, since=0.0, last_error="KafkaConnectionError: refused", down_after_s=6
    )
    assert not down.ok
    assert "not answered for 10s" in down.reason and "refused" in down.reason
    never = broker_health(100.0, last_ok=None, since=93.0, last_error="x", down_after_s=6.0)
    assert not never.ok
    assert broker_health(100.0, last_ok=None, since=None, last_error="", down_after_s=6).ok


def test_a_stuck_index_is_unhealthy_after_the_bound() -> None:
    ok, reason, _ = index_health(
        10.0, failing_since=0.0, last_error="", behind_since=None, skipped=0, last_skip=""
    )
    assert ok  # failing for 10 s: retrying, not yet stuck
    ok, reason, details = index_health(
        40.0,
        failing_since=0.0,
        last_error="FeedIndexError: disk I/O error",
        behind_since=None,
        skipped=2,
        last_skip="changes[0]@7: UnicodeEncodeError",
    )
    assert not ok and "stuck" in reason and "disk I/O error" in reason
    assert details["skipped_records"] == 2 and "changes[0]@7" in details["last_skipped"]


def test_a_lagging_index_is_unhealthy_and_recovers_when_it_catches_up() -> None:
    lag = LagTracker()
    lag.observe(0.0, {0: 100, 1: 50}, {0: 10, 1: 50})
    lag.observe(30.0, {0: 200, 1: 50}, {0: 90, 1: 50})  # still short of the first 100
    assert lag.behind_since() == 0.0
    ok, reason, details = index_health(
        61.0,
        failing_since=None,
        last_error="",
        behind_since=lag.behind_since(),
        skipped=0,
        last_skip="",
    )
    assert not ok and "lags" in reason and details["lag_s"] == 61.0
    lag.observe(62.0, {0: 200, 1: 50}, {0: 150, 1: 50})  # past 100: the first sample goes
    assert lag.behind_since() == 30.0
    lag.observe(63.0, {0: 200, 1: 50}, {0: 200, 1: 50})
    assert lag.behind_since() is None
    assert index_health(
        63.0, failing_since=None, last_error="", behind_since=None, skipped=5, last_skip="x"
    )[0]  # skipped records are reported, they do not fail health


def test_a_31_second_outage_writes_a_handful_of_error_lines() -> None:
    now = [0.0]
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    handler.addFilter(RepeatedRecordFilter(window_s=10.0, burst=3, clock=lambda: now[0]))
    logger = logging.getLogger("test.outage")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        for tick in range(31 * 170):  # ~5,300 errors over 31 s, as the outage wrote
            now[0] = tick / 170
            logger.error("Unable connect to node with id %s: %s", tick % 3, "refused")
        logger.info("an info line is never dropped")
    finally:
        logger.removeHandler(handler)
    errors = [r for r in records if r.levelno == logging.ERROR]
    assert len(errors) <= 4 * 3
    assert "more like this" in errors[3].getMessage()
    assert records[-1].getMessage() == "an info line is never dropped"


async def test_the_probe_reports_a_broker_that_does_not_answer() -> None:
    now = [1000.0]
    probe = BrokerProbe("127.0.0.1:1", clock=lambda: now[0])  # nothing listens there
    assert probe.health().ok  # no verdict before the first probe
    await probe.probe()
    assert probe.last_ok is None and probe.last_error
    now[0] += BROKER_DOWN_AFTER_S + 1
    verdict = probe.health()
    assert not verdict.ok and "has not answered" in verdict.reason
    await probe.close()
