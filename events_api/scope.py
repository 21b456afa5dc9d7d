"""Whose events a request may read: fixed by the API key, never by the request.

An admin key reads its tenant's whole log (seed 000's admin-only log, seed 004's
``admin_logs``); a user key reads only the events its user caused (seed 004's user stream).
Every query of the index is bounded by a :class:`Scope`, and cursors are signed for one,
so nothing a client sends can widen it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    tenant_id: str
    user_id: str | None = None  # None: the whole tenant (admin)

    @property
    def is_admin(self) -> bool:
        return self.user_id is None

    def binding(self) -> bytes:
        """The bytes a cursor's signature covers, so it is useless to any other scope."""
        user = "*" if self.user_id is None else f"u:{self.user_id}"
        return f"{self.tenant_id}\x00{user}".encode()
