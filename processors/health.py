"""Liveness, readiness and counters of a worker, served by Faust's web server.

``GET /healthz`` answers 200 once the worker owns its partitions and has restored their
tables (it is processing), 503 before that and while a rebalance is under way; the body
says which. ``GET /metrics`` returns the counters of this worker process as JSON: actions
processed, changes emitted (``late`` ones counted apart as well), duplicates dropped, no-op
updates, dead letters, commits (each one transaction per partition) and the time spent
committing (processing goes on meanwhile, but for handing the outbox over). Counters start
at zero when the process starts; they count work done, including work a crash later rolled
back.
"""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass
from typing import Any

import faust
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


def register_views(app: faust.App) -> None:
    """Add ``/healthz`` and ``/metrics`` to the app's web server."""

    @app.page("/healthz", name="healthz")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            state = readiness(self.app)
            return self.json(state, status=200 if state["ready"] else 503)

    @app.page("/metrics", name="metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            body: dict[str, Any] = asdict(counters_of(self.app))
            exactly_once = exactly_once_state(self.app)
            body["transactions_committed"] = exactly_once.commits
            body["commit_seconds_total"] = round(exactly_once.commit_seconds, 3)
            return self.json(body)
