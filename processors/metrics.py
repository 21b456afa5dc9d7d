"""Prometheus metrics of a processors worker, in a registry of its own.

Every worker process (every app, so tests can build several) has one
:class:`prometheus_client.CollectorRegistry` (:func:`metrics_registry`); ``GET /metrics``
serves it in the Prometheus text format (:mod:`processors.health` mounts it) and the
events API, inside a worker, adds its own metrics to the same registry.

What the processors export (names and units follow the Prometheus conventions):

* ``changefeed_actions_total{outcome}``: actions processed, by outcome (``changed``,
  ``late``, ``duplicate``, ``noop``, ``dead_letter``; each action counts once);
* ``changefeed_transactions_total``: Kafka transactions committed (one per partition of
  each commit round); ``changefeed_commit_duration_seconds``: a histogram of commit rounds;
* ``changefeed_consumer_lag{partition}``: records of each assigned ``actions`` partition
  the worker has not processed yet (the consumer's last known end minus the processed
  position; absent until the partition has been fetched since it was assigned).

Counters are read from the worker's own bookkeeping when scraped (nothing is added to the
per-action path); they start at zero with the process and count work a crash later rolled
back too.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import faust
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from processors.exactly_once import exactly_once_state
from processors.faust_adapter import assigned_partitions, batched_topics, fetch_state
from processors.health import ProcessingCounters, counters_of

COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_REGISTRIES: weakref.WeakKeyDictionary[faust.App, CollectorRegistry] = weakref.WeakKeyDictionary()


def metrics_registry(app: faust.App) -> CollectorRegistry:
    """The app's registry, created (with the processors' metrics) on first use."""
    registry = _REGISTRIES.get(app)
    if registry is None:
        registry = _REGISTRIES[app] = CollectorRegistry()
        registry.register(ProcessingCollector(app))
        commit_seconds = Histogram(
            "changefeed_commit_duration_seconds",
            "Duration of commit rounds (one Kafka transaction per partition each)",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        exactly_once_state(app).after_commit.append(commit_seconds.observe)
    return registry


def outcome_counts(counters: ProcessingCounters) -> dict[str, int]:
    """Actions by outcome, each action once (the JSON counters count late ones twice)."""
    return {
        "changed": counters.changed - counters.late,
        "late": counters.late,
        "duplicate": counters.duplicates,
        "noop": counters.noop,
        "dead_letter": counters.dead_lettered,
    }


class ProcessingCollector(Collector):
    """Reads the agent's counters, the transactions and the lag when scraped."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        actions = CounterMetricFamily(
            "changefeed_actions", "Actions processed, by outcome", labels=["outcome"]
        )
        for outcome, count in outcome_counts(counters_of(self.app)).items():
            actions.add_metric([outcome], count)
        yield actions
        state = exactly_once_state(self.app)
        yield CounterMetricFamily(
            "changefeed_transactions",
            "Kafka transactions committed (one per partition of each commit round)",
            value=state.transactions,
        )
        lag = GaugeMetricFamily(
            "changefeed_consumer_lag",
            "Records of an assigned actions partition not processed yet",
            labels=["partition"],
        )
        for partition, records in sorted(consumer_lag(self.app).items()):
            lag.add_metric([str(partition)], records)
        yield lag


def consumer_lag(app: faust.App) -> dict[int, int]:
    """Unprocessed records per assigned partition of the processors' source topics, for
    the partitions whose end the consumer knows."""
    processed = exactly_once_state(app).processed
    sources = batched_topics(app)
    lag: dict[int, int] = {}
    for tp in assigned_partitions(app):
        if tp.topic not in sources:
            continue
        fetched = fetch_state(app, tp)
        if fetched is None or fetched.end is None:
            continue
        position = processed.get(tp, fetched.position)
        if position is None:
            continue
        lag[tp.partition] = max(0, fetched.end - position)
    return lag


def register_metrics_view(app: faust.App) -> None:
    """Serve the app's registry at ``GET /metrics`` in the Prometheus text format."""
    from faust.web import Request, Response, View
    from prometheus_client.exposition import choose_encoder

    registry = metrics_registry(app)

    @app.page("/metrics", name="metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            encode, content_type = choose_encoder(request.headers.get("Accept", ""))
            return self.bytes(encode(registry), headers={"Content-Type": content_type})
