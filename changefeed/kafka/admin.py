"""Admin connections to Kafka (kafka-python), with our errors instead of the library's."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from changefeed.errors import BrokerError


@contextmanager
def admin_client(bootstrap: str, *, timeout_s: float = 10.0) -> Iterator[KafkaAdminClient]:
    """An admin client, closed on exit; ``BrokerError`` when no broker answers."""
    try:
        client = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="changefeed-admin",
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaError as exc:
        raise BrokerError(f"no Kafka broker answers at {bootstrap}: {exc}") from exc
    try:
        yield client
    finally:
        client.close()


def metadata_answers(bootstrap: str, *, timeout_s: float = 3.0) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata (describe cluster) request."""
    quiet = logging.getLogger("kafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # connection refused is the expected answer while starting
    try:
        with admin_client(bootstrap, timeout_s=timeout_s) as client:
            client.describe_cluster()
        return True
    except (BrokerError, KafkaError, OSError, ValueError):
        return False
    finally:
        quiet.setLevel(level)
