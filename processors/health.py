"""Liveness, readiness and counters of a worker, served by Faust's web server.

Readiness is a list of named checks (:func:`health_checks`, in one place), each passing or
failing with a short ``code`` (for probes and dashboards) and a ``reason`` (for people); the
worker is ready when all pass, and the first failing one is *the* reason:

* ``tables``: the tables of the assigned partitions are restored (``restoring``);
* ``assignment``: no rebalance is under way (``rebalancing``);
* ``agents``: the agents have started (``starting``);
* ``consuming``: since the latest assignment, every assigned source partition has either
  had records processed or been fetched and found to hold nothing more (``starting`` the
  first time, ``rebalancing`` after): 200 means records flow, not merely that partitions
  are assigned;
* ``broker``: the broker answers (:class:`BrokerProbe`: a metadata request every
  :data:`PROBE_INTERVAL_S`; ``broker_unreachable`` once none succeeded for
  :data:`BROKER_DOWN_AFTER_S`);
* and the checks other parts add (:func:`add_health_check`: the events API adds its feed
  index, stuck or lagging; the code is the check's name).

Decisions are pure functions of the observed state (:func:`broker_health`, the checks).
``GET /healthz`` (and ``GET /readyz``) answers 200 when ready, 503 otherwise, with
``{"ready", "reason", "reasons", "checks", ...}``. ``GET /livez`` answers 200 while the
process runs and has not crashed (503 after: restart it). Before Faust's web server runs
(imports, topics, the bulk restore) the same paths answer from
:mod:`processors.startup_server`, with ``starting`` / ``restoring`` and its progress.

``GET /metrics.json`` returns the counters of this worker process as JSON: actions
processed, changes emitted (``late`` ones counted apart as well), duplicates dropped, no-op
updates, dead letters, commits (each one transaction per partition), the time spent
committing, and what other parts add (:func:`add_metrics`). Counters start at zero when
the process starts; they count work done, including work a crash later rolled back.
``GET /metrics`` is the Prometheus view (:mod:`processors.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import faust
from aiokafka.admin import AIOKafkaAdminClient
from faust.web import Request, Response, View

from processors.exactly_once import exactly_once_state
from processors.faust_adapter import assigned_partitions, batched_topics, fetch_state
from processors.pipeline import OutcomeKind
from processors.scheduler import scheduler_of


@dataclass
class ProcessingCounters:
    """What the agent did since the process started, by outcome."""

    processed: int = 0
    changed: int = 0
    late: int = 0
    duplicates: int = 0
    noop: int = 0
    dead_lettered: int = 0
    schedule_commands: int = 0

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
        elif kind is OutcomeKind.SCHEDULED:
            self.schedule_commands += 1
        else:
            self.dead_lettered += 1


_COUNTERS: weakref.WeakKeyDictionary[faust.App, ProcessingCounters] = weakref.WeakKeyDictionary()

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 3.0
BROKER_DOWN_AFTER_S = 6.0


@dataclass(frozen=True)
class HealthCheck:
    """One part's verdict: ``ok``, why not (``reason``, for people; ``code``, short, for
    probes and dashboards: the check's name when not given), and figures worth showing."""

    ok: bool
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    code: str = ""

    def body(self) -> dict[str, Any]:
        return {"ok": self.ok, **({"reason": self.reason} if self.reason else {}), **self.details}


HealthSource = Callable[[], HealthCheck]
MetricsSource = Callable[[], dict[str, Any]]


@dataclass
class _Extras:
    checks: dict[str, HealthSource] = field(default_factory=dict)
    metrics: list[MetricsSource] = field(default_factory=list)
    probe: BrokerProbe | None = None
    consumed_once: bool = False


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
    return HealthCheck(
        False, reason, {"unanswered_s": round(silent_s, 1)}, code="broker_unreachable"
    )


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


def health_checks(app: faust.App) -> dict[str, HealthCheck]:
    """Every named check of the worker, in order; the first failing one is the reason.

    The processors' own (``tables``, ``assignment``, ``agents``, ``consuming``), then the
    broker probe (``broker``), then those other parts added (:func:`add_health_check`).
    """
    checks = {
        "tables": tables_check(app),
        "assignment": assignment_check(app),
        "agents": agents_check(app),
        "consuming": consuming_check(app),
    }
    extras = _extras(app)
    if extras.probe is not None:
        checks["broker"] = extras.probe.health()
    for name, source in extras.checks.items():
        try:
            checks[name] = source()
        except Exception as exc:  # noqa: BLE001 - a failing check is a failed check
            checks[name] = HealthCheck(False, f"the {name} check failed: {exc}")
    return checks


def tables_check(app: faust.App) -> HealthCheck:
    if app.tables.actives_ready:
        return HealthCheck(True)
    return HealthCheck(False, "the assigned partitions' tables are restoring", code="restoring")


def assignment_check(app: faust.App) -> HealthCheck:
    if not app.rebalancing:
        return HealthCheck(True)
    return HealthCheck(False, "the workers are rebalancing partitions", code="rebalancing")


def agents_check(app: faust.App) -> HealthCheck:
    if app.agents and all(agent.started for agent in app.agents.values()):
        return HealthCheck(True)
    return HealthCheck(False, "the agents have not started yet", code="starting")


def consuming_check(app: faust.App) -> HealthCheck:
    """Whether every assigned source partition has been consumed since its assignment."""
    extras = _extras(app)
    waiting = unconsumed_partitions(app)
    if not waiting:
        extras.consumed_once = True
        return HealthCheck(True)
    names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in waiting)
    return HealthCheck(
        False,
        f"not consumed since assigned: {names}",
        code="rebalancing" if extras.consumed_once else "starting",
    )


def unconsumed_partitions(app: faust.App) -> list[Any]:
    """Assigned source partitions with neither a processed record nor a fetch that found
    nothing more to read, since the latest assignment."""
    sources = batched_topics(app)
    processed = exactly_once_state(app).processed
    waiting = []
    for tp in sorted(assigned_partitions(app)):
        if tp.topic not in sources or tp in processed:
            continue
        fetched = fetch_state(app, tp)
        if (
            fetched is not None
            and fetched.end is not None
            and fetched.position is not None
            and fetched.position >= fetched.end
        ):
            continue  # fetched, and nothing to read
        waiting.append(tp)
    return waiting


def readiness(app: faust.App) -> dict[str, Any]:
    """The body of ``/healthz``: ``ready`` is the verdict, ``reason`` the first failing
    check's code, ``reasons`` every failing one's, ``checks`` each check's body."""
    checks = health_checks(app)
    failing = [(name, check) for name, check in checks.items() if not check.ok]
    codes = list(dict.fromkeys(check.code or name for name, check in failing))
    assignment = assigned_partitions(app)
    return {
        "ready": not failing,
        "reason": codes[0] if codes else None,
        "reasons": codes,
        "checks": {name: check.body() for name, check in checks.items()},
        "tables_restored": checks["tables"].ok,
        "rebalancing": not checks["assignment"].ok,
        "agents_started": checks["agents"].ok,
        "partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in assignment),
    }


def health_of(app: faust.App) -> tuple[bool, dict[str, Any]]:
    """The verdict of ``/healthz`` and its body (:func:`readiness`)."""
    body = readiness(app)
    return bool(body["ready"]), body


def liveness(app: faust.App) -> dict[str, Any]:
    """Alive unless the app crashed (a supervisor should then restart the process)."""
    crashed = app.crash_reason
    if crashed is None:
        return {"alive": True}
    return {"alive": False, "reason": f"crashed: {type(crashed).__name__}"}


def counters_json(app: faust.App) -> dict[str, Any]:
    """The body of ``/metrics.json``: the counters, and what other parts added."""
    body: dict[str, Any] = asdict(counters_of(app))
    exactly_once = exactly_once_state(app)
    body["transactions_committed"] = exactly_once.commits
    body["commit_seconds_total"] = round(exactly_once.commit_seconds, 3)
    for source in _extras(app).metrics:
        body.update(source())
    scheduler = scheduler_of(app)
    if scheduler is not None:
        body["schedules_waiting"] = scheduler.active
        body["schedule_occurrences_emitted"] = scheduler.fired
        body["schedule_occurrences_rejected"] = scheduler.failed
    return body


def register_views(app: faust.App, bootstrap: str | None = None) -> None:
    """Add ``/healthz``, ``/readyz``, ``/livez`` and ``/metrics.json`` to the app's web
    server; with ``bootstrap``, probe the broker for ``/healthz``."""
    if bootstrap is not None:
        probe = _extras(app).probe = BrokerProbe(bootstrap)

        @app.timer(interval=PROBE_INTERVAL_S, on_leader=False)
        async def probe_broker() -> None:
            await probe.probe()

    @app.page("/healthz", name="healthz")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            ready, body = health_of(cast(faust.App, self.app))
            return self.json(body, status=200 if ready else 503)

    @app.page("/readyz", name="readyz")
    class ReadyView(View):
        async def get(self, request: Request) -> Response:
            ready, body = health_of(cast(faust.App, self.app))
            return self.json(body, status=200 if ready else 503)

    @app.page("/livez", name="livez")
    class LiveView(View):
        async def get(self, request: Request) -> Response:
            state = liveness(cast(faust.App, self.app))
            return self.json(state, status=200 if state["alive"] else 503)

    @app.page("/metrics.json", name="metrics_json")
    class CountersView(View):
        async def get(self, request: Request) -> Response:
            return self.json(counters_json(cast(faust.App, self.app)))
