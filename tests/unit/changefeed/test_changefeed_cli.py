"""The command line: help on everything, typed options, one line per failure, exit codes."""

from __future__ import annotations

import importlib.metadata
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest

import changefeed
from changefeed.cli import check_usage, cli, main
from changefeed.errors import BrokerError, ConfigError, TopicMissingError
from changefeed.failures import ExitCode, failure_for


def _paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _paths(command, (*prefix, name))


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


PATHS = list(_paths(cli))


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No command of these tests may reach a real broker or write to the real home."""
    monkeypatch.setenv("CHANGEFEED_HOME", str(tmp_path))
    monkeypatch.setenv("CHANGEFEED_BOOTSTRAP", f"127.0.0.1:{_closed_port()}")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_command_of_the_issue_is_there() -> None:
    expected = {
        ("broker", "start"),
        ("broker", "status"),
        ("broker", "stop"),
        ("topics", "ensure"),
        ("topics", "describe"),
        ("worker",),
        ("demo-api",),
        ("loadgen",),
        ("keys", "create"),
        ("keys", "list"),
        ("keys", "revoke"),
        ("replay",),
        ("demo",),
    }
    assert expected <= set(PATHS)


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_every_command_has_a_description_and_help(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    command = _command(path)
    assert command.help and command.get_short_help_str().strip()
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert param.help, f"{' '.join(path)} {param.opts} has no help"
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: changefeed " + " ".join(path))


def test_options_show_their_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadgen", "--help"]) == 0
    out = capsys.readouterr().out
    assert "[default: 50.0" in out  # --rate
    assert "[default: 0.05" in out  # --duplicates
    assert main(["replay", "--help"]) == 0
    assert "[default: changes]" in capsys.readouterr().out


def test_top_level_help_documents_exit_codes_and_global_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for code in ExitCode:
        assert f"  {int(code)} " in out
    assert "--debug" in out and "--bootstrap" in out and "--version" in out


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"changefeed {changefeed.__version__}"
    assert out == f"changefeed {importlib.metadata.version('changefeed')}"


@pytest.mark.parametrize(
    "argv", [["replay", "--since", "-2h"], ["replay", "--since=-2h"]], ids=["space", "equals"]
)
def test_since_takes_a_negative_looking_value(argv: list[str]) -> None:
    since = check_usage(argv)["since"]  # raises UsageError when it does not parse
    assert isinstance(since, datetime)
    ago = datetime.now(UTC) - since
    assert timedelta(hours=2) - timedelta(minutes=1) < ago < timedelta(hours=2, minutes=1)


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "--since"],
        ["replay", "--since", "yesterday"],
        ["replay", "--since", "-1h", "--until", "-2h"],
        ["keys", "create", "--tenant", "acme", "--role", "root"],
        ["keys", "create", "--tenant", "acme", "--role", "user"],  # a user key needs --user
        ["loadgen", "--duplicates", "2"],
        ["worker", "--loglevel", "loud"],
        ["nope"],
        ["topics", "describe", "--bogus"],
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == ExitCode.USAGE
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "error:" in lines[0] and "--help" in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_a_group_without_its_command_shows_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "ensure" in err and "describe" in err and "Traceback" not in err


def test_bad_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHANGEFEED_PARTITIONS", "abc")
    assert main(["topics", "describe"]) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert "CHANGEFEED_PARTITIONS" in captured.err and "'abc'" in captured.err
    assert "Traceback" not in captured.err


def test_a_bad_setting_does_not_break_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHANGEFEED_PARTITIONS", "abc")
    assert main(["topics", "describe", "--help"]) == 0


def test_debug_adds_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHANGEFEED_PARTITIONS", "abc")
    assert main(["--debug", "topics", "describe"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "ConfigError" in err
    assert err.splitlines()[-1].startswith("changefeed: error: CHANGEFEED_PARTITIONS")


@pytest.mark.timeout(30)  # a hang guard: clients give up after 5 s, not kafka-python's 30 s
@pytest.mark.parametrize(
    "argv", [["replay", "--since", "-2h"], ["topics", "describe"]], ids=["replay", "describe"]
)
def test_unreachable_broker_is_one_line_and_exit_3(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--bootstrap", "127.0.0.1:1", *argv]) == ExitCode.BROKER
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "127.0.0.1:1" in lines[0] and "changefeed broker start" in lines[0]
    assert captured.out == ""


# -- failure_for: the pure decision ------------------------------------------------------
def test_failures_map_to_documented_codes() -> None:
    from aiokafka.errors import NoBrokersAvailable
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    assert failure_for(ConfigError("X must be an integer")).code == ExitCode.USAGE
    assert failure_for(TopicMissingError("topic t does not exist")).code == ExitCode.TOPIC
    assert failure_for(NoBrokersAvailable()).code == ExitCode.BROKER
    assert failure_for(KafkaConnectionError("refused")).code == ExitCode.BROKER
    wrapped = RuntimeError("cannot reach Kafka")
    wrapped.__cause__ = KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1")
    assert failure_for(wrapped).code == ExitCode.BROKER
    assert failure_for(KafkaTimeoutError("batch expired")).code == ExitCode.FAILED
    assert failure_for(ValueError("boom")).code == ExitCode.FAILED


def test_a_multi_line_message_becomes_one_line_pointing_at_debug() -> None:
    failure = failure_for(BrokerError("the broker exited; last log lines:\nline 1\nline 2"))
    assert failure.code == ExitCode.BROKER
    assert "\n" not in failure.line
    assert "line 1" not in failure.line and "--debug" in failure.line


def test_an_unexpected_error_is_one_line_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def explode(self: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("changefeed.cli._Globals.settings", explode)
    assert main(["topics", "describe"]) == ExitCode.FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ZeroDivisionError" in err and "--debug" in err
