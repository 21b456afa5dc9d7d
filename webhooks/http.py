"""The ``/v1/webhooks`` endpoints, served by the events API (same keys, same error shape).

Every endpoint needs an **admin** key (a user key gets 403), and the ones that change
something (create, update, delete, resume or delete a failed job) a key with the ``write``
scope too (``changefeed keys create --scope read,write``; a read-only key gets 403). Each
sees its tenant only: another tenant's subscription or job answers 404, as one that does
not exist.

* ``POST /v1/webhooks``: create (``url``, ``event_types``, optional ``subject_type`` and
  ``description``); answers 201 with the subscription and its ``secret``, shown this once.
* ``GET /v1/webhooks``, ``GET /v1/webhooks/{id}``: the tenant's subscriptions, one of them.
* ``PATCH /v1/webhooks/{id}``: change ``url``, ``event_types``, ``subject_type``,
  ``description``; ``paused: true/false``; ``rotate_secret: true`` (``secret_overlap_s``,
  default a day, keeps the old secret signing too) answers the new ``secret`` once.
* ``DELETE /v1/webhooks/{id}``: the subscription and its failed jobs (204).
* ``GET /v1/webhooks/failed``: failed jobs, by ``state`` (``queued``/``quit``) and
  ``subscription_id``, paged by ``offset``/``count`` (at most 1000), with ``total`` and
  ``counts`` per state.
* ``POST /v1/webhooks/failed/resume``: ``{"job_id"}`` re-delivers one job now,
  ``{"subscription_id"}`` every quit job of the subscription.
* ``DELETE /v1/webhooks/failed``: ``{"job_id"}``, or ``{"subscription_id"}`` with an
  optional ``state``, drops jobs.

Request bodies are JSON objects of at most 64 KiB (413 beyond, never truncated); unknown
fields are refused, so a misspelt field never goes unnoticed. A write returns once it is
on the topic and this worker has read it back, so the next request sees it.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from events_api.access.keys import KeyScope
from events_api.errors import ApiError, BadRequest, Forbidden, NotFound, Unavailable
from events_api.filters import MAX_LIMIT, Params, check_text
from events_api.http import key_record_of, scope_of
from events_api.scope import Scope
from webhooks.errors import InvalidSubscription
from webhooks.jobs import FailedJob, JobState, resumed_job
from webhooks.subscriptions import (
    MAX_BODY_BYTES,
    Subscription,
    is_subscription_id,
    new_subscription,
    patch_subscription,
)

if TYPE_CHECKING:
    from webhooks.runtime import Webhooks

WEBHOOKS = web.AppKey("webhooks", object)
READ_BACK_TIMEOUT_S = 10.0
_NO_STORE = {"Cache-Control": "no-store"}


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


def add_routes(app: web.Application, webhooks: Webhooks) -> None:
    app[WEBHOOKS] = webhooks
    app.router.add_post("/webhooks", create)
    app.router.add_get("/webhooks", list_subscriptions)
    app.router.add_get("/webhooks/failed", list_failed)
    app.router.add_post("/webhooks/failed/resume", resume_failed)
    app.router.add_delete("/webhooks/failed", delete_failed)
    app.router.add_get("/webhooks/{subscription_id:wh_[^/]*}", get_subscription)
    app.router.add_patch("/webhooks/{subscription_id:wh_[^/]*}", update_subscription)
    app.router.add_delete("/webhooks/{subscription_id:wh_[^/]*}", delete_subscription)


def _webhooks(request: web.Request) -> Webhooks:
    found: Webhooks = request.app[WEBHOOKS]  # type: ignore[assignment]
    return found


def _admin(request: web.Request, *, write: bool = False) -> Scope:
    scope = scope_of(request)
    if not scope.is_admin:
        raise Forbidden("webhooks are managed with an admin key; this is a user key")
    if write and not key_record_of(request).allows(KeyScope.WRITE):
        raise Forbidden(
            "changing webhooks needs a key with the write scope (keys create --scope read,write)"
        )
    return scope


def _answer(document: Any, status: int = 200) -> web.Response:
    return web.json_response(document, status=status, headers=_NO_STORE)


def _now_us() -> int:
    return time.time_ns() // 1000


async def _body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body must be at most {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body must be at most {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        raise BadRequest("a JSON object is required as the request body")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("the request body must be a JSON object (UTF-8)") from None


async def _read_back(webhooks: Webhooks, *, jobs: bool = False) -> None:
    follower = webhooks.job_follower if jobs else webhooks.subscription_follower
    if not await follower.catch_up(READ_BACK_TIMEOUT_S):
        raise Unavailable("webhook state is still loading; retry shortly")


def _subscription(request: web.Request, scope: Scope) -> Subscription:
    sub_id = check_text("subscription id", request.match_info["subscription_id"])
    sub = _webhooks(request).book.by_id.get(sub_id) if is_subscription_id(sub_id) else None
    if sub is None or sub.tenant_id != scope.tenant_id:
        raise NotFound(f"no webhook subscription {sub_id!r}")
    return sub


# -- subscriptions ------------------------------------------------------------------------


async def create(request: web.Request) -> web.Response:
    scope = _admin(request, write=True)
    Params(request.query, ())
    body = await _body(request)
    webhooks = _webhooks(request)
    try:
        sub, secret = new_subscription(body, scope.tenant_id, webhooks.guard, _now_us())
    except InvalidSubscription as exc:
        raise BadRequest(str(exc)) from None
    await webhooks.writer.put_subscription(sub)
    await _read_back(webhooks)
    return _answer({**sub.public(), "secret": secret}, status=201)


async def list_subscriptions(request: web.Request) -> web.Response:
    scope = _admin(request)
    Params(request.query, ())
    subs = _webhooks(request).book.of_tenant(scope.tenant_id)
    return _answer({"webhooks": [s.public() for s in subs], "count": len(subs)})


async def get_subscription(request: web.Request) -> web.Response:
    scope = _admin(request)
    Params(request.query, ())
    return _answer(_subscription(request, scope).public())


async def update_subscription(request: web.Request) -> web.Response:
    scope = _admin(request, write=True)
    Params(request.query, ())
    sub = _subscription(request, scope)
    body = await _body(request)
    webhooks = _webhooks(request)
    try:
        changed, secret = patch_subscription(sub, body, webhooks.guard, _now_us())
    except InvalidSubscription as exc:
        raise BadRequest(str(exc)) from None
    await webhooks.writer.put_subscription(changed)
    await _read_back(webhooks)
    document = changed.public()
    if secret is not None:
        document["secret"] = secret
    return _answer(document)


async def delete_subscription(request: web.Request) -> web.Response:
    scope = _admin(request, write=True)
    Params(request.query, ())
    sub = _subscription(request, scope)
    webhooks = _webhooks(request)
    await webhooks.writer.delete_subscription(sub.subscription_id)
    await webhooks.writer.delete_jobs(webhooks.jobs.select(scope.tenant_id, sub.subscription_id))
    await _read_back(webhooks)
    await _read_back(webhooks, jobs=True)
    return web.Response(status=204, headers=_NO_STORE)


# -- failed jobs --------------------------------------------------------------------------


def _state(value: Any) -> JobState | None:
    if value is None:
        return None
    try:
        return JobState(value)
    except ValueError:
        raise BadRequest("state must be queued or quit") from None


async def list_failed(request: web.Request) -> web.Response:
    scope = _admin(request)
    params = Params(request.query, ("state", "subscription_id", "offset", "count"))
    state = _state(params.text("state"))
    sub_id = params.text("subscription_id")
    offset = params.integer("offset", 0, 0, 10**9)
    count = params.integer("count", 100, 1, MAX_LIMIT)
    webhooks = _webhooks(request)
    await _read_back(webhooks, jobs=True)
    jobs = webhooks.jobs.select(scope.tenant_id, sub_id)
    counts = {s.value: sum(1 for j in jobs if j.state is s) for s in JobState}
    selected = [j for j in jobs if state is None or j.state is state]
    page = selected[offset : offset + count]
    return _answer(
        {
            "jobs": [j.public() for j in page],
            "count": len(page),
            "total": len(selected),
            "offset": offset,
            "has_more": offset + len(page) < len(selected),
            "counts": counts,
        }
    )


def _targets(request: web.Request, scope: Scope, body: Any, *, resume: bool) -> list[FailedJob]:
    allowed = ("job_id",) if resume else ("job_id", "state")
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    fields = {k for k in body if k not in ("subscription_id", *allowed)}
    if fields:
        raise BadRequest(
            f"unknown field {sorted(fields)[0]!r}; accepted: subscription_id, {', '.join(allowed)}"
        )
    job_id, sub_id = body.get("job_id"), body.get("subscription_id")
    if (job_id is None) == (sub_id is None):
        raise BadRequest("give either job_id (one job) or subscription_id (its jobs)")
    webhooks = _webhooks(request)
    if job_id is not None:
        if not isinstance(job_id, str):
            raise BadRequest("job_id must be a string")
        job = webhooks.jobs.by_id.get(check_text("job_id", job_id))
        if job is None or job.tenant_id != scope.tenant_id:
            raise NotFound(f"no failed job {job_id!r}")
        return [job]
    if not isinstance(sub_id, str):
        raise BadRequest("subscription_id must be a string")
    sub = webhooks.book.by_id.get(check_text("subscription_id", sub_id))
    if sub is None or sub.tenant_id != scope.tenant_id:
        raise NotFound(f"no webhook subscription {sub_id!r}")
    state = JobState.QUIT if resume else _state(body.get("state"))
    return [
        j
        for j in webhooks.jobs.select(scope.tenant_id, sub_id)
        if state is None or j.state is state
    ]


async def resume_failed(request: web.Request) -> web.Response:
    scope = _admin(request, write=True)
    Params(request.query, ())
    webhooks = _webhooks(request)
    await _read_back(webhooks, jobs=True)
    jobs = _targets(request, scope, await _body(request), resume=True)
    now_us = _now_us()
    await webhooks.writer.put_jobs(resumed_job(j, now_us) for j in jobs)
    await _read_back(webhooks, jobs=True)
    return _answer({"resumed": len(jobs)})


async def delete_failed(request: web.Request) -> web.Response:
    scope = _admin(request, write=True)
    Params(request.query, ())
    webhooks = _webhooks(request)
    await _read_back(webhooks, jobs=True)
    jobs = _targets(request, scope, await _body(request), resume=False)
    await webhooks.writer.delete_jobs(jobs)
    await _read_back(webhooks, jobs=True)
    return _answer({"deleted": len(jobs)})
