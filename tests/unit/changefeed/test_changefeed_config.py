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
