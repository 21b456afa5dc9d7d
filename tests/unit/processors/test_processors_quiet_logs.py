"""Quiet logs: retriable client notices at INFO, every other record untouched, and the
commit timer without mode's overlap warning."""

from __future__ import annotations

import logging

import pytest

from processors.faust_adapter import (
    RETRIABLE_NOTICES,
    BatchingConsumer,
    RetriableToInfo,
    quiet_library_logs,
)


def record(logger: str, level: int, message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(logger, level, __file__, 1, message, args, None)


@pytest.mark.parametrize(
    ("logger", "level", "message", "args"),
    [
        (
            "aiokafka.consumer.group_coordinator",
            logging.ERROR,
            "Group Coordinator Request failed: %s",
            ("[Error 15] GroupCoordinatorNotAvailableError",),
        ),
        (
            "aiokafka.producer.sender",
            logging.WARNING,
            "Got error produce response: %s",
            ("[Error 19] NotEnoughReplicasError",),
        ),
    ],
)
def test_retriable_notices_are_lowered_to_info(
    logger: str, level: int, message: str, args: tuple[object, ...]
) -> None:
    notices = tuple(n for n in RETRIABLE_NOTICES if n.logger == logger)
    lowered = record(logger, level, message, *args)
    assert RetriableToInfo(notices).filter(lowered) is True  # never dropped
    assert (lowered.levelno, lowered.levelname) == (logging.INFO, "INFO")


@pytest.mark.parametrize(
    ("logger", "level", "message"),
    [
        ("aiokafka.consumer.group_coordinator", logging.ERROR, "Heartbeat failed: %r"),
        ("aiokafka.producer.sender", logging.WARNING, "Got error produce response: %s"),
        ("aiokafka.producer.sender", logging.CRITICAL, "NotEnoughReplicasError forever"),
    ],
)
def test_other_records_keep_their_level(logger: str, level: int, message: str) -> None:
    notices = tuple(n for n in RETRIABLE_NOTICES if n.logger == logger)
    kept = record(logger, level, message, "[Error 7] RequestTimedOutError")
    assert RetriableToInfo(notices).filter(kept) is True
    assert kept.levelno == level


def test_filters_installed_once_on_the_client_loggers(caplog: pytest.LogCaptureFixture) -> None:
    quiet_library_logs()
    quiet_library_logs()
    for name in {n.logger for n in RETRIABLE_NOTICES}:
        filters = [f for f in logging.getLogger(name).filters if isinstance(f, RetriableToInfo)]
        assert len(filters) == 1, name
    with caplog.at_level(logging.DEBUG, logger="aiokafka"):
        logging.getLogger("aiokafka.producer.sender").warning(
            "Got error produce response: %s", "[Error 19] NotEnoughReplicasError"
        )
        logging.getLogger("aiokafka.producer.sender").warning("Could not send %r", "x")
    levels = [(r.levelname, r.getMessage()[:22]) for r in caplog.records]
    assert levels == [("INFO", "Got error produce resp"), ("WARNING", "Could not send 'x'")]


def test_commit_timer_is_the_consumers_own() -> None:
    """Faust's commit and livelock timers (mode's itertimer, which warns "Timer commit is
    overlapping" whenever a commit outlasts the interval) are replaced, not added to."""
    tasks = BatchingConsumer._tasks[BatchingConsumer._get_class_id()]  # type: ignore[index]
    assert {"_commit_handler", "_commit_livelock_detector"} <= tasks
    assert "itertimer" not in BatchingConsumer._commit_handler.fun.__code__.co_names  # type: ignore[attr-defined]


def test_filters_survive_fausts_logging_setup() -> None:
    """The worker installs the filters before Faust configures logging: they must stay."""
    import faust

    from processors.worker import faust_worker

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        quiet_library_logs()
        app = faust.App("changefeed-quiet-logs-test", broker="kafka://127.0.0.1:1")
        faust_worker(app, "info")._setup_logging()
        sender = logging.getLogger("aiokafka.producer.sender")
        assert any(isinstance(f, RetriableToInfo) for f in sender.filters)
        assert not sender.disabled
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
