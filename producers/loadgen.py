"""The load generator: realistic demo traffic, sent to the demo API or published directly.

Two targets (``run_loadgen``):

* ``target=None``: the generator plays the demo API in-process (same service, same
  actions) and publishes the ApiActions straight to Kafka with a :class:`Publisher`, at
  ``rate`` actions per second. :func:`generate_actions` is that stream on its own, for
  benchmarks and processors tests: deterministic for a given ``seed`` and ``start_at``, and
  it fills a :class:`LoadTally` with what to expect downstream (distinct event ids, the last
  version of every subject).
* ``target="http://host:port"``: requests to the demo API at ``rate`` requests per second
  for ``duration_s``, through aiohttp (:mod:`producers.loadgen_http`).

Faults, as seeds 002 and 003 describe them: ``duplicate_rate`` is the share of requests whose
actions are sent twice with the same event id (same key, so the same partition);
``out_of_order_rate`` the share of requests followed by a second update of the same subject
that is delivered first, so the older action arrives after the newer one.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from changefeed.config import Settings
from changefeed.errors import ConfigError
from producers.actions import Caller
from producers.delivery import DeliveryOutcome, DeliveryReport
from producers.demo_api.api_keys import fingerprinter
from producers.demo_api.domain import DomainError
from producers.demo_api.service import API_VERSION, ApiResult, DemoService
from producers.pacing import Pacer
from producers.traffic import PlannedRequest, TrafficPlanner

DEFAULT_SOURCE = "/changefeed/demo"
DUPLICATE_LAG_ACTIONS = (1, 20)  # a duplicate is re-sent this many actions after the original

SubjectKey = tuple[str, str, str]


@dataclass(frozen=True)
class LoadProfile:
    """How much traffic, of what shape; rates are shares in [0, 1]."""

    rate: float = 50.0
    duration_s: float = 30.0
    tenants: int = 3
    duplicate_rate: float = 0.05
    out_of_order_rate: float = 0.05
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ConfigError(f"rate must be positive, got {self.rate}")
        if self.duration_s < 0:
            raise ConfigError(f"duration must not be negative, got {self.duration_s}")
        if self.tenants < 1:
            raise ConfigError(f"tenants must be at least 1, got {self.tenants}")
        for name in ("duplicate_rate", "out_of_order_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, got {getattr(self, name)}")

    @property
    def total(self) -> int:
        """Items to send: actions when publishing directly, requests over HTTP."""
        return max(1, round(self.rate * self.duration_s))


@dataclass
class LoadTally:
    """What was generated; ``event_ids`` and ``last_versions`` say what to expect downstream."""

    requests: int = 0
    actions: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    errors: int = 0
    event_ids: set[str] = field(default_factory=set)
    last_versions: dict[SubjectKey, int] = field(default_factory=dict)

    def count(self, action: dict[str, Any]) -> None:
        self.actions += 1
        self.event_ids.add(action["event_id"])
        version = action["version"]
        if version is not None:
            key = (action["tenant_id"], action["subject_type"], action["subject_id"])
            if version > self.last_versions.get(key, 0):
                self.last_versions[key] = version


@dataclass(frozen=True)
class LoadSummary:
    """The one line the command prints."""

    requests: int
    sent: int
    duplicates: int
    out_of_order: int
    spooled: int
    errors: int
    elapsed_s: float
    error_samples: tuple[str, ...] = ()

    def line(self) -> str:
        rate = self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (
            f"loadgen: {self.requests} requests, {self.sent} actions sent "
            f"({self.duplicates} duplicates, {self.out_of_order} out of order), "
            f"{self.spooled} spooled, {self.errors} errors in {self.elapsed_s:.1f}s "
            f"({rate:.0f} actions/s)"
        )


def generate_actions(
    profile: LoadProfile,
    *,
    count: int | None = None,
    start_at: datetime | None = None,
    tally: LoadTally | None = None,
    source: str = DEFAULT_SOURCE,
) -> Iterator[dict[str, Any]]:
    """ApiActions as the demo API would publish them for ``profile``'s traffic.

    Yields ``count`` actions (default ``profile.total``), duplicates and late ones included,
    in delivery order. ``occurred_at`` starts at ``start_at`` (default now) and advances by
    ``1 / rate`` per request. With a ``seed`` and a ``start_at`` the stream is identical on
    every run.
    """
    tally = tally if tally is not None else LoadTally()
    limit = profile.total if count is None else count
    simulation = _Simulation(profile, start_at or datetime.now(UTC), source)
    duplicates: list[tuple[int, int, dict[str, Any]]] = []  # (due at action n, tie, action)
    tie = itertools.count()
    while tally.actions < limit:
        for action, duplicate in simulation.next_actions(tally):
            yield action
            tally.count(action)
            if duplicate:
                due = tally.actions + simulation.rng.randint(*DUPLICATE_LAG_ACTIONS)
                heapq.heappush(duplicates, (due, next(tie), action))
            while duplicates and duplicates[0][0] <= tally.actions and tally.actions < limit:
                again = heapq.heappop(duplicates)[2]
                yield again
                tally.count(again)
                tally.duplicates += 1
            if tally.actions >= limit:
                return


class _Simulation:
    """The planner driving an in-process :class:`DemoService` on a simulated clock."""

    def __init__(self, profile: LoadProfile, start_at: datetime, source: str) -> None:
        self.rng = random.Random(profile.seed)
        self._now = start_at
        self._step = timedelta(seconds=1 / profile.rate)
        self._planner = TrafficPlanner(
            self.rng,
            profile.tenants,
            duplicate_rate=profile.duplicate_rate,
            out_of_order_rate=profile.out_of_order_rate,
        )
        self._service = DemoService(source, clock=lambda: self._now, new_event_id=self._new_id)
        secret = hashlib.sha256(f"changefeed-loadgen:{profile.seed}".encode()).digest()
        self._fingerprint = fingerprinter(secret)

    def next_actions(self, tally: LoadTally) -> list[tuple[dict[str, Any], bool]]:
        """Actions of the next request(s) in delivery order, each with its duplicate flag."""
        planned = self._planner.next_requests()
        results = [(request, self._execute(request, tally)) for request in planned]
        late = [(r, res) for r, res in results if r.late]
        on_time = [(r, res) for r, res in results if not r.late]
        for _, result in late:
            tally.out_of_order += len(result.actions)
        return [
            (action, request.duplicate)
            for request, result in on_time + late
            for action in result.actions
        ]

    def _execute(self, request: PlannedRequest, tally: LoadTally) -> ApiResult:
        self._now += self._step
        tally.requests += 1
        try:
            result = execute_in_process(
                self._service, request, self._new_id(), self._fingerprint(request.api_key)
            )
        except DomainError:
            tally.errors += 1
            return ApiResult(status=400, body={})
        if request.operation == "create":
            self._planner.created(request, str(result.body["id"]))
        return result

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))


def execute_in_process(
    service: DemoService, request: PlannedRequest, request_id: str, fingerprint: str
) -> ApiResult:
    """Run ``request`` against ``service`` as the HTTP layer would."""
    caller = Caller(
        tenant_id=request.tenant.tenant_id,
        api_version=API_VERSION,
        user_id=request.user_id,
        application_id=request.application_id,
        api_key_fingerprint=fingerprint,
    )
    resource, object_id, body = request.resource or "", request.object_id or "", request.body
    if request.operation == "create":
        return service.create(caller, request_id, resource, body)
    if request.operation == "update":
        return service.update(caller, request_id, resource, object_id, body)
    if request.operation == "delete":
        return service.delete(caller, request_id, resource, object_id)
    if request.operation == "approve":
        return service.approve_report(caller, request_id, object_id)
    return service.generate_event(caller, request_id, body)


class DirectSink(Protocol):
    """What direct publishing needs (:class:`~producers.publisher.Publisher` is one)."""

    def publish_async(
        self, action: dict[str, Any], on_delivery: Callable[[DeliveryReport], None] | None = None
    ) -> None: ...

    def flush(self, timeout_s: float | None = None) -> bool: ...


class _Outcomes:
    """Thread-safe counts of delivery reports (they arrive on publisher threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(DeliveryOutcome, 0)

    def record(self, report: DeliveryReport) -> None:
        with self._lock:
            self.counts[report.outcome] += 1


def publish_direct(profile: LoadProfile, publisher: DirectSink, *, source: str) -> LoadSummary:
    """Publish ``profile``'s actions with ``publisher`` at ``profile.rate`` actions/s."""
    tally = LoadTally()
    outcomes = _Outcomes()
    pacer = Pacer(profile.rate)
    began = time.monotonic()
    for action in generate_actions(profile, tally=tally, source=source):
        pacer.wait()
        publisher.publish_async(action, outcomes.record)
    publisher.flush()
    return LoadSummary(
        requests=tally.requests,
        sent=tally.actions,
        duplicates=tally.duplicates,
        out_of_order=tally.out_of_order,
        spooled=outcomes.counts[DeliveryOutcome.SPOOLED],
        errors=tally.errors + outcomes.counts[DeliveryOutcome.FAILED],
        elapsed_s=time.monotonic() - began,
    )


def run_loadgen(settings: Settings, profile: LoadProfile, target: str | None) -> int:
    """Send ``profile``'s traffic; print the summary line; 0 when nothing failed."""
    if target:
        from producers.loadgen_http import drive_demo_api

        summary = drive_demo_api(target, profile)
    else:
        from producers.publisher import Publisher, default_spool_dir

        with Publisher(settings, spool_dir=default_spool_dir(settings, "loadgen")) as publisher:
            summary = publish_direct(profile, publisher, source=settings.source)
    print(summary.line())
    return 0 if summary.errors == 0 else 1
