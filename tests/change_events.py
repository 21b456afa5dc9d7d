"""ChangeEvent records as the processors publish them, for the events API tests (unit and
integration alike; ``tests/`` is on the test path)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from events_api.access.keys import Role

T0 = 1_700_000_000_000_000  # micros

# The API keys the events API tests create: label -> (tenant, role, user of a user key).
KEY_SPECS = {
    "acme-admin": ("acme", Role.ADMIN, None),
    "acme-u1": ("acme", Role.USER, "u-1"),
    "acme-u2": ("acme", Role.USER, "u-2"),
    "globex-admin": ("globex", Role.ADMIN, None),
    "globex-u1": ("globex", Role.USER, "u-1"),
}


def change_event(
    n: int,
    *,
    tenant: str = "acme",
    user: str | None = "u-1",
    subject_type: str = "expense_report",
    subject_id: str = "1",
    event_type: str | None = None,
    action: str = "update",
    request_id: str | None = None,
    created_us: int = T0,
    unique_id: bool = False,
    sequence: int = 0,
    criticality: int = 0,
    code: int = 0,
    late: bool = False,
    previous: Any = None,
    current: Any = None,
) -> dict[str, Any]:
    """A valid ``changefeed.ChangeEvent`` record; ``n`` makes its ids unique. With
    ``unique_id`` the change id is also unique across calls with the same ``n``."""
    event_id = f"ev-{tenant}-{n}"
    salt = f"-{uuid.uuid4()}" if unique_id else ""
    if current is None and action != "delete":
        current = {"amount": n, "api_key": "sha256:0badc0de", "tags": ["a"]}
    return {
        "change_id": str(uuid.uuid5(uuid.NAMESPACE_URL, event_id + salt)),
        "event_id": event_id,
        "request_id": request_id or f"req-{tenant}-{n}",
        "tenant_id": tenant,
        "action": action,
        "event_type": event_type or f"{subject_type}:{action}d",
        "subject_type": subject_type,
        "subject_id": subject_id,
        "subject_ref": {"key": "account", "id": "7"},
        "version": n,
        "actor": {
            "user_id": user,
            "application_id": "app-1",
            "api_version": "v2",
            "api_key_fingerprint": "sha256:3f2a9c1e",
        },
        "criticality": criticality,
        "code": code,
        "internal": True,
        "payload_content_type": "application/json",
        "previous_payload": None if previous is None else json.dumps(previous),
        "current_payload": None if current is None else json.dumps(current),
        "payload_changes": [
            {"op": "replace", "path": "/amount", "from": None, "value": json.dumps(n)},
            {"op": "remove", "path": "/old", "from": None, "value": None},
        ],
        "field_changes": {"/amount": {"old": json.dumps(n - 1), "new": json.dumps(n)}},
        "late": late,
        "subject_sequence": sequence,
        "subject_changed_at": created_us - 1000,
        "created_at": created_us,
        "source": "/changefeed/test",
    }
