"""Where a stream keeps its position between runs: a file, replaced atomically.

:class:`FileCursorStore` writes the position to a temporary file in the same directory,
flushes it to disk, then renames it over the old one (``os.replace``): a crash at any point
leaves either the previous position or the new one, never half of one. The position is an
opaque token of :mod:`changefeed.client.stream`, stored as one line of text.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

from changefeed.client.errors import CursorStoreError

MAX_POSITION_BYTES = 1_000_000


class CursorStore(Protocol):
    """What a stream needs to remember its position."""

    def load(self) -> str | None: ...

    def save(self, position: str) -> None: ...


class FileCursorStore:
    """A stream position kept in ``path`` (created with its directory on first save)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> str | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CursorStoreError(f"cannot read the stream position {self.path}: {exc}") from exc
        if len(data) > MAX_POSITION_BYTES:
            raise CursorStoreError(f"{self.path} is too large to be a stream position")
        text = data.decode("utf-8", errors="replace").strip()
        return text or None

    def save(self, position: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(position + "\n")
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, self.path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise CursorStoreError(f"cannot save the stream position {self.path}: {exc}") from exc


class MemoryCursorStore:
    """A position kept in memory: for tests and for callers that store it themselves."""

    def __init__(self, position: str | None = None) -> None:
        self.position = position

    def load(self) -> str | None:
        return self.position

    def save(self, position: str) -> None:
        self.position = position
