"""Typed, frozen settings, read from the environment once, at the entry point.

Nothing below the entry point reads ``os.environ``: it is handed a :class:`Settings`.
Every duration the product keeps (topic retention, dedupe window, index horizon) derives
from :attr:`Settings.retention_ms`, so "7 days" is set in exactly one place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from changefeed.errors import ConfigError

SEVEN_DAYS_MS = 7 * 24 * 60 * 60 * 1000  # 604_800_000
KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"


def _default_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "changefeed"


@dataclass(frozen=True)
class BrokerSettings:
    """Where the local single-node KRaft broker lives and listens."""

    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    kafka_version: str = KAFKA_VERSION
    home: Path = field(default_factory=_default_home)
    heap: str = "1g"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def dist_dir(self) -> Path:
        """Jar cache, shared by every broker instance of this Kafka version."""
        return self.home / f"kafka_{SCALA_VERSION}-{self.kafka_version}"

    @property
    def state_dir(self) -> Path:
        """Data, logs and pid file of the broker listening on :attr:`port`."""
        return self.home / f"broker-{self.port}"


@dataclass(frozen=True)
class Settings:
    """Everything a changefeed process needs to know, validated once."""

    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    partitions: int = 4
    retention_ms: int = SEVEN_DAYS_MS
    app_id: str = "changefeed"
    data_dir: Path = field(default_factory=lambda: _default_home() / "worker")
    worker_web_port: int = 6066
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    demo_api_port: int = 8000
    redact_paths: tuple[str, ...] = ("/api_key", "/password", "/secret", "/token", "/card_number")
    source: str = "/changefeed/demo"
    broker: BrokerSettings = field(default_factory=BrokerSettings)

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {self.partitions}")
        if self.retention_ms < 60_000:
            raise ConfigError(f"retention_ms must be at least one minute, got {self.retention_ms}")
        if not self.bootstrap:
            raise ConfigError("bootstrap servers must not be empty")

    def topic(self, name: str) -> str:
        """The full name of project topic ``name`` (``actions``, ``changes``, ...)."""
        return f"{self.topic_prefix}{name}"

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``CHANGEFEED_*`` variables; unknown values are errors."""
        env = os.environ if env is None else env
        broker = BrokerSettings(
            port=_int(env, "CHANGEFEED_BROKER_PORT", 9092),
            controller_port=_int(env, "CHANGEFEED_CONTROLLER_PORT", 9093),
            home=Path(env["CHANGEFEED_HOME"]) if env.get("CHANGEFEED_HOME") else _default_home(),
        )
        home = broker.home
        redact = env.get("CHANGEFEED_REDACT_PATHS")
        return cls(
            bootstrap=env.get("CHANGEFEED_BOOTSTRAP", broker.bootstrap),
            topic_prefix=env.get("CHANGEFEED_TOPIC_PREFIX", ""),
            partitions=_int(env, "CHANGEFEED_PARTITIONS", 4),
            retention_ms=_int(env, "CHANGEFEED_RETENTION_MS", SEVEN_DAYS_MS),
            app_id=env.get("CHANGEFEED_APP_ID", "changefeed"),
            data_dir=Path(env.get("CHANGEFEED_DATA_DIR", str(home / "worker"))),
            worker_web_port=_int(env, "CHANGEFEED_WORKER_PORT", 6066),
            api_host=env.get("CHANGEFEED_API_HOST", "127.0.0.1"),
            api_port=_int(env, "CHANGEFEED_API_PORT", 8080),
            demo_api_port=_int(env, "CHANGEFEED_DEMO_API_PORT", 8000),
            redact_paths=tuple(p for p in redact.split(",") if p)
            if redact
            else Settings.redact_paths,
            broker=broker,
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
