"""``changefeed worker``: run the processors until stopped (SIGTERM / Ctrl-C).

Before the app starts, the project's topics are ensured (idempotent), the local table files
are discarded and rebuilt in bulk from the committed changelogs (see
:mod:`processors.exactly_once` for why, :mod:`processors.restore` for how). The exit
status is 0 after a requested stop and 1 when the worker stopped because something failed;
a supervisor restarts it either way. Its web server applies the settings' web limits
(header read timeout, connection cap) and its log drops repeated warnings and errors
(:mod:`processors.log_rate`).
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable

import faust

from changefeed.config import Settings
from changefeed.topics import TopicSpec, ensure_topics, project_topics
from processors.app import create_app
from processors.exactly_once import discard_local_tables
from processors.faust_adapter import check_versions, limit_web_server
from processors.log_rate import install_repeat_filter
from processors.restore import restore_tables


def leader_topic(settings: Settings) -> TopicSpec:
    """Faust's leader-election topic; declared here because brokers do not auto-create."""
    return TopicSpec(f"{settings.app_id}-__assignor-__leader", 1)


GC_THRESHOLDS = (50_000, 20, 20)
"""Collector thresholds: processing allocates and frees many small objects per action, few
of them in reference cycles; collecting every 700 allocations (Python's default) spent
measurable time walking the same long-lived objects again and again."""


def settle_garbage_collector() -> None:
    """Freeze what exists now and collect cycles less often (see :data:`GC_THRESHOLDS`)."""
    # What exists by now (modules, the app, the restored state's bookkeeping) lives as long
    # as the worker: frozen, the collector never walks it again.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class _Worker(faust.Worker):
    """Faust's worker, whose log handlers drop repeated warnings and errors
    (:mod:`processors.log_rate`): a broker outage must not flood the log."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        install_repeat_filter(logger)


def faust_worker(app: faust.App, loglevel: str) -> faust.Worker:
    """Faust's worker for ``app``, logging at ``loglevel`` and nothing below it."""
    worker = _Worker(app, loglevel=loglevel, quiet=True)
    # Faust's progress spinner sets the root logger to DEBUG whenever the level is WARN or
    # above, so every debug call of the Kafka client builds a log record for nothing
    # (about 5 % of the worker's time under load). Without it the level is the one asked.
    worker.spinner = None
    return worker


def run_worker(
    settings: Settings,
    *,
    loglevel: str = "info",
    extend: Callable[[faust.App], object] | None = None,
) -> int:
    """Run one worker in this process until it stops; returns the exit status.

    ``extend`` adds what else the process serves to the app before it starts (the CLI's
    ``changefeed worker`` adds the events API); processing knows nothing of it.
    """
    check_versions()
    ensure_topics(settings, [*project_topics(settings), leader_topic(settings)])
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = create_app(settings)
    limit_web_server(app, settings.web_limits)
    if extend is not None:
        extend(app)
    discard_local_tables(app)
    report = restore_tables(app, settings)
    print(f"changefeed worker: {report.describe()}", file=sys.stderr, flush=True)
    return run_app(app, loglevel)


def run_app(app: faust.App, loglevel: str) -> int:
    """Run ``app`` in this process until it stops; 1 when it stopped because it crashed."""
    worker = faust_worker(app, loglevel)
    settle_garbage_collector()
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    else:  # pragma: no cover - execute_from_commandline always raises SystemExit
        code = 0
    if app.crash_reason is not None:
        return 1
    return code
