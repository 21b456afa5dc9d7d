"""Liveness, readiness and counters of a worker, served by Faust's web server.

``GET /healthz`` answers 200 once the worker owns its partitions and has restored their
tables (it is processing), 503 before that, while a rebalance is under way, while the
broker does not answer (:class:`BrokerProbe`: a metadata request every
:data:`PROBE_INTERVAL_S`; unreachable once none succeeded for :data:`BROKER_DOWN_AFTER_S`),
and while a check that another part of the worker added (:func:`add_health_check`: the
events API adds its feed index, stuck or lagging) fails; the body says which, with
``reason``. Decisions are pure functions of the observed state (:func:`broker_health`).

``GET /metrics`` returns the counters of this worker process as JSON: actions
processed, changes emitted (``late`` ones counted apart as well), duplicates dropped, no-op
updates, dead letters, commits (each one transaction per partition) and the time spent
committing (processing goes on meanwhile, but for handing the outbox over). Counters start
at zero when the process starts; they count work done, including work a crash later rolled
back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient
from faust.web import Request, Response, View

from processors.exactly_once import exactly_once_state
from processors.pipeline import OutcomeKind


@dataclass
class ProcessingCounters:
    """What the agent did since the process started, by outcome."""

    processed: int = 0
    changed: int = 0
    late: int = 0
    duplicates: int = 0
    noop: int = 0
    dead_lettered: int = 0

    def count(self, kind: OutcomeKind) -> None:
        self.processed += 1
        if kind is OutcomeKind.CHANGED:
            self.changed += 1
        elif kind is OutcomeKind.LATE:
            self.changed += 1
            self.late += 1
        elif kind is OutcomeKind.DUPLICATE:
            self.duplicates += 1
        elif kind is OutcomeKind.NOOP:
            self.noop += 1
        else:
            self.dead_lettered += 1


_COUNTERS: weakref.WeakKeyDictionary[faust.App, ProcessingCounters] = weakref.WeakKeyDictionary()

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 3.0
BROKER_DOWN_AFTER_S = 6.0


@dataclass(frozen=True)
class HealthCheck:
    """One part's verdict: ``ok``, why not (``reason``), and figures worth showing."""

    ok: bool
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"ok": self.ok, **({"reason": self.reason} if self.reason else {}), **self.details}


HealthSource = Callable[[], HealthCheck]
MetricsSource = Callable[[], dict[str, Any]]


@dataclass
class _Extras:
    checks: dict[str, HealthSource] = field(default_factory=dict)
    metrics: list[MetricsSource] = field(default_factory=list)
    probe: BrokerProbe | None = None


_EXTRAS: weakref.WeakKeyDictionary[faust.App, _Extras] = weakref.WeakKeyDictionary()


def _extras(app: faust.App) -> _Extras:
    extras = _EXTRAS.get(app)
    if extras is None:
        extras = _EXTRAS[app] = _Extras()
    return extras


def add_health_check(app: faust.App, name: str, source: HealthSource) -> None:
    """Make ``/healthz`` answer 503 while ``source()`` says not ok (and show its details)."""
    _extras(app).checks[name] = source


def add_metrics(app: faust.App, source: MetricsSource) -> None:
    """Add the figures ``source()`` returns to ``/metrics``."""
    _extras(app).metrics.append(source)


def broker_health(
    now: float,
    *,
    last_ok: float | None,
    since: float | None,
    last_error: str,
    down_after_s: float,
) -> HealthCheck:
    """The broker's verdict: unreachable once no probe succeeded for ``down_after_s``
    (counted from ``since``, the first probe, until a first success; no verdict before)."""
    reference = last_ok if last_ok is not None else since
    if reference is None:
        return HealthCheck(True)
    silent_s = now - reference
    if silent_s < down_after_s:
        return HealthCheck(True)
    reason = f"the Kafka broker has not answered for {silent_s:.0f}s"
    if last_error:
        reason += f" ({last_error})"
    return HealthCheck(False, reason, {"unanswered_s": round(silent_s, 1)})


class BrokerProbe:
    """Asks the broker for its cluster metadata every :data:`PROBE_INTERVAL_S`."""

    def __init__(self, bootstrap: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.bootstrap = bootstrap
        self.clock = clock
        self.since: float | None = None
        self.last_ok: float | None = None
        self.last_error = ""
        self._admin: AIOKafkaAdminClient | None = None

    def health(self) -> HealthCheck:
        return broker_health(
            self.clock(),
            last_ok=self.last_ok,
            since=self.since,
            last_error=self.last_error,
            down_after_s=BROKER_DOWN_AFTER_S,
        )

    async def probe(self) -> None:
        if self.since is None:
            self.since = self.clock()
        try:
            await asyncio.wait_for(self._describe(), PROBE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure means: not answering
            self.last_error = f"{type(exc).__name__}: {exc}"[:200]
            await self.close()
        else:
            self.last_ok = self.clock()
            self.last_error = ""

    async def _describe(self) -> None:
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap, request_timeout_ms=int(PROBE_TIMEOUT_S * 1000)
            )
            await admin.start()
            self._admin = admin
        await self._admin.describe_cluster()

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()


def counters_of(app: faust.App) -> ProcessingCounters:
    """The app's counters, created on first use."""
    counters = _COUNTERS.get(app)
    if counters is None:
        counters = _COUNTERS[app] = ProcessingCounters()
    return counters


def readiness(app: faust.App) -> dict[str, Any]:
    """Why the worker is or is not ready; ``ready`` is the verdict."""
    assignment = app.consumer.assignment() if app.consumer is not None else set()
    tables_ready = bool(app.tables.actives_ready)
    rebalancing = bool(app.rebalancing)
    started = bool(app.agents) and all(agent.started for agent in app.agents.values())
    return {
        "ready": tables_ready and not rebalancing and started,
        "tables_restored": tables_ready,
        "rebalancing": rebalancing,
        "agents_started": started,
        "partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in assignment),
    }


def health_of(app: faust.App) -> tuple[bool, dict[str, Any]]:
    """The verdict of ``/healthz`` and its body: readiness, the broker, added checks."""
    state = readiness(app)
    extras = _extras(app)
    checks: dict[str, HealthCheck] = {}
    if extras.probe is not None:
        checks["broker"] = extras.probe.health()
    for name, source in extras.checks.items():
        try:
            checks[name] = source()
        except Exception as exc:  # noqa: BLE001 - a failing check is a failed check
            checks[name] = HealthCheck(False, f"the {name} check failed: {exc}")
    reasons = [f"{name}: {check.reason}" for name, check in checks.items() if not check.ok]
    if not state["ready"]:
        reasons.insert(0, "not processing yet (restoring tables or rebalancing)")
    ready = not reasons
    body = {**state, "ready": ready, "checks": {n: c.body() for n, c in checks.items()}}
    if reasons:
        body["reason"] = "; ".join(reasons)
    return ready, body


def register_views(app: faust.App, bootstrap: str | None = None) -> None:
    """Add ``/healthz`` and ``/metrics`` to the app's web server; with ``bootstrap``, probe
    the broker for ``/healthz``."""
    if bootstrap is not None:
        probe = _extras(app).probe = BrokerProbe(bootstrap)

        @app.timer(interval=PROBE_INTERVAL_S, on_leader=False)
        async def probe_broker() -> None:
            await probe.probe()

    @app.page("/healthz", name="healthz")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            ready, body = health_of(self.app)
            return self.json(body, status=200 if ready else 503)

    @app.page("/metrics", name="metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            body: dict[str, Any] = asdict(counters_of(self.app))
            exactly_once = exactly_once_state(self.app)
            body["transactions_committed"] = exactly_once.commits
            body["commit_seconds_total"] = round(exactly_once.commit_seconds, 3)
            for source in _extras(self.app).metrics:
                body.update(source())
            return self.json(body)
