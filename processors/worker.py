"""``changefeed worker``: run the processors until stopped (SIGTERM / Ctrl-C).

Before the app starts, the project's topics are ensured (idempotent), the local table files
are discarded and rebuilt in bulk from the committed changelogs (see
:mod:`processors.exactly_once` for why, :mod:`processors.restore` for how). The exit
status is 0 after a requested stop and 1 when the worker stopped because something failed;
a supervisor restarts it either way.
"""

from __future__ import annotations

import sys

import faust

from changefeed.config import Settings
from changefeed.topics import TopicSpec, ensure_topics, project_topics
from processors.app import create_app
from processors.exactly_once import discard_local_tables
from processors.restore import restore_tables


def leader_topic(settings: Settings) -> TopicSpec:
    """Faust's leader-election topic; declared here because brokers do not auto-create."""
    return TopicSpec(f"{settings.app_id}-__assignor-__leader", 1)


def run_worker(settings: Settings, *, loglevel: str = "info") -> int:
    """Run one worker in this process until it stops; returns the exit status."""
    ensure_topics(settings, [*project_topics(settings), leader_topic(settings)])
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = create_app(settings)
    discard_local_tables(app)
    report = restore_tables(app, settings)
    print(f"changefeed worker: {report.describe()}", file=sys.stderr, flush=True)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    else:  # pragma: no cover - execute_from_commandline always raises SystemExit
        code = 0
    if app.crash_reason is not None:
        return 1
    return code
