from pathlib import Path

import pytest

from changefeed.config import SEVEN_DAYS_MS, Settings
from changefeed.errors import ConfigError


def test_defaults_keep_seven_days() -> None:
    assert Settings().retention_ms == SEVEN_DAYS_MS == 604_800_000


def test_from_env_reads_every_variable_once() -> None:
    env = {
        "CHANGEFEED_BROKER_PORT": "19092",
        "CHANGEFEED_TOPIC_PREFIX": "x.",
        "CHANGEFEED_PARTITIONS": "3",
        "CHANGEFEED_RETENTION_MS": "86400000",
        "CHANGEFEED_HOME": "/tmp/cf-home",
        "CHANGEFEED_REDACT_PATHS": "/a,/b/c",
    }
    s = Settings.from_env(env)
    assert s.bootstrap == "127.0.0.1:19092"  # follows the local broker's port
    assert s.topic("actions") == "x.actions"
    assert s.partitions == 3
    assert s.retention_ms == 86_400_000
    assert s.broker.state_dir == Path("/tmp/cf-home/broker-19092")
    assert s.redact_paths == ("/a", "/b/c")


def test_explicit_bootstrap_wins_over_broker_port() -> None:
    s = Settings.from_env({"CHANGEFEED_BOOTSTRAP": "kafka:9092", "CHANGEFEED_BROKER_PORT": "1"})
    assert s.bootstrap == "kafka:9092"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CHANGEFEED_PARTITIONS": "four"}, "CHANGEFEED_PARTITIONS must be an integer"),
        ({"CHANGEFEED_PARTITIONS": "0"}, "partitions must be >= 1"),
        ({"CHANGEFEED_RETENTION_MS": "10"}, "retention_ms must be at least one minute"),
    ],
)
def test_bad_values_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().partitions = 9  # type: ignore[misc]


def test_secret_from_env_or_created_once_in_home(tmp_path: Path) -> None:
    assert Settings.from_env({"CHANGEFEED_SECRET": "s" * 16}).secret == b"s" * 16
    with pytest.raises(ConfigError, match="at least 16"):
        Settings.from_env({"CHANGEFEED_SECRET": "short"})
    first = Settings.from_env({"CHANGEFEED_HOME": str(tmp_path)})
    second = Settings.from_env({"CHANGEFEED_HOME": str(tmp_path)})
    assert first.secret == second.secret and len(first.secret) == 64
    assert (tmp_path / "secret.key").stat().st_mode & 0o077 == 0  # owner-only


def test_derived_keys_differ_by_purpose_and_hide_the_secret() -> None:
    s = Settings(secret=b"x" * 32)
    assert s.derived_key("redact") != s.derived_key("cursor")
    assert len(s.derived_key("redact")) == 32
    assert "x" * 32 not in repr(s)
