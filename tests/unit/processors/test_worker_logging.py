"""The worker logs at the level asked for, and builds no records below it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import faust
import pytest

from processors.worker import faust_worker


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("loglevel", ["warn", "error", "info"])
def test_kafka_client_debug_is_off(loglevel: str, restored_logging: None) -> None:
    app = faust.App("changefeed-logging-test", broker="kafka://127.0.0.1:1")
    worker = faust_worker(app, loglevel)
    worker._setup_logging()
    client = logging.getLogger("aiokafka.conn")
    assert not client.isEnabledFor(logging.DEBUG)
    assert client.isEnabledFor(logging.getLevelName(loglevel.upper().replace("WARN", "WARNING")))
