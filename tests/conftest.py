"""Shared test configuration: unit tests need nothing; integration tests bring a broker.

The suite runs in parallel (pytest-xdist). One broker serves every test process: the
controlling process starts the project's broker (or takes ``CHANGEFEED_BOOTSTRAP``) before
the test processes start, and they inherit its address. Soaks (``slow``: kill -9 and
contention runs) share one test process, so they run one after another, beside the rest.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from suite_broker import STATE_ENV, suite_broker_settings

from changefeed.broker import LocalBroker
from changefeed.errors import BrokerError

TESTS = Path(__file__).parent


def _wants_integration(config: pytest.Config) -> bool:
    unit = (TESTS / "unit").resolve()
    paths = [Path(arg.split("::", 1)[0]).resolve() for arg in config.args]
    return not paths or any(not path.is_relative_to(unit) for path in paths)


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and config.getoption("dist", "no") == "loadgroup":
        _refuse_a_pytest_that_ignores_groups()
    if hasattr(config, "workerinput") or os.environ.get("CHANGEFEED_BOOTSTRAP"):
        return  # a test process of the controller's, or a broker the user already has
    if not _wants_integration(config):
        return
    if LocalBroker(suite_broker_settings()).status().reachable:
        broker = LocalBroker(suite_broker_settings())  # reuse the one already up
        already_running = True
    else:
        os.environ[STATE_ENV] = tempfile.mkdtemp(prefix="changefeed-test-broker-")
        broker = LocalBroker(suite_broker_settings())
        already_running = False
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
        if broker.settings.state_root is not None:
            shutil.rmtree(broker.settings.state_root, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Iterator[None]:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.xdist_group("soak"))
    yield  # pytest-xdist reads the groups here
    if hasattr(config, "workerinput") and config.getoption("loadgroup", False):
        _check_groups_took(items)


def _refuse_a_pytest_that_ignores_groups() -> None:
    """pytest 9.2 keeps node ids in a field pytest-xdist 3.8 does not rename (its issue 1386)."""
    from importlib.metadata import version

    pytest_version = tuple(int(p) for p in pytest.__version__.split(".")[:2] if p.isdigit())
    xdist_version = tuple(int(p) for p in version("pytest-xdist").split(".")[:2] if p.isdigit())
    if pytest_version >= (9, 2) and xdist_version <= (3, 8):
        pytest.exit(
            f"pytest {pytest.__version__} with pytest-xdist {version('pytest-xdist')} ignores "
            "--dist loadgroup groups, and the suite's soaks and broker-restarting tests would run "
            "side by side; install the pytest that pyproject.toml pins (scripts/test.sh does)",
            4,
        )


def _check_groups_took(items: list[pytest.Item]) -> None:
    """A test process of ``--dist loadgroup`` refuses to run when grouping did not take (a
    pair of versions the check above does not know).

    Groups keep apart what cannot share the machine: the soaks, and the tests that stop and
    restart a broker of their own. pytest-xdist passes a test's group to the scheduler as a
    suffix of its node id; a pytest that ignores the suffix would run them side by side.
    """
    for item in items:
        if item.get_closest_marker("xdist_group") is not None and "@" not in item.nodeid:
            raise pytest.UsageError(
                f"pytest-xdist's --dist loadgroup did not group {item.nodeid} with this "
                f"pytest {pytest.__version__}; install the pytest that pyproject.toml pins"
            )
