"""Prometheus metrics of a :class:`~producers.publisher.Publisher`, read when scraped.

* ``changefeed_publisher_spool_depth``: actions waiting in the durable spool (they reach
  Kafka once the broker answers again); ``changefeed_publisher_spooling``: 1 while the
  publisher sends through the spool rather than directly;
* ``changefeed_publisher_actions_total{result}``: actions since the process started, by
  result: ``published`` (accepted), ``delivered`` (acknowledged by Kafka directly),
  ``spooled``, ``drained`` (sent from the spool and acknowledged), ``failed``.

A process that runs a publisher (the demo API) registers :class:`PublisherCollector` in its
registry and serves it at ``GET /metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from producers.publisher import PublisherStats

RESULTS = ("published", "delivered", "spooled", "drained", "failed")


class PublisherCollector(Collector):
    """Reads ``stats`` (e.g. ``publisher.stats``) at every scrape."""

    def __init__(self, stats: Callable[[], PublisherStats]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        yield GaugeMetricFamily(
            "changefeed_publisher_spool_depth",
            "Actions waiting in the publisher's durable spool",
            value=stats.spool_pending,
        )
        yield GaugeMetricFamily(
            "changefeed_publisher_spooling",
            "1 while the publisher sends through its spool (the broker was unreachable)",
            value=1 if stats.spooling else 0,
        )
        actions = CounterMetricFamily(
            "changefeed_publisher_actions",
            "Actions handled by the publisher, by result",
            labels=["result"],
        )
        for result in RESULTS:
            actions.add_metric([result], getattr(stats, result))
        yield actions
