"""Every ``changefeed`` command the READMEs (``README.md``, ``docker/README.md``) show runs
as written.

Commands are taken from fenced ``bash`` / ``sh`` / ``shell`` / ``console`` blocks (lines
whose command, after ``VAR=value`` assignments, is ``changefeed`` or ``.venv/bin/changefeed``)
and from inline code spans whose command is one of those.
Each is parsed by the real command line (:func:`changefeed.cli.check_usage`: options, types
and arguments, nothing run). A span naming a command without arguments (``changefeed
replay`` in prose) must name an existing command. A command is also run for real when that
needs no broker: ``--help``, ``--version``, and lines whose comment promises an exit code
(``# ... exit 2``), which must exit with that code and print one line on stderr.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

from changefeed.cli import check_usage, cli, main

REPO = Path(__file__).resolve().parents[3]
READMES = [REPO / "README.md", REPO / "docker" / "README.md"]
PROGRAMS = {"changefeed", ".venv/bin/changefeed"}
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
STOP_TOKENS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1"}


@dataclass(frozen=True)
class ReadmeCommand:
    where: str  # file:line
    text: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None  # promised by a ``# ... exit N`` comment
    inline: bool = False

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def _parse(text: str, where: str, *, inline: bool) -> ReadmeCommand | None:
    comment = text.split(" #", 1)[1] if " #" in text else ""
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:  # unbalanced quotes: prose, not a command
        return None
    env: dict[str, str] = {}
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        name, value = tokens.pop(0).split("=", 1)
        env[name] = value
    if not tokens or tokens[0] not in PROGRAMS:
        return None
    argv: list[str] = []
    for token in tokens[1:]:
        if token in STOP_TOKENS or token.startswith((">", "2>")):
            break
        argv.append(token)
    promised = re.search(r"\bexit (\d+)\b", comment)
    return ReadmeCommand(
        where,
        text.strip(),
        tuple(argv),
        env,
        int(promised.group(1)) if promised else None,
        inline,
    )


def readme_commands(markdown: str, name: str = "README.md") -> list[ReadmeCommand]:
    found: list[ReadmeCommand] = []
    fence: str | None = None
    continued = ""
    for number, raw in enumerate(markdown.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else (stripped[3:].strip() or "text")
            continue
        if fence is not None:
            if fence not in SHELL_BLOCKS:
                continue
            text = continued + stripped.removeprefix("$ ")
            if text.endswith("\\"):
                continued = text[:-1] + " "
                continue
            continued = ""
            command = _parse(text, f"{name}:{number}", inline=False)
            if command is not None:
                found.append(command)
            continue
        for span in re.findall(r"`([^`]+)`", raw):
            if re.search(r"(^|\s)(\.venv/bin/)?changefeed\s", span):
                command = _parse(span, f"{name}:{number}", inline=True)
                if command is not None:
                    found.append(command)
    return found


COMMANDS = [
    command
    for readme in READMES
    for command in readme_commands(readme.read_text(), str(readme.relative_to(REPO)))
]


def _is_name_reference(argv: tuple[str, ...]) -> bool:
    """``changefeed replay`` in prose: only command names, ending at a command."""
    command: click.Command = cli
    for word in argv:
        if not isinstance(command, click.Group) or word not in command.commands:
            return False
        command = command.commands[word]
    return not isinstance(command, click.Group)


def test_the_readme_shows_commands() -> None:
    shown = {c.argv[:1] for c in COMMANDS}
    assert {("broker",), ("topics",), ("replay",), ("keys",), ("--version",)} <= shown
    assert any(c.argv[:3] == ("replay", "--source", "changes") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_readme_command_parses_as_written(command: ReadmeCommand) -> None:
    if command.inline and _is_name_reference(command.argv):
        return
    if "--help" in command.argv or "--version" in command.argv:
        return  # eager options exit while parsing; run for real below
    try:
        check_usage(command.argv)
    except click.UsageError as exc:
        pytest.fail(f"{command} does not parse: {exc.format_message()}")


@pytest.mark.timeout(30)  # a hang guard (an unreachable broker costs a few seconds)
@pytest.mark.parametrize(
    "command",
    [c for c in COMMANDS if "--help" in c.argv or "--version" in c.argv or c.exit_code is not None],
    ids=str,
)
def test_readme_command_runs_as_promised(
    command: ReadmeCommand,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CHANGEFEED_HOME", str(tmp_path))
    monkeypatch.setenv("CHANGEFEED_BOOTSTRAP", "127.0.0.1:1")  # never the real broker
    for name, value in command.env.items():
        monkeypatch.setenv(name, value)
    code = main(list(command.argv))
    captured = capsys.readouterr()
    if command.exit_code is None:
        assert code == 0, captured.err
        assert captured.out.strip()
    else:
        assert code == command.exit_code, captured.err
        assert len(captured.err.splitlines()) == 1, captured.err
        assert "Traceback" not in captured.err


def test_the_extractor_sees_what_a_reader_sees() -> None:
    sample = "\n".join(
        [
            "Run `changefeed topics ensure`, see `changefeed replay` and `changefeed.cli`;",
            "`B=h:1 changefeed topics describe` (`it's changefeed ` is prose).",
            "```bash",
            "X=1 changefeed replay --since -2h > out.jsonl   # writes a file",
            "changefeed keys list \\",
            "  --tenant acme | jq .",
            "./scripts/demo.sh",
            "CHANGEFEED_PARTITIONS=abc changefeed topics describe  # one line, exit 2",
            "```",
            "```",
            "changefeed not-shell-so-ignored",
            "```",
        ]
    )
    found = readme_commands(sample)
    assert [c.argv for c in found] == [
        ("topics", "ensure"),
        ("replay",),
        ("topics", "describe"),
        ("replay", "--since", "-2h"),
        ("keys", "list", "--tenant", "acme"),
        ("topics", "describe"),
    ]
    assert found[2].env == {"B": "h:1"} and found[3].env == {"X": "1"}
    assert found[5].exit_code == 2 and found[3].exit_code is None
    assert _is_name_reference(("replay",)) and not _is_name_reference(("topics",))


def test_a_drifted_command_would_fail() -> None:
    with pytest.raises(click.UsageError):
        check_usage(["replay", "--from", "-2h"])
    with pytest.raises(click.UsageError):
        check_usage(["keys", "create", "--tenant", "acme"])  # --role is required
