"""Wake-ups for long polls, per tenant, without a thread or a timer per waiting client.

A waiter takes the tenant's current :class:`asyncio.Event` *before* it queries the index,
then waits on it; the indexer, after committing rows of a tenant, sets that event and
drops it, so the next waiter takes a fresh one. Taking the event before querying means a
commit that lands between the query and the wait still wakes the waiter: nothing is missed,
whatever the interleaving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class TenantSignals:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self.waiting = 0

    def watch(self, tenant_id: str) -> asyncio.Event:
        """The event the next commit of ``tenant_id``'s rows will set."""
        event = self._events.get(tenant_id)
        if event is None:
            event = self._events[tenant_id] = asyncio.Event()
        return event

    def notify(self, tenant_ids: Iterable[str]) -> None:
        for tenant_id in tenant_ids:
            event = self._events.pop(tenant_id, None)
            if event is not None:
                event.set()

    async def wait(self, event: asyncio.Event, timeout_s: float) -> bool:
        """Whether ``event`` was set within ``timeout_s``."""
        if timeout_s <= 0:
            return event.is_set()
        self.waiting += 1
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1
