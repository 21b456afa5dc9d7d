"""The keys a worker knows, in memory, and the check of a presented key.

:class:`KeyRing` holds the latest record of every key id, as folded from the ``api_keys``
topic by :class:`events_api.access.key_topic.KeyFollower`. A key that is not (yet) known
may have been created a moment ago: before answering 401, the ring asks its follower to
catch up with the topic's current end, so "create a key, use it at once" works on every
worker. Concurrent misses share one catch-up, so a flood of bad keys costs one offsets
request per round, not one each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from events_api.access.keys import ApiKeyRecord, parse_key_id
from events_api.errors import Unauthorized, Unavailable

CatchUp = Callable[[float], Awaitable[bool]]
CATCH_UP_TIMEOUT_S = 2.0


class KeyRing:
    def __init__(self, records: list[ApiKeyRecord] | None = None) -> None:
        self._records: dict[str, ApiKeyRecord] = {r.key_id: r for r in records or []}
        self._catch_up: CatchUp | None = None
        self._pending: asyncio.Task[bool] | None = None
        self.loaded = records is not None

    def attach(self, catch_up: CatchUp) -> None:
        """Let misses wait for the key topic to be read up to its current end."""
        self._catch_up = catch_up

    def apply(self, key_id: str, record: ApiKeyRecord | None) -> None:
        if record is None:
            self._records.pop(key_id, None)
        else:
            self._records[key_id] = record

    def get(self, key_id: str) -> ApiKeyRecord | None:
        return self._records.get(key_id)

    def __len__(self) -> int:
        return len(self._records)

    async def authenticate(self, key: str) -> ApiKeyRecord:
        """The record of ``key``; :class:`Unauthorized` for a missing, unknown, wrong or
        revoked key; :class:`Unavailable` while the keys have not been loaded yet."""
        key_id = parse_key_id(key)
        if key_id is None:
            raise Unauthorized("malformed API key: expected cf_<key id>_<secret>")
        record = self._records.get(key_id)
        if record is None and self._catch_up is not None:
            caught_up = await self._shared_catch_up()
            record = self._records.get(key_id)
            if record is None and not (caught_up or self.loaded):
                raise Unavailable("API keys are still being loaded; retry in a moment")
        if record is None or not record.matches(key):
            raise Unauthorized("unknown API key")
        if record.revoked:
            raise Unauthorized(f"API key {key_id} was revoked at {record.revoked_at}")
        return record

    async def _shared_catch_up(self) -> bool:
        assert self._catch_up is not None
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(self._catch_up(CATCH_UP_TIMEOUT_S))
        return await asyncio.shield(self._pending)
