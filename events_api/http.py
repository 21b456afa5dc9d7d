"""The events API over HTTP (aiohttp): routes, authentication and error answers.

Routes live in a sub-application mounted at ``/v1`` (inside a worker, on Faust's own web
server), so its middlewares apply to the events API only:

* ``errors`` turns every failure into ``{"error": {"code", "message"}}``: an
  :class:`~events_api.errors.ApiError` with its status, aiohttp's own 404/405 as they
  are, anything else as a 500 that says nothing of the exception (it is logged).
* ``timing`` (when given) records each request's duration by route and status
  (:mod:`events_api.metrics`).
* ``authenticate`` requires ``Authorization: Bearer <key>`` (or ``X-Api-Key: <key>``) and
  puts the key's :class:`~events_api.scope.Scope` on the request. Nothing else a
  request carries can change the scope.

``GET /openapi.json`` (:data:`events_api.openapi.OPENAPI`) needs no key, nor does the
explorer page (:mod:`events_api.explorer`, ``GET /explorer``), which asks for one.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from events_api.access.keyring import KeyRing
from events_api.access.keys import ApiKeyRecord, KeyScope
from events_api.errors import ApiError, BadRequest, FeedIndexError, Forbidden, Unauthorized
from events_api.explorer import mount_explorer
from events_api.filters import MAX_LIMIT, Params, check_text, parse_list_params
from events_api.openapi import OPENAPI
from events_api.scope import Scope
from events_api.service import FeedService, subject_key
from schemas.action_contract import is_name

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FEED = web.AppKey("feed", FeedService)
KEYS = web.AppKey("keys", KeyRing)
OPENAPI_DOCUMENT = web.AppKey("openapi", dict)
"""The sub-application's OpenAPI document: :data:`~events_api.openapi.OPENAPI`, plus what
extensions of the ``/v1`` app (``extend_api``) add to it before it is mounted."""
_KEY_RECORD = web.RequestKey("api_key", ApiKeyRecord)
_NO_STORE = {"Cache-Control": "no-store"}


def error_response(
    status: int, code: str, message: str, details: dict[str, str] | None = None
) -> web.Response:
    headers = dict(_NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="changefeed"'
    body = json.dumps({"error": {"code": code, "message": message, **(details or {})}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    except FeedIndexError:
        log.exception("the feed index failed on %s %s", request.method, request.path)
        return error_response(503, "unavailable", "the feed index is unavailable; retry later")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "bad_request")
        message = exc.reason if exc.status != 404 else f"no such endpoint: {request.path}"
        response = error_response(exc.status, code, message)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:  # noqa: BLE001 - no stack trace ever reaches a client
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; it has been logged")


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = _presented_key(request)
    if key is None:
        raise Unauthorized("an API key is required: send Authorization: Bearer <key>")
    record = await request.app[KEYS].authenticate(key)
    if request.method in ("GET", "HEAD") and not record.allows(KeyScope.READ):
        raise Forbidden("this key lacks the read scope (keys create --scope read,write)")
    request[_KEY_RECORD] = record
    return await handler(request)


def _presented_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("the Authorization header must be: Bearer <key>")
        return value.strip()
    key = request.headers.get("X-Api-Key")
    return key.strip() if key else None


def key_record_of(request: web.Request) -> ApiKeyRecord:
    """The authenticated key's record (scopes, role, tenant)."""
    record: ApiKeyRecord = request[_KEY_RECORD]
    return record


def scope_of(request: web.Request) -> Scope:
    record: ApiKeyRecord = request[_KEY_RECORD]
    return record.scope


def _json(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/json", headers=_NO_STORE)


def _path(request: web.Request, name: str) -> str:
    return check_text(name, request.match_info[name])


def _subject_path(request: web.Request) -> tuple[str, str]:
    """``(subject_type, subject_id)`` of a subject route.

    A subject type is a name (:data:`schemas.action_contract.NAME_PATTERN`): one that
    decodes to anything else (``%2F``, ``%00``) names no subject and is refused. A subject
    id is any text: ``%2F`` in it is a ``/`` of the id, which the escaped subject key keeps
    apart from every other (tenant, type, id), so it maps to exactly one subject.
    """
    subject_type = _path(request, "subject_type")
    if not is_name(subject_type):
        raise BadRequest(
            "subject_type must be 1-128 characters of letters, digits and . _ : - (an encoded"
            f" slash or other character names no subject type), got {subject_type!r}"
        )
    return subject_type, _path(request, "subject_id")


# -- handlers -----------------------------------------------------------------------------


async def list_events(request: web.Request) -> web.Response:
    params = parse_list_params(request.query)
    return _json(await request.app[FEED].list_events(scope_of(request), params))


async def poll_events(request: web.Request) -> web.Response:
    params = parse_list_params(request.query, poll=True)
    return _json(await request.app[FEED].poll(scope_of(request), params))


async def get_event(request: web.Request) -> web.Response:
    Params(request.query, ())
    change_id = _path(request, "change_id")
    return _json(await request.app[FEED].get_event(scope_of(request), change_id))


async def request_events(request: web.Request) -> web.Response:
    Params(request.query, ())
    request_id = _path(request, "request_id")
    return _json(await request.app[FEED].request_events(scope_of(request), request_id))


async def subject(request: web.Request) -> web.StreamResponse:
    Params(request.query, ())
    subject_type, subject_id = _subject_path(request)
    scope = scope_of(request)
    feed = request.app[FEED]
    if scope.is_admin and feed.subjects is not None:
        key = subject_key(scope, subject_type, subject_id)
        forwarded = await feed.subjects.forward(request, key)
        if forwarded is not None:
            return forwarded
    return _json(await feed.subject(scope, subject_type, subject_id))


async def subject_history(request: web.Request) -> web.Response:
    params = Params(request.query, ("limit", "after_sequence"))
    subject_type, subject_id = _subject_path(request)
    limit = params.integer("limit", 100, 1, MAX_LIMIT)
    after = params.integer("after_sequence", -1, 0, 2**62)
    feed = request.app[FEED]
    return _json(
        await feed.subject_history(scope_of(request), subject_type, subject_id, after, limit)
    )


async def latest_per_subject(request: web.Request) -> web.Response:
    params = Params(request.query, ("subject_type", "page", "limit"))
    subject_type = params.text("subject_type")
    page = params.integer("page", 1, 1, 1_000_000)
    limit = params.integer("limit", 100, 1, MAX_LIMIT)
    feed = request.app[FEED]
    return _json(await feed.latest_per_subject(scope_of(request), subject_type, page, limit))


async def whoami(request: web.Request) -> web.Response:
    """``GET /v1/me``: who the presented key is (what the explorer shows after sign-in)."""
    Params(request.query, ())
    record: ApiKeyRecord = request[_KEY_RECORD]
    body = {
        "key_id": record.key_id,
        "key_name": record.name,
        "tenant_id": record.tenant_id,
        "role": record.role.value,
        "user_id": record.scope.user_id,
        "retention_ms": request.app[FEED].retention_ms,
    }
    return _json(json.dumps(body, ensure_ascii=False))


def build_events_app(
    feed: FeedService, keys: KeyRing, *, timing: Middleware | None = None
) -> web.Application:
    """The ``/v1`` sub-application; mount it with ``root.add_subapp("/v1", app)``.

    ``timing`` (:meth:`events_api.metrics.EventsApiMetrics.middleware`) runs outermost, so
    it sees the status of every answer, errors included."""
    middlewares: list[Middleware] = [errors, authenticate]
    if timing is not None:
        middlewares.insert(0, timing)
    app = web.Application(middlewares=middlewares)
    app[FEED] = feed
    app[KEYS] = keys
    app[OPENAPI_DOCUMENT] = copy.deepcopy(OPENAPI)
    app.router.add_get("/events", list_events)
    app.router.add_get("/events/poll", poll_events)
    app.router.add_get("/events/{change_id}", get_event)
    app.router.add_get("/requests/{request_id}/events", request_events)
    app.router.add_get("/subjects/latest", latest_per_subject)
    app.router.add_get("/subjects/{subject_type}/{subject_id}", subject)
    app.router.add_get("/subjects/{subject_type}/{subject_id}/history", subject_history)
    app.router.add_get("/me", whoami)
    return app


def mount(
    root: web.Application, events_app: web.Application, *, redirect_root: bool = False
) -> None:
    """Serve the events API under ``/v1``, its OpenAPI document and the explorer page on
    ``root`` (with ``redirect_root``, ``GET /`` leads to the page)."""
    root.add_subapp("/v1", events_app)
    text = json.dumps(events_app[OPENAPI_DOCUMENT], separators=(",", ":"))

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="application/json")

    root.router.add_get("/openapi.json", openapi)
    mount_explorer(root, redirect_root=redirect_root)
