"""The load generator's HTTP target: requests to the demo API at a steady rate.

Requests are started at their slots (:class:`~producers.pacing.Pacer`) and run concurrently,
at most ``concurrency`` at a time, but one at a time per tenant, in the order they were
planned: the planner draws each request from what earlier ones left (an expense is created
in a report before the report is approved, not after), which concurrent requests of one
tenant could overtake. An out-of-order pair is sent in sequence: the first with
``X-Demo-Delay-Ms`` (its events are published late) and, once it answered, the second,
whose events therefore reach Kafka first. A duplicate request carries ``X-Demo-Duplicate``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass, field

import aiohttp

from producers.loadgen import LoadProfile, LoadSummary
from producers.pacing import Pacer
from producers.traffic import PlannedRequest, TrafficPlanner

log = logging.getLogger(__name__)

LATE_DELAY_MS = 300
REQUEST_TIMEOUT_S = 30.0


@dataclass
class _Counts:
    requests: int = 0
    events: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 3:
            self.error_samples.append(message)


def drive_demo_api(base_url: str, profile: LoadProfile, *, concurrency: int = 32) -> LoadSummary:
    """Send ``profile.total`` requests to the demo API at ``base_url``; blocking."""
    return asyncio.run(drive_demo_api_async(base_url, profile, concurrency=concurrency))


async def drive_demo_api_async(
    base_url: str, profile: LoadProfile, *, concurrency: int = 32
) -> LoadSummary:
    rng = random.Random(profile.seed)
    planner = TrafficPlanner(
        rng,
        profile.tenants,
        duplicate_rate=profile.duplicate_rate,
        out_of_order_rate=profile.out_of_order_rate,
    )
    counts = _Counts()
    slots = asyncio.Semaphore(concurrency)
    pacer = Pacer(profile.rate)
    began = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(base_url.rstrip("/"), timeout=timeout) as session:
        tasks: set[asyncio.Task[None]] = set()
        tenant_turns = {view.profile.tenant_id: asyncio.Lock() for view in planner.views}
        planned = 0
        while planned < profile.total:
            group = planner.next_requests()
            await pacer.wait_async(len(group))
            await slots.acquire()
            turn = tenant_turns[group[0].tenant.tenant_id]
            task = asyncio.create_task(_send_group(session, planner, group, counts, turn))
            task.add_done_callback(lambda _: slots.release())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            planned += len(group)
        await asyncio.gather(*tasks)
    for sample in counts.error_samples:
        log.warning("loadgen request failed: %s", sample)
    return LoadSummary(
        requests=counts.requests,
        sent=counts.events,
        duplicates=counts.duplicates,
        out_of_order=counts.out_of_order,
        spooled=0,
        errors=counts.errors,
        elapsed_s=time.monotonic() - began,
        error_samples=tuple(counts.error_samples),
    )


async def _send_group(
    session: aiohttp.ClientSession,
    planner: TrafficPlanner,
    group: list[PlannedRequest],
    counts: _Counts,
    turn: asyncio.Lock,
) -> None:
    async with turn:  # asyncio.Lock is FIFO: the tenant's requests run in planned order
        for request in group:
            await _send(session, planner, request, counts)


async def _send(
    session: aiohttp.ClientSession,
    planner: TrafficPlanner,
    request: PlannedRequest,
    counts: _Counts,
) -> None:
    method, path = _route(request)
    counts.requests += 1
    try:
        async with session.request(
            method, path, json=request.body, headers=_headers(request)
        ) as response:
            body = await response.json(content_type=None)
            if response.status >= 300:
                counts.error(f"{method} {path} -> {response.status} {body}")
                return
            events = [e for e in response.headers.get("X-Event-Ids", "").split(",") if e]
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        counts.error(f"{method} {path} -> {exc!r}")
        return
    copies = 2 if request.duplicate else 1
    counts.events += len(events) * copies
    counts.duplicates += len(events) * (copies - 1)
    if request.late:
        counts.out_of_order += len(events)
    if request.operation == "create":
        planner.created(request, str(body["id"]))


def _route(request: PlannedRequest) -> tuple[str, str]:
    if request.operation == "create":
        return "POST", f"/v1/{request.resource}"
    if request.operation == "update":
        return "PATCH", f"/v1/{request.resource}/{request.object_id}"
    if request.operation == "delete":
        return "DELETE", f"/v1/{request.resource}/{request.object_id}"
    if request.operation == "approve":
        return "POST", f"/v1/expense_reports/{request.object_id}/approve"
    return "POST", "/v1/events"


def _headers(request: PlannedRequest) -> dict[str, str]:
    headers = {
        "X-Tenant-Id": request.tenant.tenant_id,
        "X-Api-Key": request.api_key,
        "X-User-Id": request.user_id,
        "X-Application-Id": request.application_id,
        "X-Request-Id": str(uuid.uuid4()),
    }
    if request.duplicate:
        headers["X-Demo-Duplicate"] = "true"
    if request.late:
        headers["X-Demo-Delay-Ms"] = str(LATE_DELAY_MS)
    return headers
