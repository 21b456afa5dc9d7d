"""A real Kafka broker for the integration tests, started once per session.

``CHANGEFEED_BOOTSTRAP`` points the suite at a broker that is already running; otherwise
the project's own single-node KRaft broker is started on ``CHANGEFEED_TEST_BROKER_PORT``
(default 29092) and stopped at the end of the session. Every test gets its own topic
prefix, Faust app id and consumer group, so tests never see each other's records.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from suite_broker import suite_broker_settings

from changefeed.broker import LocalBroker
from changefeed.config import BrokerSettings, Settings
from changefeed.errors import BrokerError
from changefeed.kafka.admin import metadata_answers
from changefeed.topics import ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def broker_settings() -> BrokerSettings:
    return suite_broker_settings()


@pytest.fixture(scope="session")
def kafka_bootstrap(broker_settings: BrokerSettings) -> Iterator[str]:
    """Bootstrap servers of a broker that answers metadata requests."""
    external = os.environ.get("CHANGEFEED_BOOTSTRAP")
    if external:
        if not metadata_answers(external, timeout_s=10.0):
            pytest.exit(f"CHANGEFEED_BOOTSTRAP={external} does not answer metadata requests", 3)
        yield external
        return
    broker = LocalBroker(broker_settings)
    already_running = broker.status().reachable
    try:
        status = broker.start(timeout_s=240.0)
    except BrokerError as exc:
        pytest.exit(f"the test Kafka broker could not start: {exc}", 3)
    yield status.bootstrap
    if not already_running:
        broker.stop()


@pytest.fixture
def unique() -> str:
    """A short id to make names unique to one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(
    kafka_bootstrap: str, unique: str, tmp_path: Path, broker_settings: BrokerSettings
) -> Settings:
    """Settings of a fresh, isolated changefeed deployment with its topics created."""
    cfg = Settings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"t{unique}.",
        app_id=f"cf-{unique}",
        partitions=2,
        data_dir=tmp_path / "worker",
        broker=broker_settings,
    )
    ensure_topics(cfg)
    return cfg


@pytest.fixture
def group_id(unique: str) -> str:
    return f"g-{unique}"
