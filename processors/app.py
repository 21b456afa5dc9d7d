"""Builds the Faust app of the processors; declaring things is left to their own modules.

:func:`create_app` returns a fully wired processing app: the ``process_actions`` agent
(:mod:`processors.agents`), the three tables (:mod:`processors.tables`), the health views
(:mod:`processors.health`) and the Prometheus metrics (:mod:`processors.metrics`), over
Kafka transactions (:mod:`processors.exactly_once`).

Tuning, measured with ``bench/bench_pipeline.py`` on a 2-core machine:

* ``broker_commit_interval`` 0.1 s: a change becomes readable (``read_committed``) when its
  transaction commits, so under load this bounds the latency (when the agent runs dry it
  commits at once, see :mod:`processors.agents`); every commit writes a marker to each
  partition it touched, so shorter intervals cost throughput.
* ``broker_commit_every`` large: commits are paced by the interval, not by record counts.
* ``producer_max_batch_size`` 512 KiB: the outbox hands over whole batches per partition.
* ``broker_session_timeout`` 10 s (Faust's default is 60 s): after a crash, the partitions
  of the dead worker are handed over once its session expires.
* ``broker_max_poll_records`` bounds a fetched batch (the agent takes one batch at a time,
  and the fetch loop keeps at most :data:`~processors.agents.BATCH_QUEUE` more ready);
  ``consumer_max_fetch_size`` lets one fetch bring that many records of a partition.
"""

from __future__ import annotations

import faust

from changefeed.config import Settings
from processors.agents import register_agents
from processors.dead_letters import DeadLetterSealer
from processors.exactly_once import CommittedTableManager, ExactlyOnceApp
from processors.health import register_views
from processors.metrics import register_metrics_view
from processors.pipeline import ActionPipeline
from processors.tables import define_tables
from schemas.codec import default_codec

COMMIT_INTERVAL_S = 0.1
COMMIT_EVERY = 100_000
PRODUCER_BATCH_BYTES = 512 * 1024
PRODUCER_REQUEST_BYTES = 4 * 1024 * 1024
SESSION_TIMEOUT_S = 10.0
HEARTBEAT_INTERVAL_S = 2.0
MAX_POLL_RECORDS = 2000
MAX_FETCH_BYTES = 2 * 1024 * 1024


def create_app(settings: Settings) -> faust.App:
    """A worker-ready app for ``settings``: one per process."""
    app = new_app(settings)
    codec = default_codec()
    pipeline = ActionPipeline(
        codec=codec,
        redactor=settings.redactor(),
        retention_ms=settings.retention_ms,
        source=settings.source,
        sealer=DeadLetterSealer(settings.derived_key("dlq")),
    )
    tables = define_tables(app, settings)
    register_agents(app, settings, pipeline, tables)
    register_views(app, settings.bootstrap)
    register_metrics_view(app)
    return app


def new_app(settings: Settings) -> ExactlyOnceApp:
    """The configured exactly-once app, with nothing declared on it yet."""
    return ExactlyOnceApp(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
        store="rocksdb://",
        processing_guarantee="exactly_once",
        topic_partitions=settings.partitions,
        topic_allow_declare=False,
        datadir=str(settings.data_dir),
        web_port=settings.worker_web_port,
        web_bind=settings.api_host,
        broker_commit_every=COMMIT_EVERY,
        broker_commit_interval=COMMIT_INTERVAL_S,
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        producer_max_request_size=PRODUCER_REQUEST_BYTES,
        producer_linger=0.0,
        broker_max_poll_records=MAX_POLL_RECORDS,
        consumer_max_fetch_size=MAX_FETCH_BYTES,
        table_standby_replicas=0,
        TableManager=CommittedTableManager,
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=HEARTBEAT_INTERVAL_S,
    )
