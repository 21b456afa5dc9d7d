"""Admin connections to Kafka (kafka-python), with our errors instead of the library's."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from changefeed.errors import BrokerError, BrokerUnreachableError

# How long a one-shot client waits for a first broker answer before it gives up: long
# enough for a busy broker, short enough that a command against a wrong address fails fast.
BOOTSTRAP_TIMEOUT_S = 5.0


@contextmanager
def admin_client(
    bootstrap: str, *, timeout_s: float = 10.0, bootstrap_timeout_s: float = BOOTSTRAP_TIMEOUT_S
) -> Iterator[KafkaAdminClient]:
    """An admin client, closed on exit; ``BrokerError`` when no broker answers within
    ``bootstrap_timeout_s``. ``timeout_s`` bounds each request once connected."""
    try:
        client = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="changefeed-admin",
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(min(timeout_s, bootstrap_timeout_s) * 1000),
        )
    except KafkaError as exc:
        raise BrokerUnreachableError(f"no Kafka broker answers at {bootstrap}: {exc}") from exc
    try:
        yield client
    finally:
        client.close()


def metadata_answers(bootstrap: str, *, timeout_s: float = 3.0) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata (describe cluster) request."""
    return _answers(bootstrap, timeout_s, lambda client: client.describe_cluster())


def groups_answer(bootstrap: str, *, timeout_s: float = 3.0) -> bool:
    """True when the broker at ``bootstrap`` has a group coordinator: consumer groups and
    transactions can start. A fresh broker answers metadata a few seconds before that,
    while it creates its offsets topic."""
    return _answers(
        bootstrap, timeout_s, lambda client: client.describe_groups(["changefeed-readiness-probe"])
    )


def _answers(bootstrap: str, timeout_s: float, ask: Callable[[KafkaAdminClient], object]) -> bool:
    quiet = logging.getLogger("kafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # connection refused is the expected answer while starting
    try:
        with admin_client(bootstrap, timeout_s=timeout_s) as client:
            ask(client)
        return True
    except (BrokerError, KafkaError, OSError, ValueError):
        return False
    finally:
        quiet.setLevel(level)


def delete_topics_named(bootstrap: str, marks: list[str]) -> list[str]:
    """Delete every topic whose name contains one of ``marks`` (the run ids a benchmark or
    a test put in the names of the topics it created); returns their names, sorted."""
    if not marks:
        return []
    with admin_client(bootstrap, timeout_s=60.0) as client:
        doomed = sorted(t for t in client.list_topics() if any(mark in t for mark in marks))
        if doomed:
            client.delete_topics(doomed)
    return doomed
