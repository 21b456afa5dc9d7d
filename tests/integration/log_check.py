"""Quiet logs: the WARNING/ERROR lines of a process's log that nobody expected.

A healthy run logs no recurring warning or error; the tests that inject faults allow the
lines those faults cause, each by a precise pattern, and fail on anything else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

NOTEWORTHY = re.compile(
    r"\[(WARNING|ERROR|CRITICAL)\]|Traceback \(most recent call last\)|\b\w+Warning: "
)


def unexpected_lines(logs: Iterable[Path], allowed: Iterable[re.Pattern[str]] = ()) -> list[str]:
    """Lines of ``logs`` at WARNING or above (or tracebacks, or Python warnings) that match
    none of ``allowed``, each prefixed with its file name."""
    allow = list(allowed)
    found = []
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if NOTEWORTHY.search(line) and not any(p.search(line) for p in allow):
                found.append(f"{path.name}: {line[:300]}")
    return found
