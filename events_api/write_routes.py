"""HTTP routes of the write side: generated events, schedules and failed jobs.

Every route here needs a key with the ``write`` scope to change something and ``read`` to
look; schedules and failed jobs are the tenant's, so they take an ``admin`` key (a user
key may generate events, which then carry its user as actor).

* ``POST /v1/events`` -> 202 ``{event_id, change_id, request_id, href}`` (see
  :mod:`events_api.writes`); an ``Idempotency-Key`` header (or ``idempotency_key`` field)
  makes retries safe.
* ``POST /v1/schedules`` -> 202 with the schedule as it will be stored; ``GET
  /v1/schedules/{id}``; ``POST /v1/schedules/{id}/pause`` and ``/resume``; ``DELETE
  /v1/schedules/{id}`` (202: the command is applied by the worker owning the subject, in
  order with the subject's other actions); ``GET /v1/subjects/{type}/{id}/schedules``.
* ``GET /v1/failed-jobs`` (``kind``: ``schedule``/``webhook``: webhook delivery jobs come
  from the webhooks extension through :func:`add_failed_job_source`; ``state``:
  ``queued``/``quit``, ``offset``, ``count``), ``POST /v1/failed-jobs/resume`` and ``DELETE
  /v1/failed-jobs`` with ``{"job_id"}``: one failed-jobs model
  (:class:`schemas.failed_jobs.FailedJob`) for every kind; job ids start with their kind
  (``schedule:...``).

Schedules are read from the ``schedules`` table of the worker serving the request
(:class:`ScheduleTable`); a subject's schedules are forwarded to the worker owning its
partition like its state is.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from aiohttp import web

from events_api.access.keys import ApiKeyRecord, KeyScope
from events_api.errors import BadRequest, Forbidden, NotFound
from events_api.filters import Params, check_text
from events_api.http import FEED, key_record_of
from events_api.relay import SERVED_BY
from events_api.service import subject_key
from events_api.writes import (
    ActionSink,
    accepted_event,
    generated_event,
    request_idempotency_key,
    schedule_command,
)
from schemas.failed_jobs import KINDS as FAILED_JOB_KINDS
from schemas.failed_jobs import FailedJobState, kind_of
from schemas.schedules import (
    Command,
    RequestFieldError,
    Schedule,
    TriggerState,
    idempotent_id,
    parse_schedule_request,
)

MAX_BODY_BYTES = 256 * 1024
_NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class PeerAnswer:
    """Another worker's answer to a request forwarded to it."""

    worker: str
    status: int
    body: bytes
    content_type: str


class ScheduleTable(Protocol):
    """Read access to the schedules this worker holds, and the other workers' answers."""

    async def schedule(self, schedule_id: str) -> Schedule | None: ...

    async def subject_schedules(self, subject: str) -> list[Schedule]: ...

    async def failed(self, tenant_id: str) -> list[Schedule]: ...

    async def subject_deleted(self, subject: str) -> bool: ...

    async def ask_peers(
        self, request: web.Request, body: bytes | None, query: Mapping[str, str] | None = None
    ) -> list[PeerAnswer]: ...

    async def close(self) -> None: ...


class FailedJobSource(Protocol):
    """Failed jobs of another kind (webhook deliveries), served by ``/v1/failed-jobs`` too.

    ``jobs`` answers the tenant's jobs in the shared shape of
    :meth:`schemas.failed_jobs.FailedJob.public` (``job_id`` prefixed with ``kind``);
    ``resume``/``delete`` take such a job id and answer False when the tenant has none.
    """

    kind: str

    async def jobs(self, tenant_id: str) -> list[dict[str, Any]]: ...

    async def resume(self, tenant_id: str, job_id: str) -> bool: ...

    async def delete(self, tenant_id: str, job_id: str) -> bool: ...


FAILED_JOB_SOURCES = web.AppKey("failed_job_sources", list)


def add_failed_job_source(app: web.Application, source: FailedJobSource) -> None:
    """Serve ``source``'s jobs from ``/v1/failed-jobs`` (call before the app starts)."""
    app[FAILED_JOB_SOURCES].append(source)


class NoScheduleTable:
    """A standalone events API (no worker) holds no partition of the ``schedules`` table: it
    knows no schedule, as a worker knows none of the partitions it does not hold. It still
    publishes schedule commands, which the workers apply."""

    async def schedule(self, schedule_id: str) -> Schedule | None:
        return None

    async def subject_schedules(self, subject: str) -> list[Schedule]:
        return []

    async def failed(self, tenant_id: str) -> list[Schedule]:
        return []

    async def subject_deleted(self, subject: str) -> bool:
        return False

    async def ask_peers(
        self, request: web.Request, body: bytes | None, query: Mapping[str, str] | None = None
    ) -> list[PeerAnswer]:
        return []

    async def close(self) -> None:
        pass


SINK = web.AppKey("sink", ActionSink)
SCHEDULES = web.AppKey("schedules", ScheduleTable)
SOURCE = web.AppKey("source", str)


def add_write_routes(
    app: web.Application, sink: ActionSink, schedules: ScheduleTable, source: str
) -> None:
    app[SINK] = sink
    app[SCHEDULES] = schedules
    app[SOURCE] = source
    app[FAILED_JOB_SOURCES] = []
    app.middlewares.append(answered_elsewhere)
    app.router.add_post("/events", generate_event)
    app.router.add_post("/schedules", create_schedule)
    app.router.add_get("/schedules/{schedule_id}", get_schedule)
    app.router.add_delete("/schedules/{schedule_id}", delete_schedule)
    app.router.add_post("/schedules/{schedule_id}/pause", pause_schedule)
    app.router.add_post("/schedules/{schedule_id}/resume", resume_schedule)
    app.router.add_get("/subjects/{subject_type}/{subject_id}/schedules", subject_schedules)
    app.router.add_get("/failed-jobs", list_failed_jobs)
    app.router.add_post("/failed-jobs/resume", resume_failed_job)
    app.router.add_delete("/failed-jobs", delete_failed_job)

    async def close_sink(_: web.Application) -> None:
        await sink.close()
        await schedules.close()

    app.on_cleanup.append(close_sink)


# -- helpers --------------------------------------------------------------------------------


@web.middleware
async def answered_elsewhere(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except AnsweredElsewhere as exc:
        return exc.response()


def _require(request: web.Request, scope: KeyScope, *, admin: bool = False) -> ApiKeyRecord:
    record = key_record_of(request)
    if not record.allows(scope):
        raise Forbidden(f"this key lacks the {scope.value} scope (keys create --scope read,write)")
    if admin and not record.scope.is_admin:
        raise Forbidden("schedules and failed jobs need an admin key")
    return record


def _actor(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "user_id": record.user_id,
        "application_id": f"key:{record.key_id}",
        "api_version": "v1",
        "api_key_fingerprint": None,
    }


async def _body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadRequest(f"the body must be at most {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"the body must be at most {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("the body must be a JSON object (UTF-8)") from None


def _field_error(exc: RequestFieldError) -> BadRequest:
    return BadRequest(f"{exc.field}: {exc.message}")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, ensure_ascii=False),
        status=status,
        content_type="application/json",
        headers=_NO_STORE,
    )


class AnsweredElsewhere(Exception):
    """The worker holding the schedule answered; its answer is the response."""

    def __init__(self, answer: PeerAnswer) -> None:
        super().__init__(answer.worker)
        self.answer = answer

    def response(self) -> web.Response:
        return web.Response(
            body=self.answer.body,
            status=self.answer.status,
            content_type=self.answer.content_type,
            headers={**_NO_STORE, SERVED_BY: self.answer.worker},
        )


async def _held_elsewhere(request: web.Request, body: bytes | None, what: str) -> NotFound:
    """Raise the answer of the worker that holds it; the 404 to raise when none does."""
    for answer in await request.app[SCHEDULES].ask_peers(request, body):
        if answer.status != 404:
            raise AnsweredElsewhere(answer)
    return NotFound(f"no {what}")


async def _own_schedule(request: web.Request, record: ApiKeyRecord) -> Schedule:
    schedule_id = check_text("schedule_id", request.match_info["schedule_id"])
    schedule = await request.app[SCHEDULES].schedule(schedule_id)
    if schedule is None:
        raise await _held_elsewhere(request, None, f"schedule {schedule_id!r}")
    if schedule.tenant_id != record.tenant_id:
        raise NotFound(f"no schedule {schedule_id!r}")
    return schedule


async def _publish_command(
    request: web.Request, record: ApiKeyRecord, command: Command, schedule: Schedule
) -> web.Response:
    action = schedule_command(
        command,
        schedule,
        actor=_actor(record),
        body={"schedule_id": schedule.schedule_id},
        source=request.app[SOURCE],
    )
    await request.app[SINK].publish(action)
    return _json(
        {
            "status": "accepted",
            "schedule_id": schedule.schedule_id,
            "command": command.value,
            "href": f"/v1/schedules/{schedule.schedule_id}",
        },
        202,
    )


# -- generated events -----------------------------------------------------------------------


async def generate_event(request: web.Request) -> web.Response:
    record = _require(request, KeyScope.WRITE)
    body = await _body(request)
    try:
        key = request_idempotency_key(
            body if isinstance(body, dict) else {}, request.headers.get("Idempotency-Key")
        )
        action = generated_event(
            body,
            tenant_id=record.tenant_id,
            actor=_actor(record),
            idempotency_key=key,
            source=request.app[SOURCE],
        )
    except RequestFieldError as exc:
        raise _field_error(exc) from None
    await request.app[SINK].publish(action)
    return _json(accepted_event(action), 202)


# -- schedules ------------------------------------------------------------------------------


async def create_schedule(request: web.Request) -> web.Response:
    record = _require(request, KeyScope.WRITE, admin=True)
    body = await _body(request)
    try:
        key = request_idempotency_key(
            body if isinstance(body, dict) else {}, request.headers.get("Idempotency-Key")
        )
        schedule_id = (
            idempotent_id("schedule", record.tenant_id, key)
            if key is not None
            else str(uuid.uuid4())
        )
        schedule = parse_schedule_request(
            {k: v for k, v in body.items() if k != "idempotency_key"}
            if isinstance(body, dict)
            else body,
            tenant_id=record.tenant_id,
            schedule_id=schedule_id,
            now_us=_now_us(),
        )
    except RequestFieldError as exc:
        raise _field_error(exc) from None
    schedule = replace(schedule, actor=_actor(record))
    action = schedule_command(
        Command.CREATE,
        schedule,
        actor=_actor(record),
        body={"schedule": json.loads(schedule.encode())},
        event_id=idempotent_id("schedule-create", record.tenant_id, schedule_id),
        source=request.app[SOURCE],
    )
    await request.app[SINK].publish(action)
    answer = schedule.public()
    answer["href"] = f"/v1/schedules/{schedule_id}"
    return _json(answer, 202)


async def get_schedule(request: web.Request) -> web.Response:
    record = _require(request, KeyScope.READ, admin=True)
    Params(request.query, ())
    schedule = await _own_schedule(request, record)
    deleted = await request.app[SCHEDULES].subject_deleted(schedule.subject_key)
    return _json(schedule.public(subject_deleted=deleted))


async def pause_schedule(request: web.Request) -> web.Response:
    record = _require(request, KeyScope.WRITE, admin=True)
    schedule = await _own_schedule(request, record)
    return await _publish_command(request, record, Command.PAUSE, schedule)


async def resume_schedule(request: web.Request) -> web.Response:
    record = _require(request, KeyScope.WRITE, admin=True)
    schedule = await _own_schedule(request, record)
    return await _publish_command(request, record, Command.RESUME, schedule)


async def delete_schedule(request: web.Request) -> web.Response:
    record = _require(request, KeyScope.WRITE, admin=True)
    schedule = await _own_schedule(request, record)
    if schedule.trigger_state == TriggerState.NONE:
        raise NotFound(f"schedule {schedule.schedule_id!r} is already deleted")
    return await _publish_command(request, record, Command.DELETE, schedule)


async def subject_schedules(request: web.Request) -> web.StreamResponse:
    record = _require(request, KeyScope.READ, admin=True)
    Params(request.query, ())
    subject_type = check_text("subject_type", request.match_info["subject_type"])
    subject_id = check_text("subject_id", request.match_info["subject_id"])
    key = subject_key(record.scope, subject_type, subject_id)
    feed = request.app[FEED]
    if feed.subjects is not None:
        forwarded = await feed.subjects.forward(request, key)
        if forwarded is not None:
            return forwarded
    table = request.app[SCHEDULES]
    deleted = await table.subject_deleted(key)
    schedules = await table.subject_schedules(key)
    return _json(
        {
            "subject_type": subject_type,
            "subject_id": subject_id,
            "schedules": [s.public(subject_deleted=deleted) for s in schedules],
        }
    )


# -- failed jobs ----------------------------------------------------------------------------


async def list_failed_jobs(request: web.Request) -> web.Response:
    record = _require(request, KeyScope.READ, admin=True)
    params = Params(request.query, ("kind", "state", "offset", "count"))
    kind = params.text("kind")
    if kind is not None and kind not in FAILED_JOB_KINDS:
        raise BadRequest(f"kind must be one of {', '.join(FAILED_JOB_KINDS)}")
    state = params.text("state")
    if state is not None and state not in {s.value for s in FailedJobState}:
        raise BadRequest("state must be queued or quit")
    offset = params.integer("offset", 0, 0, 1_000_000)
    count = params.integer("count", 100, 1, 1000)
    jobs: list[dict[str, Any]] = []
    if kind in (None, "schedule"):
        for schedule in await request.app[SCHEDULES].failed(record.tenant_id):
            job = schedule.failed
            if job is None or (state is not None and job.state != state):
                continue
            jobs.append(
                {
                    **job.public(),
                    "subject_type": schedule.subject_type,
                    "subject_id": schedule.subject_id,
                }
            )
    for other in request.app[FAILED_JOB_SOURCES]:
        if kind in (None, other.kind):
            jobs.extend(
                j
                for j in await other.jobs(record.tenant_id)
                if state is None or j["failed_job_state"] == state
            )
    everything = {**request.query, "offset": "0", "count": "1000", "kind": "schedule"}
    peers = []
    if kind in (None, "schedule"):
        peers = await request.app[SCHEDULES].ask_peers(request, None, everything)
    for answer in peers:
        if answer.status != 200:
            raise AnsweredElsewhere(answer)
        jobs.extend(json.loads(answer.body)["failed_jobs"])
    jobs.sort(key=lambda j: (j["created_at"], j["job_id"]))
    page = jobs[offset : offset + count]
    return _json({"failed_jobs": page, "total": len(jobs), "offset": offset, "count": len(page)})


_JOB_ID = web.RequestKey("failed_job_id", str)


async def _failed_schedule(request: web.Request, record: ApiKeyRecord) -> Schedule | None:
    """The schedule whose failed job the body names; None for a job of another kind."""
    body = await _body(request)
    job_id = body.get("job_id") if isinstance(body, dict) else None
    if not isinstance(job_id, str) or not job_id:
        raise BadRequest('job_id: is required, e.g. {"job_id": "schedule:...@..."}')
    check_text("job_id", job_id)
    kind = kind_of(job_id)
    rest = job_id.partition(":")[2]
    if kind is None:
        raise BadRequest(f"job_id: must start with a kind ({', '.join(FAILED_JOB_KINDS)})")
    request[_JOB_ID] = job_id
    if kind != "schedule":
        return None
    schedule_id = rest.partition("@")[0]
    schedule = await request.app[SCHEDULES].schedule(schedule_id) if schedule_id else None
    if schedule is None and schedule_id:
        forwarded = json.dumps({"job_id": job_id}).encode()
        raise await _held_elsewhere(request, forwarded, f"failed job {job_id!r}")
    if (
        schedule is None
        or schedule.tenant_id != record.tenant_id
        or schedule.failed is None
        or schedule.failed.job_id != job_id
    ):
        raise NotFound(f"no failed job {job_id!r}")
    return schedule


async def _other_kind(request: web.Request, record: ApiKeyRecord, resume: bool) -> web.Response:
    job_id = request[_JOB_ID]
    kind = kind_of(job_id)
    for other in request.app[FAILED_JOB_SOURCES]:
        if other.kind == kind:
            act = other.resume if resume else other.delete
            if await act(record.tenant_id, job_id):
                return _json({"status": "accepted", "job_id": job_id}, 202)
    raise NotFound(f"no failed job {job_id!r}")


async def resume_failed_job(request: web.Request) -> web.Response:
    record = _require(request, KeyScope.WRITE, admin=True)
    schedule = await _failed_schedule(request, record)
    if schedule is None:
        return await _other_kind(request, record, resume=True)
    return await _publish_command(request, record, Command.RESUME_FAILED, schedule)


async def delete_failed_job(request: web.Request) -> web.Response:
    record = _require(request, KeyScope.WRITE, admin=True)
    schedule = await _failed_schedule(request, record)
    if schedule is None:
        return await _other_kind(request, record, resume=False)
    return await _publish_command(request, record, Command.DELETE_FAILED, schedule)


def _now_us() -> int:
    return time.time_ns() // 1000
