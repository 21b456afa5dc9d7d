"""Shared test configuration: unit tests need nothing; integration tests bring a broker.

The suite runs in parallel (pytest-xdist). One broker serves every test process: the
controlling process starts the project's broker (or takes ``CHANGEFEED_BOOTSTRAP``) before
the test processes start, and they inherit its address. Soaks (``slow``: kill -9 and
contention runs) share one test process, so they run one after another, beside the rest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from suite_broker import suite_broker_settings

from changefeed.broker import LocalBroker
from changefeed.errors import BrokerError

TESTS = Path(__file__).parent


def _wants_integration(config: pytest.Config) -> bool:
    unit = (TESTS / "unit").resolve()
    paths = [Path(arg.split("::", 1)[0]).resolve() for arg in config.args]
    return not paths or any(not path.is_relative_to(unit) for path in paths)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or os.environ.get("CHANGEFEED_BOOTSTRAP"):
        return  # a test process of the controller's, or a broker the user already has
    if not _wants_integration(config):
        return
    broker = LocalBroker(suite_broker_settings())
    already_running = broker.status().reachable
    try:
        status = broker.start(timeout_s=240.0)
    except BrokerError as exc:
        pytest.exit(f"the test Kafka broker could not start: {exc}", 3)
    os.environ["CHANGEFEED_BOOTSTRAP"] = status.bootstrap
    config.stash[_STARTED] = None if already_running else broker


_STARTED = pytest.StashKey["LocalBroker | None"]()


def pytest_unconfigure(config: pytest.Config) -> None:
    broker = config.stash.get(_STARTED, None)
    if broker is not None:
        broker.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.xdist_group("soak"))
