"""The README's configuration table lists every environment variable the product reads."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ("changefeed", "schemas", "producers", "processors", "events_api")
# a name in quotes next to an environment lookup, or passed to the settings' parsers
_READ = re.compile(
    r"""(?:environ(?:\.get)?|getenv|env(?:\.get)?|_\w+\(env,)\s*[\[(]?\s*["']([A-Z][A-Z0-9_]+)["']"""
)


def names_read_by_the_code() -> set[str]:
    names: set[str] = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            names |= set(_READ.findall(path.read_text()))
    return names


def documented_names() -> set[str]:
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))


def test_every_variable_read_is_in_the_configuration_table() -> None:
    read = names_read_by_the_code()
    assert {
        "CHANGEFEED_SECRET",
        "CHANGEFEED_WORKER_URL",
        "CHANGEFEED_BOOTSTRAP",
        "CHANGEFEED_HTTP_HEADER_TIMEOUT_S",
    } <= read
    missing = read - documented_names()
    assert not missing, f"README configuration table lacks {sorted(missing)}"


def test_the_table_documents_nothing_the_code_does_not_read() -> None:
    extra = documented_names() - names_read_by_the_code()
    assert not extra, f"README documents variables no code reads: {sorted(extra)}"
