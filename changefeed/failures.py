"""How a failed command ends: one exit code and one line for each kind of failure.

:func:`failure_for` is a pure function from an exception to a :class:`Failure` (exit code,
one line naming the cause and what to do). The CLI prints that line on stderr and exits with
the code; only ``--debug`` adds the traceback. The codes are part of the interface (scripts
test them) and are listed in ``changefeed --help`` and the README:

* 0 ok; 1 failure while running; 2 bad usage or bad setting; 3 broker unreachable or not
  ready; 4 topic missing or partition drift; 130 interrupted.

This module imports nothing heavy: the Kafka client's exception types are recognised by
module and name, so a failure is described without importing the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from changefeed.errors import (
    BrokerError,
    BrokerUnreachableError,
    ChangefeedError,
    ConfigError,
    TopicMissingError,
)


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    BROKER = 3
    TOPIC = 4
    INTERRUPTED = 130


EXIT_CODES_HELP: dict[ExitCode, str] = {
    ExitCode.OK: "ok",
    ExitCode.FAILED: "failure while running",
    ExitCode.USAGE: "bad usage: unknown option, bad argument or bad CHANGEFEED_* setting",
    ExitCode.BROKER: "Kafka broker unreachable, not ready or could not be started",
    ExitCode.TOPIC: "a topic is missing, or `topics ensure` found partition drift",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}

HINT_SETTING = "fix that variable (the README's Configuration table lists them)"
HINT_BROKER = (
    "start a local broker with `changefeed broker start`, "
    "or point --bootstrap / CHANGEFEED_BOOTSTRAP at a running one"
)
HINT_TOPIC = "create the project's topics with `changefeed topics ensure`, or name an existing one"
HINT_DEBUG = "rerun with --debug for the details"

# Kafka client exceptions (kafka-python and aiokafka) that mean "nobody answered".
_UNREACHABLE = {"NoBrokersAvailable", "KafkaConnectionError", "NodeNotReadyError"}


@dataclass(frozen=True)
class Failure:
    code: ExitCode
    line: str


def failure_for(exc: BaseException) -> Failure:
    """The exit code and the one line to print for ``exc`` raised by a command."""
    message, truncated = _first_line(exc)
    if isinstance(exc, ConfigError):
        return _failure(ExitCode.USAGE, message, HINT_SETTING, truncated)
    if isinstance(exc, TopicMissingError):
        return _failure(ExitCode.TOPIC, message, HINT_TOPIC, truncated)
    if isinstance(exc, BrokerUnreachableError) or _unreachable_in_chain(exc):
        return _failure(ExitCode.BROKER, message, HINT_BROKER, truncated)
    if isinstance(exc, BrokerError):
        return _failure(ExitCode.BROKER, message, HINT_DEBUG if truncated else "", False)
    if isinstance(exc, ChangefeedError):
        return _failure(ExitCode.FAILED, message, HINT_DEBUG if truncated else "", False)
    if _is_kafka_error(exc):
        return _failure(ExitCode.FAILED, f"Kafka: {message}", HINT_DEBUG, False)
    if isinstance(exc, OSError):
        return _failure(ExitCode.FAILED, message, HINT_DEBUG, False)
    return _failure(
        ExitCode.FAILED,
        f"unexpected {type(exc).__name__}: {message}",
        "rerun with --debug for the traceback, and please report it",
        False,
    )


def _failure(code: ExitCode, message: str, hint: str, truncated: bool) -> Failure:
    parts = [message.rstrip(" .:;")]
    if hint:
        parts.append(hint)
    if truncated and hint != HINT_DEBUG:
        parts.append(HINT_DEBUG)
    return Failure(code, "changefeed: error: " + "; ".join(parts))


def _first_line(exc: BaseException) -> tuple[str, bool]:
    """The exception's message on one line, and whether lines were left out."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__, False
    return lines[0], len(lines) > 1


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _is_kafka_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in {"kafka", "aiokafka"}


def _unreachable_in_chain(exc: BaseException) -> bool:
    for link in _chain(exc):
        if not _is_kafka_error(link):
            continue
        name = type(link).__name__
        if name in _UNREACHABLE:
            return True
        if name == "KafkaTimeoutError" and "bootstrap" in str(link).lower():
            return True
    return False
