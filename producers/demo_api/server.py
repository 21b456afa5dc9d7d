"""The demo business API over HTTP (aiohttp): every write publishes ApiActions.

Endpoints (JSON; API version ``v1`` is part of the path and recorded in each action)::

    GET    /healthz
    GET    /metrics                             Prometheus: the publisher's spool depth, ...
    POST   /v1/{resource}                       create      resource: projects,
    GET    /v1/{resource}/{id}                  read                  expense_reports,
    PATCH  /v1/{resource}/{id}                  update                expenses
    DELETE /v1/{resource}/{id}                  delete
    POST   /v1/expense_reports/{id}/approve     report + each of its expenses (one request)
    POST   /v1/events                           generate a custom event (seed 001)

Headers: ``X-Tenant-Id`` and ``X-Api-Key`` are required (401 without); the tenant id is a
name as :mod:`schemas.action_contract` defines it (400 otherwise); any non-empty key is
accepted and only its fingerprint is recorded. ``X-User-Id`` and ``X-Application-Id`` are
optional. ``X-Request-Id`` is taken if given, generated otherwise, and returned; every
action of the request carries it. The response lists the event ids in ``X-Event-Ids``.

Errors are JSON ``{"error": message}``: 400 malformed JSON or headers, 401 missing tenant or
key, 404 unknown resource/object/route, 409 a state conflict, 422 a field that does not
validate, 503 when the actions could not be published. Nothing returns a traceback.

Bodies are strict JSON (:func:`schemas.action_contract.loads_strict`: valid Unicode without
lone surrogates, finite numbers, nested at most 64 deep), checked before anything changes;
a body in a charset Python does not know is a 400. Every action of a request is checked
against the action contract before any is published, and one that breaks it answers 422
with the contract's reason: what this API answers 2xx for always becomes a change.

A write responds once its actions are delivered or durably spooled (the publisher's
contract). The call into the publisher happens on the event loop: it encodes and enqueues
(tens of microseconds), the wait for the outcome is awaited, not blocked on.

Connections: a request head must arrive within ``CHANGEFEED_HTTP_HEADER_TIMEOUT_S`` and at
most ``CHANGEFEED_HTTP_MAX_CONNECTIONS`` connections are open at once
(:mod:`changefeed.web_limits`).

Fault injection, for demonstrating what the processors absorb (seed 003: "events may
sometimes be duplicated", "not guaranteed to appear in the exact order"):
``X-Demo-Duplicate: true`` publishes every action of the request twice (same event id);
``X-Demo-Delay-Ms: N`` publishes them N ms later, after the response, so a quicker later
request on the same subject overtakes them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from changefeed.config import Settings
from producers.actions import Caller
from producers.delivery import DeliveryOutcome, DeliveryReport
from producers.demo_api.api_keys import (
    Fingerprint,
    fingerprinter,
    load_or_create_secret,
    secret_path,
)
from producers.demo_api.domain import DomainError, Invalid
from producers.demo_api.service import API_VERSION, ApiResult, DemoService
from producers.errors import PublishError
from schemas.action_contract import ContractViolation, check_action, check_name, loads_strict
from schemas.masking import Redactor

log = logging.getLogger(__name__)

MAX_DELAY_MS = 10_000
PUBLISH_TIMEOUT_S = 60.0
_HEADER_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ActionSink(Protocol):
    """What the API needs of a publisher (:class:`~producers.publisher.Publisher` is one)."""

    def publish_async(
        self,
        action: Mapping[str, Any],
        on_delivery: Callable[[DeliveryReport], None] | None = None,
    ) -> None: ...


class HeaderError(DomainError):
    status = 400


class Unauthorized(DomainError):
    status = 401


class PublishFailed(DomainError):
    status = 503


SERVICE: web.AppKey[DemoService] = web.AppKey("service")
SINK: web.AppKey[ActionSink] = web.AppKey("sink")
FINGERPRINT: web.AppKey[Fingerprint] = web.AppKey("fingerprint")
DEFERRED: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("deferred")
REDACTOR: web.AppKey[Redactor] = web.AppKey("redactor")
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry")


def create_demo_app(
    settings: Settings,
    publisher: ActionSink,
    *,
    fingerprint: Fingerprint | None = None,
    service: DemoService | None = None,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """The aiohttp application; ``publisher`` receives every action (a fake one in tests).
    With a ``registry``, ``GET /metrics`` serves it."""
    app = web.Application(middlewares=[_json_errors])
    app[SERVICE] = service or DemoService(settings.source)
    app[SINK] = publisher
    app[FINGERPRINT] = fingerprint or fingerprinter(load_or_create_secret(secret_path(settings)))
    app[DEFERRED] = set()
    app[REDACTOR] = settings.redactor()
    app.router.add_get("/healthz", _healthz)
    if registry is not None:
        app[REGISTRY] = registry
        app.router.add_get("/metrics", _metrics)
    app.router.add_post(f"/{API_VERSION}/events", _generate_event)
    app.router.add_post(f"/{API_VERSION}/expense_reports/{{id}}/approve", _approve_report)
    app.router.add_post(f"/{API_VERSION}/{{resource}}", _create)
    app.router.add_get(f"/{API_VERSION}/{{resource}}/{{id}}", _read)
    app.router.add_patch(f"/{API_VERSION}/{{resource}}/{{id}}", _update)
    app.router.add_delete(f"/{API_VERSION}/{{resource}}/{{id}}", _delete)
    app.on_shutdown.append(_finish_deferred)
    return app


def run_demo_api(settings: Settings) -> int:
    """Serve the demo API on ``settings.api_host:settings.demo_api_port`` until interrupted."""
    from changefeed.web_limits import serve_app
    from producers.publisher import Publisher, default_spool_dir
    from producers.publisher_metrics import PublisherCollector

    publisher = Publisher(settings, spool_dir=default_spool_dir(settings, "demo-api"))
    registry = CollectorRegistry()
    registry.register(PublisherCollector(publisher.stats))
    app = create_demo_app(settings, publisher, registry=registry)

    async def close_publisher(_: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, publisher.close)

    app.on_cleanup.append(close_publisher)
    print(f"demo API on http://{settings.api_host}:{settings.demo_api_port} -> {publisher.topic}")
    serve_app(app, settings.api_host, settings.demo_api_port, settings.web_limits)
    return 0


# -- handlers ---------------------------------------------------------------------------------
async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _metrics(request: web.Request) -> web.Response:
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(request.app[REGISTRY]), headers={"Content-Type": content_type})


async def _create(request: web.Request) -> web.Response:
    caller, request_id = _identify(request)
    body = await _json_body(request)
    service = request.app[SERVICE]
    return await _respond(
        request, request_id, service.create(caller, request_id, _resource(request), body)
    )


async def _read(request: web.Request) -> web.Response:
    caller, request_id = _identify(request)
    result = request.app[SERVICE].get(caller, _resource(request), request.match_info["id"])
    return _json(result.status, result.body, request_id)


async def _update(request: web.Request) -> web.Response:
    caller, request_id = _identify(request)
    body = await _json_body(request)
    result = request.app[SERVICE].update(
        caller, request_id, _resource(request), request.match_info["id"], body
    )
    return await _respond(request, request_id, result)


async def _delete(request: web.Request) -> web.Response:
    caller, request_id = _identify(request)
    result = request.app[SERVICE].delete(
        caller, request_id, _resource(request), request.match_info["id"]
    )
    return await _respond(request, request_id, result)


async def _approve_report(request: web.Request) -> web.Response:
    caller, request_id = _identify(request)
    result = request.app[SERVICE].approve_report(caller, request_id, request.match_info["id"])
    return await _respond(request, request_id, result)


async def _generate_event(request: web.Request) -> web.Response:
    caller, request_id = _identify(request)
    body = await _json_body(request)
    result = request.app[SERVICE].generate_event(caller, request_id, body)
    return await _respond(request, request_id, result)


# -- request parsing --------------------------------------------------------------------------
def _identify(request: web.Request) -> tuple[Caller, str]:
    """The caller (tenant, actor) and the request id, from the headers."""
    tenant_id = request.headers.get("X-Tenant-Id", "").strip()
    if not tenant_id:
        raise Unauthorized("the X-Tenant-Id header is required")
    api_key = request.headers.get("X-Api-Key", "").strip()
    if not api_key:
        raise Unauthorized("the X-Api-Key header is required")
    caller = Caller(
        tenant_id=_tenant_id(tenant_id),
        api_version=API_VERSION,
        user_id=_optional_header_id(request, "X-User-Id"),
        application_id=_optional_header_id(request, "X-Application-Id"),
        api_key_fingerprint=request.app[FINGERPRINT](api_key),
    )
    request_id = _optional_header_id(request, "X-Request-Id") or str(uuid.uuid4())
    return caller, request_id


def _optional_header_id(request: web.Request, name: str) -> str | None:
    value = request.headers.get(name, "").strip()
    return _header_id(value, name) if value else None


def _tenant_id(value: str) -> str:
    try:
        return check_name("X-Tenant-Id", value)
    except ContractViolation as exc:
        raise HeaderError(exc.reason) from None


def _header_id(value: str, name: str) -> str:
    if not _HEADER_ID.match(value):
        raise HeaderError(f"{name} must be 1-128 characters of letters, digits and ._:@/+=-")
    return value


def _resource(request: web.Request) -> str:
    return request.match_info["resource"]


async def _json_body(request: web.Request) -> Any:
    try:
        text = await request.text()
    except LookupError:
        raise HeaderError(f"the body's charset {request.charset!r} is not supported") from None
    except UnicodeDecodeError as exc:
        raise HeaderError(f"the body is not valid {request.charset or 'UTF-8'}: {exc}") from None
    if not text.strip():
        raise HeaderError("the body is not valid JSON: empty body")
    try:
        return loads_strict(text, "the body")
    except ContractViolation as exc:
        raise HeaderError(exc.reason) from None


# -- publishing and responses -------------------------------------------------------------------
async def _respond(request: web.Request, request_id: str, result: ApiResult) -> web.Response:
    actions = result.actions
    if request.headers.get("X-Demo-Duplicate", "").lower() in {"1", "true", "yes"}:
        actions = [a for action in actions for a in (action, action)]
    delay_ms = _delay_ms(request)
    _check_actions(request.app[REDACTOR], actions)
    headers = {"X-Event-Ids": ",".join(a["event_id"] for a in result.actions)}
    if delay_ms:
        _publish_later(request.app, actions, delay_ms / 1000)
        headers["X-Events-Deferred"] = str(len(actions))
    else:
        await _publish(request.app[SINK], actions)
    return _json(result.status, result.body, request_id, headers)


def _check_actions(redactor: Redactor, actions: list[dict[str, Any]]) -> None:
    """Refuse (422, the contract's reason) before publishing any action of the request."""
    for action in actions:
        try:
            check_action(action, redactor)
        except ContractViolation as exc:
            raise Invalid(exc.reason) from None


def _delay_ms(request: web.Request) -> int:
    raw = request.headers.get("X-Demo-Delay-Ms", "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > MAX_DELAY_MS:
        raise HeaderError(f"X-Demo-Delay-Ms must be an integer from 0 to {MAX_DELAY_MS}")
    return int(raw)


async def _publish(sink: ActionSink, actions: list[dict[str, Any]]) -> None:
    """Publish and wait (without blocking the loop) until each is delivered or spooled."""
    if not actions:
        return
    loop = asyncio.get_running_loop()
    outcomes: list[asyncio.Future[DeliveryReport]] = []
    for action in actions:
        outcome: asyncio.Future[DeliveryReport] = loop.create_future()
        outcomes.append(outcome)
        try:
            sink.publish_async(action, _resolver(loop, outcome))
        except PublishError as exc:
            raise PublishFailed(
                f"the change was made but its events were not published: {exc}"
            ) from exc
    try:
        reports = await asyncio.wait_for(asyncio.gather(*outcomes), PUBLISH_TIMEOUT_S)
    except TimeoutError as exc:
        raise PublishFailed("the change was made but publishing its events timed out") from exc
    failed = [r for r in reports if r.outcome is DeliveryOutcome.FAILED]
    if failed:
        raise PublishFailed(
            f"the change was made but {len(failed)} event(s) were not published: {failed[0].error}"
        )


def _resolver(
    loop: asyncio.AbstractEventLoop, outcome: asyncio.Future[DeliveryReport]
) -> Callable[[DeliveryReport], None]:
    """A delivery callback, called on a publisher thread, that resolves ``outcome`` safely."""

    def resolve(report: DeliveryReport) -> None:
        loop.call_soon_threadsafe(_set_if_pending, outcome, report)

    return resolve


def _set_if_pending(outcome: asyncio.Future[DeliveryReport], report: DeliveryReport) -> None:
    if not outcome.done():
        outcome.set_result(report)


def _publish_later(app: web.Application, actions: list[dict[str, Any]], delay_s: float) -> None:
    async def publish_after_delay() -> None:
        await asyncio.sleep(delay_s)  # the injected delay itself, not a wait for readiness
        try:
            await _publish(app[SINK], actions)
        except DomainError as exc:
            log.error("deferred events were not published: %s", exc)

    task = asyncio.get_running_loop().create_task(publish_after_delay())
    app[DEFERRED].add(task)
    task.add_done_callback(app[DEFERRED].discard)


async def _finish_deferred(app: web.Application) -> None:
    if app[DEFERRED]:
        await asyncio.gather(*app[DEFERRED], return_exceptions=True)


def _json(
    status: int, body: dict[str, Any], request_id: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        body, status=status, headers={"X-Request-Id": request_id, **(headers or {})}
    )


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON ``{"error": ...}``; unexpected ones as a bare 500, logged here."""
    try:
        return await handler(request)
    except DomainError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason}, status=exc.status)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return web.json_response({"error": "internal error"}, status=500)
