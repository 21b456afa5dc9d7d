"""Tuning of the publisher: Kafka client settings, spool and drain behaviour.

Defaults are what the benchmark (``bench/bench_publish.py``) and the outage tests settled on.
Timeouts are short on purpose: an action the broker cannot take within
``delivery_timeout_ms`` goes to the durable spool instead of waiting in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kafka.codec import has_lz4

from changefeed.errors import ConfigError
from producers.spool import DEFAULT_SEGMENT_BYTES

COMPRESSIONS = ("lz4", "gzip", "zstd", "snappy", None)


def default_compression() -> str:
    """lz4 when its library is installed (fastest here, see the benchmark), else gzip.

    gzip needs nothing beyond the standard library, so a missing optional package never
    stops a publisher from starting.
    """
    return "lz4" if has_lz4() else "gzip"


@dataclass(frozen=True)
class PublisherOptions:
    """Everything about a :class:`~producers.publisher.Publisher` that is not deployment.

    ``max_block_ms`` bounds how long ``send`` may wait for topic metadata;
    ``delivery_timeout_ms`` bounds how long an accepted record may wait for its
    acknowledgement before it is moved to the spool (kafka-python requires it to be at least
    ``linger_ms + request_timeout_ms``); ``connect_timeout_s`` bounds each attempt to reach a
    broker. ``fsync_interval_s`` and ``segment_bytes`` go to the spool (see its fsync policy).
    """

    compression: str | None = field(default_factory=default_compression)
    linger_ms: int = 5
    batch_size: int = 256 * 1024
    max_block_ms: int = 3_000
    request_timeout_ms: int = 5_000
    delivery_timeout_ms: int = 15_000
    connect_timeout_s: float = 5.0
    drain_batch_records: int = 2_000
    drain_backoff_max_s: float = 5.0
    fsync_interval_s: float = 0.5
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    client_id: str = "changefeed-publisher"

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise ConfigError(
                f"compression must be one of {COMPRESSIONS}, not {self.compression!r}"
            )
        if self.delivery_timeout_ms < self.linger_ms + self.request_timeout_ms:
            raise ConfigError("delivery_timeout_ms must be >= linger_ms + request_timeout_ms")
        if self.drain_batch_records < 1:
            raise ConfigError("drain_batch_records must be >= 1")

    @property
    def outcome_wait_s(self) -> float:
        """How long a synchronous publish waits: past this every record has an outcome."""
        return self.delivery_timeout_ms / 1000 + self.connect_timeout_s + 5.0
