"""``changefeed worker``: run the processors until stopped (SIGTERM / Ctrl-C).

Before the app starts, the project's topics are ensured (idempotent), the local table files
are discarded and rebuilt in bulk from the committed changelogs (see
:mod:`processors.exactly_once` for why, :mod:`processors.restore` for how) while the web
port answers health probes with the restore's progress (:mod:`processors.startup_server`),
and the libraries' logs are quieted where they report what they retry by themselves
(:func:`~processors.faust_adapter.quiet_library_logs`). The exit
status is 0 after a requested stop and 1 when the worker stopped because something failed;
a supervisor restarts it either way. Its web server applies the settings' web limits
(header read timeout, connection cap) and its log drops repeated warnings and errors
(:mod:`processors.log_rate`).
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import faust

from changefeed.config import Settings
from changefeed.topics import TopicSpec, ensure_topics, project_topics
from processors.app import create_app
from processors.exactly_once import discard_local_tables
from processors.faust_adapter import (
    before_web_server_binds,
    check_versions,
    limit_web_server,
    quiet_library_logs,
)
from processors.log_rate import install_repeat_filter
from processors.restore import restore_tables
from processors.restore_progress import RestoreReport
from processors.startup_server import StartupServer


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
    startup: tuple[StartupServer, RestoreReport] | None = None,
) -> int:
    """Run one worker in this process until it stops; returns the exit status.

    ``extend`` adds what else the process serves to the app before it starts (the CLI's
    ``changefeed worker`` adds the events API); processing knows nothing of it.
    ``startup``: the server already answering on the worker's port (the CLI starts it
    before the heavy imports) and the report it shows; without it one is started here.
    """
    check_versions()
    if startup is None:
        report = RestoreReport()
        server = StartupServer(
            report, settings.api_host, settings.worker_web_port, settings.web_limits
        ).start()
    else:
        server, report = startup
    # The port answers 503 "starting", then "restoring" with the restore's progress, until
    # Faust's own web server takes it over.
    try:
        ensure_topics(settings, [*project_topics(settings), leader_topic(settings)])
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates the last level only
        app = create_app(settings)
        limit_web_server(app, settings.web_limits)
        if extend is not None:
            extend(app)
        before_web_server_binds(app, server.stop)
        quiet_library_logs()
        discard_local_tables(app)
        with _startup_log(loglevel):
            restore_tables(app, settings, report=report)
        print(f"changefeed worker: {report.describe()}", file=sys.stderr, flush=True)
        return run_app(app, loglevel)
    finally:
        server.stop()


@contextmanager
def _startup_log(loglevel: str) -> Iterator[None]:
    """Log the processors' records to stderr until Faust sets up its own logging."""
    logger = logging.getLogger("processors")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    )
    level = logging.getLevelName(loglevel.upper())
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level if isinstance(level, int) else logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


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
