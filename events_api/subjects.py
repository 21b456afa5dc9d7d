"""Where a subject's current state comes from.

The authoritative current state of a subject is the processors' ``subject_state`` table,
which outlives retention; in a worker it is read through Faust's table routing
(:mod:`events_api.views`). Where no processors run alongside (the API on its own, as in
tests), the feed service derives it from the newest change in its index that set the
subject's state (:func:`state_from_change`): the same answer for any subject changed within
retention.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web


@dataclass(frozen=True)
class SubjectStateView:
    """A subject's current state: its JSON text, or deleted; position and change count."""

    payload: str | None
    deleted: bool
    version: int | None
    changed_at: str | None  # RFC 3339
    sequence: int


class SubjectStates(Protocol):
    async def forward(self, request: web.Request, subject_key: str) -> web.StreamResponse | None:
        """The answer of the worker that owns ``subject_key``, or None to answer here."""
        ...

    async def state(self, subject_key: str) -> SubjectStateView | None: ...

    async def close(self) -> None: ...


def state_from_change(change: dict[str, Any]) -> SubjectStateView:
    """The state a rendered change event left its subject in."""
    deleted = change["action"] == "delete"
    payload = change.get("current_payload")
    return SubjectStateView(
        payload=None if deleted or payload is None else json.dumps(payload),
        deleted=deleted,
        version=change.get("version"),
        changed_at=change.get("subject_changed_at"),
        sequence=int(change.get("subject_sequence", 0)) + 1,
    )
