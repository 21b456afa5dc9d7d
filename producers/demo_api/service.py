"""The demo API without HTTP: requests in, response bodies and ApiActions out.

The aiohttp server (:mod:`.server`) parses HTTP into calls on :class:`DemoService` and
publishes the actions it returns; the load generator calls the same service in-process when
it publishes directly, so both produce the same actions for the same traffic.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from producers.actions import (
    CUSTOM_CODE_MIN,
    JSON_CONTENT_TYPE,
    Caller,
    change_action,
    custom_event_action,
    json_text,
)
from producers.demo_api.domain import RESOURCES, Change, Clock, Invalid, NotFound, TenantObjects

API_VERSION = "v1"
MAX_CODE = 2**31 - 1
_SUBJECT_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
_EVENT_FIELDS = frozenset(
    {"code", "criticality", "subject_type", "subject_id", "data", "content_type"}
)


@dataclass(frozen=True)
class ApiResult:
    """What a request returns: HTTP status and JSON body, and the actions to publish."""

    status: int
    body: dict[str, Any]
    actions: list[dict[str, Any]] = field(default_factory=list)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _random_event_id() -> str:
    return str(uuid.uuid4())


class DemoService:
    """Per-tenant objects and the operations of the demo API (``/v1``).

    ``clock`` stamps changes (``occurred_at``); ``new_event_id`` names actions. Both are
    injectable so the load generator can be deterministic.
    """

    def __init__(
        self,
        source: str,
        *,
        clock: Clock = _utc_now,
        new_event_id: Callable[[], str] = _random_event_id,
    ) -> None:
        self.source = source
        self._clock = clock
        self._new_event_id = new_event_id
        self._tenants: dict[str, TenantObjects] = {}

    def tenant(self, tenant_id: str) -> TenantObjects:
        objects = self._tenants.get(tenant_id)
        if objects is None:
            objects = self._tenants[tenant_id] = TenantObjects(clock=self._clock)
        return objects

    # -- resources --------------------------------------------------------------------------
    def create(self, caller: Caller, request_id: str, resource: str, body: Any) -> ApiResult:
        changes = self.tenant(caller.tenant_id).create(_subject_type(resource), body)
        return self._result(201, changes[0].payload or {}, changes, caller, request_id)

    def update(
        self, caller: Caller, request_id: str, resource: str, object_id: str, body: Any
    ) -> ApiResult:
        changes = self.tenant(caller.tenant_id).update(_subject_type(resource), object_id, body)
        return self._result(200, changes[0].payload or {}, changes, caller, request_id)

    def delete(self, caller: Caller, request_id: str, resource: str, object_id: str) -> ApiResult:
        changes = self.tenant(caller.tenant_id).delete(_subject_type(resource), object_id)
        body = {"id": object_id, "deleted": True, "events": len(changes)}
        return self._result(200, body, changes, caller, request_id)

    def get(self, caller: Caller, resource: str, object_id: str) -> ApiResult:
        stored = self.tenant(caller.tenant_id).get(_subject_type(resource), object_id)
        return ApiResult(200, {**stored.snapshot(), "version": stored.version})

    def approve_report(self, caller: Caller, request_id: str, report_id: str) -> ApiResult:
        """Approve a report: the report and every expense in it change in one request."""
        changes = self.tenant(caller.tenant_id).approve_report(report_id, caller.user_id)
        body = {**(changes[0].payload or {}), "expenses_approved": len(changes) - 1}
        return self._result(200, body, changes, caller, request_id)

    # -- generated events (seed 001) --------------------------------------------------------
    def generate_event(self, caller: Caller, request_id: str, body: Any) -> ApiResult:
        """A custom event: the caller picks code, criticality, subject and data; we set time."""
        event = _parse_custom_event(body)
        event_id = self._new_event_id()
        occurred_at = self._clock()
        action = custom_event_action(
            event_id=event_id,
            request_id=request_id,
            caller=caller,
            occurred_at=occurred_at,
            source=self.source,
            **event,
        )
        response = {
            "event_id": event_id,
            "request_id": request_id,
            "event_type": action["event_type"],
            "occurred_at": occurred_at.isoformat(),
        }
        return ApiResult(201, response, [action])

    # -- internals --------------------------------------------------------------------------
    def _result(
        self,
        status: int,
        body: dict[str, Any],
        changes: list[Change],
        caller: Caller,
        request_id: str,
    ) -> ApiResult:
        actions = [
            change_action(
                event_id=self._new_event_id(),
                request_id=request_id,
                caller=caller,
                kind=change.kind,
                subject_type=change.subject_type,
                subject_id=change.subject_id,
                version=change.version,
                occurred_at=change.occurred_at,
                payload=change.payload,
                parent=change.parent,
                source=self.source,
            )
            for change in changes
        ]
        return ApiResult(status, {**body, "version": changes[0].version}, actions)


def _subject_type(resource: str) -> str:
    subject_type = RESOURCES.get(resource)
    if subject_type is None:
        raise NotFound(f"unknown resource {resource!r}; known: {', '.join(RESOURCES)}")
    return subject_type


def _parse_custom_event(body: Any) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise Invalid("the body must be a JSON object")
    unknown = sorted(set(body) - _EVENT_FIELDS)
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(unknown)}")
    code = body.get("code")
    if (
        isinstance(code, bool)
        or not isinstance(code, int)
        or not CUSTOM_CODE_MIN <= code <= MAX_CODE
    ):
        raise Invalid(
            f"must be an integer >= {CUSTOM_CODE_MIN} (lower codes are the system's)",
            field_name="code",
        )
    criticality = body.get("criticality", 0)
    if (
        isinstance(criticality, bool)
        or not isinstance(criticality, int)
        or not 0 <= criticality <= 5
    ):
        raise Invalid(
            "must be an integer from 0 (not applicable) to 5 (trivial)", field_name="criticality"
        )
    subject_type = body.get("subject_type")
    if not isinstance(subject_type, str) or not _SUBJECT_TYPE.match(subject_type):
        raise Invalid(
            "must be a lower-case name like device or expense_report", field_name="subject_type"
        )
    subject_id = body.get("subject_id")
    if isinstance(subject_id, int) and not isinstance(subject_id, bool):
        subject_id = str(subject_id)
    if not isinstance(subject_id, str) or not subject_id.strip() or len(subject_id) > 200:
        raise Invalid("must be a non-empty id", field_name="subject_id")
    content_type = body.get("content_type", JSON_CONTENT_TYPE)
    if not isinstance(content_type, str) or "/" not in content_type or len(content_type) > 100:
        raise Invalid("must be a media type such as application/json", field_name="content_type")
    return {
        "code": code,
        "criticality": criticality,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "content_type": content_type,
        "payload": _event_payload(body.get("data", {}), content_type),
    }


def _event_payload(data: Any, content_type: str) -> str:
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == JSON_CONTENT_TYPE or media_type.endswith("+json"):
        return json_text(data)
    if not isinstance(data, str):
        raise Invalid(f"must be a string when content_type is {content_type}", field_name="data")
    return data
