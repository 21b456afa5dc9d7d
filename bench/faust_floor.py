"""A worker that forwards each ``actions`` record, exactly once, and does nothing else.

The floor under the processors' own work: the same app configuration, batching consumer,
agent loop, outbox and transactions as ``changefeed worker`` (:mod:`processors.app`,
:mod:`processors.agents`), but no decoding, no state and no encoding. Each record is copied,
bytes unchanged, to ``FLOOR_FANOUT`` sink topics ``<prefix>floor.<n>`` (same partition), so
a fan-out of 3 puts on Kafka what the processors put there per changed action: the change,
the subject's state and the dedupe entry. ``bench/bench_pipeline.py`` (phase
``throughput``) runs it in a subprocess with the settings in the environment, as for
``changefeed worker``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from changefeed.config import Settings
from changefeed.topics import TopicSpec, ensure_topics
from processors.agents import actions_topic, exactly_once_agent
from processors.app import new_app
from processors.exactly_once import TransactionalOutbox, exactly_once_state
from processors.health import register_views
from processors.worker import leader_topic, run_app


def sink_topics(settings: Settings, fanout: int) -> list[str]:
    return [settings.topic(f"floor.{n}") for n in range(fanout)]


def main() -> int:
    settings = Settings.from_env()
    fanout = int(os.environ.get("FLOOR_FANOUT", "1"))
    sinks = sink_topics(settings, fanout)
    ensure_topics(
        settings,
        [*(TopicSpec(name, settings.partitions) for name in sinks), leader_topic(settings)],
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = new_app(settings)
    source = actions_topic(app, settings)
    outbox = TransactionalOutbox(app, settings.topic("actions"))
    exactly_once_state(app).outbox = outbox

    def forward(tp: Any, records: list[Any]) -> None:
        partition = tp.partition
        add = outbox.add
        for record in records:
            for sink in sinks:
                add(partition, sink, partition, record.key, record.value)

    exactly_once_agent(app, source, "forward", forward)
    register_views(app)
    # Never written. faust-streaming 0.15 gives the transactional producers out through its
    # partition assignor, whose topic groups stay empty in an app without tables (the
    # first assignment then fails with KeyError); the worker has five.
    unused = app.Table("unused", partitions=settings.partitions)
    ensure_topics(
        settings, [TopicSpec(unused.changelog_topic.get_topic_name(), settings.partitions)]
    )
    return run_app(app, "warn")


if __name__ == "__main__":
    sys.exit(main())
