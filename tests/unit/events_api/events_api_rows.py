"""Rows for feed-index tests: IndexedEvents with a JSON body that names their position."""

from __future__ import annotations

import json

from events_api.index import IndexedEvent

T0 = 1_700_000_000_000_000  # micros


def indexed(
    partition: int,
    offset: int,
    *,
    created_us: int = T0,
    tenant: str = "acme",
    user: str | None = "u-1",
    event_type: str = "expense_report:updated",
    subject_type: str = "expense_report",
    subject_id: str = "1",
    request_id: str | None = None,
    criticality: int = 0,
    code: int = 0,
    sequence: int = 0,
    late: bool = False,
    action: str = "update",
) -> IndexedEvent:
    body = {"partition": partition, "offset": offset, "tenant_id": tenant, "event_type": event_type}
    return IndexedEvent(
        partition=partition,
        offset=offset,
        created_us=created_us,
        tenant_id=tenant,
        change_id=f"c-{partition}-{offset}",
        request_id=request_id or f"r-{partition}-{offset}",
        event_type=event_type,
        subject_type=subject_type,
        subject_id=subject_id,
        user_id=user,
        criticality=criticality,
        code=code,
        subject_sequence=sequence,
        late=late,
        action=action,
        body=json.dumps(body),
    )


def position(body: str) -> tuple[int, int]:
    data = json.loads(body)
    return data["partition"], data["offset"]
