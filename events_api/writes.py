"""The events API's write side: generated events and schedule commands, as ApiActions.

Everything a client writes through the events API becomes an action on ``actions``, keyed
by its subject, published through the project's publisher (:class:`ActionSink`): the
processors then apply it exactly once, on the partition that owns the subject. Nothing here
writes a table or ``changes`` directly.

* **Generate an event** (seed 001, :func:`generated_event`): a custom action (``internal``
  false, code >= 10000, criticality 0-5, payload with its content type); the server sets
  ``occurred_at``. The event id is a UUIDv5 of the tenant and the idempotency key when one
  is given (random otherwise), and the change id follows from it
  (:func:`schemas.identity.change_id`): a retry with the same key within retention gets the
  same ids, and the processors' dedupe keeps one change. The first request's body wins.
* **Schedule commands** (:func:`schedule_command`): a custom action marked ``internal``
  whose event type is ``changefeed.schedule:<command>`` (see :mod:`schemas.schedules`).
  Clients cannot send one: generated events are never internal, and their event types may
  not start with ``changefeed.``.

:class:`ActionSink` creates its :class:`~producers.publisher.Publisher` on the first write
(a read-only deployment never opens a producer) and closes it when the web app stops.
``publish`` returns once the action is delivered **or durably spooled**: 202 means it will
happen, even if the broker is down at that moment.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from changefeed.config import Settings
from events_api.errors import BadRequest, Unavailable
from producers.errors import InvalidActionError, PublishError
from producers.publisher import Publisher, default_spool_dir
from schemas.identity import change_id
from schemas.schedules import (
    COMMAND_PREFIX,
    CUSTOM_CODE_MIN,
    Command,
    RequestFieldError,
    Schedule,
    check_code,
    check_criticality,
    check_id,
    check_name,
    idempotent_id,
    payload_text,
)

_EVENT_FIELDS = {
    "event_type",
    "subject_type",
    "subject_id",
    "code",
    "criticality",
    "payload",
    "content_type",
    "idempotency_key",
}
MAX_IDEMPOTENCY_KEY = 200


class ActionSink:
    """Publishes actions for the events API; one publisher per process, made on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._publisher: Publisher | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _get(self) -> Publisher:
        with self._lock:
            if self._closed:
                raise Unavailable("the events API is shutting down; retry")
            if self._publisher is None:
                owner = f"events_api-{self.settings.worker_web_port}"
                self._publisher = Publisher(
                    self.settings, spool_dir=default_spool_dir(self.settings, owner)
                )
            return self._publisher

    async def publish(self, action: dict[str, Any]) -> None:
        """Delivered or durably spooled, or :class:`Unavailable`/:class:`BadRequest`."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, lambda: self._get().publish(action))
        except InvalidActionError as exc:
            raise BadRequest(f"the event cannot be encoded: {exc}") from exc
        except PublishError as exc:
            raise Unavailable(f"the event could not be stored; retry: {exc}") from exc

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await asyncio.get_running_loop().run_in_executor(None, publisher.close)


def _now_us() -> int:
    return time.time_ns() // 1000


def request_idempotency_key(body: Mapping[str, Any], header: str | None) -> str | None:
    """The idempotency key of a request: the ``Idempotency-Key`` header or the body field."""
    key = header if header is not None else body.get("idempotency_key")
    if key is None:
        return None
    if (
        not isinstance(key, str)
        or not key.strip()
        or len(key) > MAX_IDEMPOTENCY_KEY
        or any(ord(ch) < 32 for ch in key)
    ):
        raise RequestFieldError(
            "idempotency_key", f"must be printable text of 1-{MAX_IDEMPOTENCY_KEY} characters"
        )
    try:
        key.encode()
    except UnicodeEncodeError:
        raise RequestFieldError("idempotency_key", "must be valid Unicode") from None
    if body.get("idempotency_key") not in (None, key):
        raise RequestFieldError("idempotency_key", "differs from the Idempotency-Key header")
    return key


def generated_event(
    body: Any,
    *,
    tenant_id: str,
    actor: dict[str, Any],
    idempotency_key: str | None,
    source: str,
    now_us: int | None = None,
) -> dict[str, Any]:
    """The custom ApiAction of a ``POST /v1/events`` body, or :class:`RequestFieldError`."""
    if not isinstance(body, Mapping):
        raise RequestFieldError("body", "must be a JSON object")
    unknown = sorted(set(body) - _EVENT_FIELDS)
    if unknown:
        raise RequestFieldError(
            unknown[0], f"unknown field; known: {', '.join(sorted(_EVENT_FIELDS))}"
        )
    subject_type = check_name("subject_type", body.get("subject_type"))
    subject_id = check_id("subject_id", body.get("subject_id"))
    if "code" not in body:
        raise RequestFieldError("code", f"is required: an integer >= {CUSTOM_CODE_MIN}")
    code = check_code(body.get("code"))
    event_type = check_id("event_type", body.get("event_type", f"custom:{code}"))
    if event_type.startswith("changefeed."):
        raise RequestFieldError("event_type", "names starting with changefeed. are reserved")
    criticality = check_criticality(body.get("criticality", 0))
    payload, content_type = payload_text(body.get("payload"), body.get("content_type"))
    event_id = (
        idempotent_id("event", tenant_id, idempotency_key)
        if idempotency_key is not None
        else str(uuid.uuid4())
    )
    return {
        "event_id": event_id,
        "request_id": f"req_{uuid.uuid4().hex}",
        "tenant_id": tenant_id,
        "action": "custom",
        "event_type": event_type,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "subject_ref": None,
        "version": None,
        "occurred_at": _now_us() if now_us is None else now_us,
        "actor": actor,
        "criticality": criticality,
        "code": code,
        "internal": False,
        "payload_content_type": content_type,
        "payload": payload,
        "source": source,
    }


def accepted_event(action: dict[str, Any]) -> dict[str, Any]:
    """The 202 answer to a generated event: the ids a client fetches it by."""
    cid = change_id(action["event_id"])
    return {
        "status": "accepted",
        "event_id": action["event_id"],
        "change_id": cid,
        "request_id": action["request_id"],
        "href": f"/v1/events/{cid}",
    }


def schedule_command(
    command: Command,
    schedule: Schedule,
    *,
    actor: dict[str, Any],
    body: dict[str, Any],
    event_id: str | None = None,
    source: str,
    now_us: int | None = None,
) -> dict[str, Any]:
    """The internal custom ApiAction carrying a schedule command for ``schedule``."""
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "request_id": f"req_{uuid.uuid4().hex}",
        "tenant_id": schedule.tenant_id,
        "action": "custom",
        "event_type": f"{COMMAND_PREFIX}{command.value}",
        "subject_type": schedule.subject_type,
        "subject_id": schedule.subject_id,
        "subject_ref": None,
        "version": None,
        "occurred_at": _now_us() if now_us is None else now_us,
        "actor": actor,
        "criticality": 0,
        "code": 0,
        "internal": True,
        "payload_content_type": "application/json",
        "payload": json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        "source": source,
    }
