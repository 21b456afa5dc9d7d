"""Building ApiAction records (``schemas/changefeed.ApiAction.avsc``) from what an API did.

Whatever writes to a business API (the demo API, the load generator playing it) describes
the caller once (:class:`Caller`) and each changed object; this module turns that into the
record dict the publisher encodes. The API key never appears here, only its fingerprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

ActionKind = Literal["create", "update", "delete", "custom"]
VERBS = {"create": "created", "update": "updated", "delete": "deleted"}
JSON_CONTENT_TYPE = "application/json"
CUSTOM_CODE_MIN = 10_000


@dataclass(frozen=True)
class Caller:
    """Who made a request: the ``actor`` of every action it causes, plus its tenant."""

    tenant_id: str
    api_version: str
    user_id: str | None = None
    application_id: str | None = None
    api_key_fingerprint: str | None = None

    def actor(self) -> dict[str, str | None]:
        return {
            "user_id": self.user_id,
            "application_id": self.application_id,
            "api_version": self.api_version,
            "api_key_fingerprint": self.api_key_fingerprint,
        }


def event_type(subject_type: str, kind: ActionKind) -> str:
    """Kantata-style ``<subject_type>:<past-tense verb>``, e.g. ``expense_report:updated``."""
    return f"{subject_type}:{VERBS[kind]}"


def json_text(document: Any) -> str:
    """Compact JSON text, the form payloads travel in."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def change_action(
    *,
    event_id: str,
    request_id: str,
    caller: Caller,
    kind: ActionKind,
    subject_type: str,
    subject_id: str,
    version: int | None,
    occurred_at: datetime | int,
    payload: Any,
    parent: tuple[str, str] | None,
    source: str,
) -> dict[str, Any]:
    """The ApiAction of a create, update or delete made by the API itself (``internal``)."""
    return {
        "event_id": event_id,
        "request_id": request_id,
        "tenant_id": caller.tenant_id,
        "action": kind,
        "event_type": event_type(subject_type, kind),
        "subject_type": subject_type,
        "subject_id": subject_id,
        "subject_ref": {"key": parent[0], "id": parent[1]} if parent else None,
        "version": version,
        "occurred_at": occurred_at,
        "actor": caller.actor(),
        "criticality": 0,
        "code": 0,
        "internal": True,
        "payload_content_type": JSON_CONTENT_TYPE,
        "payload": None if payload is None else json_text(payload),
        "source": source,
    }


def custom_event_action(
    *,
    event_id: str,
    request_id: str,
    caller: Caller,
    code: int,
    criticality: int,
    subject_type: str,
    subject_id: str,
    occurred_at: datetime | int,
    payload: str,
    content_type: str,
    source: str,
) -> dict[str, Any]:
    """The ApiAction of a generated event (seed 001): custom code, not internal."""
    return {
        "event_id": event_id,
        "request_id": request_id,
        "tenant_id": caller.tenant_id,
        "action": "custom",
        "event_type": f"custom:{code}",
        "subject_type": subject_type,
        "subject_id": subject_id,
        "subject_ref": None,
        "version": None,
        "occurred_at": occurred_at,
        "actor": caller.actor(),
        "criticality": criticality,
        "code": code,
        "internal": False,
        "payload_content_type": content_type,
        "payload": payload,
        "source": source,
    }
