"""Typed, frozen settings, read from the environment once, at the entry point.

Nothing below the entry point reads ``os.environ``: it is handed a :class:`Settings`.
Every duration the product keeps (topic retention, dedupe window, index horizon) derives
from :attr:`Settings.retention_ms`, so "7 days" is set in exactly one place.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from changefeed.errors import ConfigError
from schemas.masking import DEFAULT_SENSITIVE_KEYS, Redactor

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
    state_root: Path | None = None
    """Where the broker's state folder goes; ``home`` when unset. A throwaway broker (a test
    run's) points this at a fresh folder and still shares the jar cache of ``home``."""

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
        return (self.state_root or self.home) / f"broker-{self.port}"


DEFAULT_RETRY_SCHEDULE_S = (
    5.0,
    30.0,
    120.0,
    600.0,
    1800.0,
    3600.0,
    10800.0,
    21600.0,
    43200.0,
    86400.0,
)
"""Delays before each retry of a webhook delivery: 5 s, 30 s, 2 m, 10 m, 30 m, 1 h, 3 h, 6 h,
12 h, 24 h (about 47 hours in all: past a day, well within the 7-day retention)."""


@dataclass(frozen=True)
class WebhookSettings:
    """How the worker delivers webhooks (see :mod:`webhooks`)."""

    # Networks a target may resolve to although the address guard refuses them by default
    # (loopback, private, link-local, CGNAT, multicast, cloud metadata); CIDR notation.
    allow_networks: tuple[str, ...] = ()
    retry_schedule_s: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE_S
    timeout_s: float = 5.0
    # Concurrent requests to one subscription's endpoint (distinct subjects only: the
    # changes of one subject are delivered one after the other).
    concurrency: int = 16
    # A subscription whose endpoint has failed without a single success for this long
    # is paused, and says so.
    pause_after_s: float = 3 * 24 * 3600.0

    def __post_init__(self) -> None:
        if not self.retry_schedule_s or any(d <= 0 for d in self.retry_schedule_s):
            raise ConfigError("the webhook retry schedule needs at least one positive delay")
        if self.timeout_s <= 0 or self.concurrency < 1 or self.pause_after_s <= 0:
            raise ConfigError("webhook timeout, concurrency and pause period must be positive")
        for network in self.allow_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ConfigError(f"CHANGEFEED_WEBHOOK_ALLOW_NETWORKS: {exc}") from exc


@dataclass(frozen=True)
class WebLimits:
    """What a web server of changefeed allows a connection (see ``changefeed.web_limits``)."""

    header_timeout_s: float = 10.0
    max_connections: int = 4096

    def __post_init__(self) -> None:
        if self.header_timeout_s <= 0 or self.max_connections < 1:
            raise ConfigError("the HTTP header timeout and connection cap must be positive")


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
    events_api_port: int = 6067
    """Port of a standalone events API server (``changefeed api``)."""
    worker_url: str | None = None
    """A worker's base URL, to which a standalone API server forwards subject states."""
    api_host: str = "127.0.0.1"
    demo_api_port: int = 8000
    redact_paths: tuple[str, ...] = ("/api_key", "/password", "/secret", "/token", "/card_number")
    redact_keys: tuple[str, ...] = DEFAULT_SENSITIVE_KEYS
    source: str = "/changefeed/demo"
    web_limits: WebLimits = field(default_factory=WebLimits)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    # The deployment secret: keys for masking sensitive values and signing cursors derive
    # from it (see derived_key). Every worker of a deployment must share it.
    secret: bytes = field(default=b"changefeed-development-secret-only", repr=False)

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {self.partitions}")
        if self.retention_ms < 60_000:
            raise ConfigError(f"retention_ms must be at least one minute, got {self.retention_ms}")
        if not self.bootstrap:
            raise ConfigError("bootstrap servers must not be empty")
        if self.worker_url is not None and not self.worker_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"CHANGEFEED_WORKER_URL must be an http(s) URL such as http://worker:6066, "
                f"got {self.worker_url!r}"
            )

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose (``"redact"``, ``"cursor"``), derived from the secret,
        so a key leaked from one use says nothing about another."""
        return hmac.new(self.secret, purpose.encode(), hashlib.sha256).digest()

    def redactor(self) -> Redactor:
        """The masking of this deployment: its paths and key names, keyed by its secret."""
        return Redactor(self.redact_paths, self.derived_key("redact"), self.redact_keys)

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
        redact_keys = env.get("CHANGEFEED_REDACT_KEYS")
        return cls(
            bootstrap=env.get("CHANGEFEED_BOOTSTRAP", broker.bootstrap),
            topic_prefix=env.get("CHANGEFEED_TOPIC_PREFIX", ""),
            partitions=_int(env, "CHANGEFEED_PARTITIONS", 4),
            retention_ms=_int(env, "CHANGEFEED_RETENTION_MS", SEVEN_DAYS_MS),
            app_id=env.get("CHANGEFEED_APP_ID", "changefeed"),
            data_dir=Path(env.get("CHANGEFEED_DATA_DIR", str(home / "worker"))),
            worker_web_port=_int(env, "CHANGEFEED_WORKER_PORT", 6066),
            events_api_port=_int(env, "CHANGEFEED_EVENTS_API_PORT", 6067),
            worker_url=env.get("CHANGEFEED_WORKER_URL") or None,
            api_host=env.get("CHANGEFEED_API_HOST", "127.0.0.1"),
            demo_api_port=_int(env, "CHANGEFEED_DEMO_API_PORT", 8000),
            redact_paths=tuple(p for p in redact.split(",") if p)
            if redact
            else Settings.redact_paths,
            redact_keys=tuple(k.strip() for k in redact_keys.split(",") if k.strip())
            if redact_keys is not None
            else DEFAULT_SENSITIVE_KEYS,
            web_limits=WebLimits(
                header_timeout_s=_float(env, "CHANGEFEED_HTTP_HEADER_TIMEOUT_S", 10.0),
                max_connections=_int(env, "CHANGEFEED_HTTP_MAX_CONNECTIONS", 4096),
            ),
            broker=broker,
            webhooks=_webhook_settings(env),
            secret=_secret(env, home),
        )


def _webhook_settings(env: Mapping[str, str]) -> WebhookSettings:
    default = WebhookSettings()
    allow = env.get("CHANGEFEED_WEBHOOK_ALLOW_NETWORKS", "")
    schedule = env.get("CHANGEFEED_WEBHOOK_RETRY_SCHEDULE", "")
    return WebhookSettings(
        allow_networks=tuple(n.strip() for n in allow.split(",") if n.strip()),
        retry_schedule_s=tuple(
            parse_duration_s("CHANGEFEED_WEBHOOK_RETRY_SCHEDULE", d)
            for d in schedule.split(",")
            if d.strip()
        )
        if schedule.strip()
        else default.retry_schedule_s,
        timeout_s=_float(env, "CHANGEFEED_WEBHOOK_TIMEOUT_S", default.timeout_s),
        concurrency=_int(env, "CHANGEFEED_WEBHOOK_CONCURRENCY", default.concurrency),
        pause_after_s=_float(env, "CHANGEFEED_WEBHOOK_PAUSE_AFTER_S", default.pause_after_s),
    )


_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(name: str, text: str) -> float:
    """Seconds of ``250ms``, ``5s``, ``2m``, ``3h``, ``1d`` or a bare number of seconds."""
    raw = text.strip()
    for unit in ("ms", "s", "m", "h", "d"):
        if raw.endswith(unit):
            number, factor = raw[: -len(unit)], _UNITS_S[unit]
            break
    else:
        number, factor = raw, 1.0
    try:
        value = float(number) * factor
    except ValueError as exc:
        raise ConfigError(f"{name}: {text!r} is not a duration such as 30s, 2m or 1h") from exc
    if not value > 0:
        raise ConfigError(f"{name}: durations must be positive, got {text!r}")
    return value


def _secret(env: Mapping[str, str], home: Path) -> bytes:
    """``CHANGEFEED_SECRET``, else a random secret kept in ``$CHANGEFEED_HOME/secret.key``.

    The file is created once (mode 0600), so masks and cursors stay valid across restarts
    of a single-machine deployment; several machines must share ``CHANGEFEED_SECRET``.
    """
    given = env.get("CHANGEFEED_SECRET")
    if given:
        if len(given) < 16:
            raise ConfigError("CHANGEFEED_SECRET must be at least 16 characters")
        return given.encode()
    path = home / "secret.key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
