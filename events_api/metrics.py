"""Prometheus metrics of the events API, in the registry of the process serving it.

* ``changefeed_events_api_request_duration_seconds{route,status}``: a histogram of request
  durations, by route template (``/v1/events/{change_id}``, never the raw path, so ids do
  not multiply series; ``unmatched`` for paths that match no route) and HTTP status;
* ``changefeed_long_poll_waiters``: long polls waiting for events right now;
* ``changefeed_feed_index_lag{partition}``: committed records of ``changes`` not indexed yet
  (the indexer's last known stable offset minus its indexed position);
* ``changefeed_feed_index_lag_seconds``: how long the index has lacked a record the broker
  reported committed (0 when caught up; what its health check's "lagging" looks at);
* ``changefeed_feed_indexed_total`` and ``changefeed_feed_index_skipped_total``: records
  indexed, and records skipped because they did not decode (each is logged).

Inside a worker the registry is the processors' (:func:`processors.metrics.metrics_registry`)
and ``/metrics`` shows both; a standalone API server (``changefeed api``) has its own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from events_api.indexer import FeedIndexer
from events_api.signals import TenantSignals

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
UNMATCHED = "unmatched"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class EventsApiMetrics:
    """The events API's metrics, registered on ``registry``."""

    def __init__(
        self, registry: CollectorRegistry, indexer: FeedIndexer, signals: TenantSignals
    ) -> None:
        self.registry = registry
        self.request_seconds = Histogram(
            "changefeed_events_api_request_duration_seconds",
            "Events API request durations, by route template and HTTP status",
            ["route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        registry.register(FeedCollector(indexer, signals))

    def middleware(self) -> Middleware:
        """An aiohttp middleware timing every request; put it first, so it sees the status
        the client gets."""
        histogram = self.request_seconds

        @web.middleware
        async def time_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
            began = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                histogram.labels(route_of(request), str(status)).observe(
                    time.perf_counter() - began
                )

        return time_requests


def route_of(request: web.Request) -> str:
    """The route template a request matched (bounded: never an id from the path)."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    if resource is None or request.match_info.http_exception is not None:
        return UNMATCHED
    return resource.canonical


class FeedCollector(Collector):
    """Index lag, indexed and skipped records, and waiting long polls, read when scraped."""

    def __init__(self, indexer: FeedIndexer, signals: TenantSignals) -> None:
        self.indexer = indexer
        self.signals = signals

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "changefeed_feed_index_lag",
            "Committed records of changes not indexed yet, by partition",
            labels=["partition"],
        )
        for partition, records in sorted(self.indexer.records_behind().items()):
            lag.add_metric([str(partition)], records)
        yield lag
        _, _, details = self.indexer.health()
        yield GaugeMetricFamily(
            "changefeed_feed_index_lag_seconds",
            "Seconds the feed index has lacked a record reported committed (0: caught up)",
            value=float(details["lag_s"]),
        )
        yield CounterMetricFamily(
            "changefeed_feed_indexed", "Change events indexed", value=self.indexer.indexed
        )
        yield CounterMetricFamily(
            "changefeed_feed_index_skipped",
            "Records of changes skipped by the index because they did not decode",
            value=self.indexer.skipped,
        )
        yield GaugeMetricFamily(
            "changefeed_long_poll_waiters",
            "Long polls waiting for events",
            value=self.signals.waiting,
        )


async def metrics_view(request: web.Request, registry: CollectorRegistry) -> web.Response:
    """``registry`` in the exposition format the scraper asks for (``Accept``)."""
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(registry), headers={"Content-Type": content_type})
