"""The ``changefeed`` command: one click group, a subcommand per job.

Settings come from the environment, read once per command (:meth:`Settings.from_env`) when
the command runs, never while parsing, so ``--help`` works whatever the environment holds;
``--bootstrap`` overrides ``CHANGEFEED_BOOTSTRAP``. Heavy imports (Kafka clients, Faust,
aiohttp) happen inside the command that needs them, so ``changefeed --help`` stays fast.

One rule for failures (:func:`main`): a command that fails prints one line on stderr naming
the cause and what to do, and exits with a documented code (:mod:`changefeed.failures`);
``--debug`` adds the traceback. :func:`main` takes ``argv`` and returns the exit code, so
tests and the console script share it.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from changefeed import __version__
from changefeed.config import Settings
from changefeed.failures import EXIT_CODES_HELP, ExitCode, failure_for

PROG = "changefeed"

_EPILOG = (
    "\b\nExit codes:\n"
    + "\n".join(f"  {int(code):<4}{text}" for code, text in EXIT_CODES_HELP.items())
    + "\n\nA failure prints one line on stderr; --debug adds the traceback. "
    "Settings come from CHANGEFEED_* variables (see the README)."
)


@dataclass
class _Globals:
    """The group's options, handed to every command through the click context."""

    bootstrap: str | None
    debug: bool

    def settings(self) -> Settings:
        settings = Settings.from_env()
        return settings.with_(bootstrap=self.bootstrap) if self.bootstrap else settings


class TimeParam(click.ParamType):
    """An RFC 3339 time, or a relative ``-2h`` / ``-30m`` / ``-1d`` / ``-90s`` from now.

    Click hands the next word to an option that takes a value even when it starts with a
    dash, so ``--since -2h`` and ``--since=-2h`` both work.
    """

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        from changefeed.replay import ReplayError, parse_time

        try:
            return parse_time(str(value))
        except ReplayError as exc:
            self.fail(str(exc), param, ctx)


_pass_globals = click.make_pass_decorator(_Globals)

# Set in the context's meta (shared by nested contexts): parse and check, run nothing.
_PARSE_ONLY = "changefeed.parse_only"


class _Command(click.Command):
    """A command that parses and converts its arguments, then runs unless parse-only."""

    def invoke(self, ctx: click.Context) -> Any:
        if ctx.meta.get(_PARSE_ONLY):
            return dict(ctx.params)
        return super().invoke(ctx)


class _Group(click.Group):
    command_class = _Command
    group_class = type  # subgroups are _Group too


def check_usage(argv: Sequence[str]) -> dict[str, Any]:
    """Parse ``argv`` as :func:`main` would, through to the command's options and their
    types, without running anything; returns the command's converted parameters. Raises
    ``click.UsageError`` when ``argv`` would not parse."""
    with cli.make_context(PROG, list(argv)) as ctx:
        ctx.meta[_PARSE_ONLY] = True
        params = cli.invoke(ctx)
    assert isinstance(params, dict)
    return params


@click.group(
    cls=_Group,
    name=PROG,
    epilog=_EPILOG,
    context_settings={
        "help_option_names": ["-h", "--help"],
        "show_default": True,
        "max_content_width": 100,
    },
)
@click.version_option(__version__, "--version", prog_name=PROG, message="%(prog)s %(version)s")
@click.option(
    "--bootstrap",
    metavar="HOST:PORT[,...]",
    help="Kafka bootstrap servers  [default: $CHANGEFEED_BOOTSTRAP, else 127.0.0.1:9092]",
)
@click.option("--debug", is_flag=True, help="show the traceback when a command fails")
@click.pass_context
def cli(ctx: click.Context, bootstrap: str | None, debug: bool) -> None:
    """Change-event pipeline: API actions -> Kafka -> change events, tables, feed."""
    ctx.obj = _Globals(bootstrap=bootstrap, debug=debug)


# -- broker -------------------------------------------------------------------------------
@cli.group()
def broker() -> None:
    """The local single-node Kafka broker (KRaft)."""


@broker.command("start")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=180.0,
    help="seconds to wait for readiness",
)
@_pass_globals
def broker_start(g: _Globals, timeout: float) -> int:
    """Start the broker and wait until it answers.

    Fetches the Kafka jars once, formats the KRaft storage, starts the broker and waits for
    a metadata answer; a running broker is reused.
    """
    import time

    from changefeed.broker import LocalBroker

    began = time.monotonic()
    status = LocalBroker(g.settings().broker).start(timeout_s=timeout)
    click.echo(f"{status.describe()} (ready in {time.monotonic() - began:.1f}s)")
    return ExitCode.OK


@broker.command("status")
@_pass_globals
def broker_status(g: _Globals) -> int:
    """Is it running and answering? Exits 3 when it does not answer."""
    from changefeed.broker import LocalBroker

    status = LocalBroker(g.settings().broker).status()
    click.echo(status.describe())
    return ExitCode.OK if status.reachable else ExitCode.BROKER


@broker.command("stop")
@click.option("--kill", is_flag=True, help="SIGKILL at once (simulate a crash)")
@_pass_globals
def broker_stop(g: _Globals, kill: bool) -> int:
    """Controlled shutdown (SIGTERM, then SIGKILL)."""
    from changefeed.broker import LocalBroker

    stopped = LocalBroker(g.settings().broker).stop(kill=kill)
    click.echo("stopped" if stopped else "was not running")
    return ExitCode.OK


# -- topics -------------------------------------------------------------------------------
@cli.group()
def topics() -> None:
    """The project's topics, as declared in code."""


@topics.command("ensure")
@_pass_globals
def topics_ensure(g: _Globals) -> int:
    """Create missing topics, fix config drift, report the rest.

    Creates missing topics, corrects retention.ms / cleanup.policy drift, and reports a
    partition count that differs from the declaration (exit 4; left alone, since changing it
    would re-key subjects).
    """
    from changefeed.topics import ensure_topics

    reports = ensure_topics(g.settings())
    for report in reports:
        click.echo(report.describe())
    return ExitCode.TOPIC if any(r.drift for r in reports) else ExitCode.OK


@topics.command("describe")
@_pass_globals
def topics_describe(g: _Globals) -> int:
    """Partitions, retention and cleanup of every project topic.

    One JSON line per topic: partitions, retention.ms and cleanup.policy (the kafka-configs
    view). Exits 4 when a project topic is missing.
    """
    from changefeed.topics import describe_topics, project_topics

    settings = g.settings()
    names = [t.name for t in project_topics(settings)]
    for name, info in describe_topics(settings, names).items():
        configs = info["configs"]
        assert isinstance(configs, dict)
        line = {
            "topic": name,
            "partitions": info["partitions"],
            "retention.ms": configs.get("retention.ms"),
            "cleanup.policy": configs.get("cleanup.policy"),
        }
        click.echo(json.dumps(line))
    return ExitCode.OK


# -- services -----------------------------------------------------------------------------
@cli.command()
@click.option(
    "--loglevel",
    type=click.Choice(
        ["debug", "info", "warning", "warn", "error", "critical"], case_sensitive=False
    ),
    default="info",
    help="worker log level",
)
@_pass_globals
def worker(g: _Globals, loglevel: str) -> int:
    """Run the processors worker; it also serves the events API and delivers webhooks."""
    from processors.restore_progress import RestoreReport
    from processors.startup_server import StartupServer

    settings = g.settings()
    # Health probes get an answer (503 starting/restoring) while Faust and the rest load.
    report = RestoreReport()
    startup = StartupServer(
        report, settings.api_host, settings.worker_web_port, settings.web_limits
    ).start()
    try:
        from events_api.views import register_events_api
        from processors.worker import run_worker
        from webhooks.runtime import Webhooks

        def extend(app: Any) -> None:
            register_events_api(app, settings, extend_api=Webhooks(settings).install)

        return run_worker(
            settings,
            loglevel=loglevel.lower(),
            extend=extend,
            startup=(startup, report),
        )
    finally:
        startup.stop()


@cli.command()
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    show_default="$CHANGEFEED_EVENTS_API_PORT, else 6067",
    help="port to serve on",
)
@click.option(
    "--worker-url",
    metavar="URL",
    default=None,
    show_default="$CHANGEFEED_WORKER_URL; unset: subject state from the index",
    help="a worker to forward subject-state lookups to",
)
@_pass_globals
def api(g: _Globals, port: int | None, worker_url: str | None) -> int:
    """Serve the events API on its own, without processing.

    Indexes every partition of changes and serves /v1, /openapi.json, /explorer, /healthz,
    /readyz, /livez and /metrics; run as many as reads need, beside the workers, with the same
    CHANGEFEED_SECRET so cursors work across all of them.
    """
    import logging

    from events_api.server import run_api_server

    settings = g.settings()
    if worker_url:
        settings = settings.with_(worker_url=worker_url)
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
    )
    return run_api_server(
        settings,
        host=settings.api_host,
        port=port or settings.events_api_port,
        worker_url=settings.worker_url,
    )


@cli.command("demo-api")
@_pass_globals
def demo_api(g: _Globals) -> int:
    """Run the demo business API, whose writes publish actions."""
    from producers.demo_api.server import run_demo_api

    return run_demo_api(g.settings())


@cli.command()
@click.option(
    "--target",
    metavar="URL",
    help="demo API base URL; omit to publish directly to Kafka",
)
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), default=50.0, help="actions per second"
)
@click.option("--duration", type=click.FloatRange(min=0), default=30.0, help="seconds to run")
@click.option("--tenants", type=click.IntRange(min=1), default=3, help="tenants to spread over")
@click.option(
    "--duplicates", type=click.FloatRange(0, 1), default=0.05, help="share re-sent as duplicates"
)
@click.option(
    "--out-of-order", type=click.FloatRange(0, 1), default=0.05, help="share completed late"
)
@click.option("--seed", type=int, default=None, help="random seed, for repeatable runs")
@_pass_globals
def loadgen(
    g: _Globals,
    target: str | None,
    rate: float,
    duration: float,
    tenants: int,
    duplicates: float,
    out_of_order: float,
    seed: int | None,
) -> int:
    """Send realistic demo traffic.

    Through the demo API (--target) or straight to Kafka, with duplicates and
    out-of-order completions.
    """
    from producers.loadgen import LoadProfile, run_loadgen

    profile = LoadProfile(
        rate=rate,
        duration_s=duration,
        tenants=tenants,
        duplicate_rate=duplicates,
        out_of_order_rate=out_of_order,
        seed=seed,
    )
    return run_loadgen(g.settings(), profile, target=target)


# -- replay -------------------------------------------------------------------------------
@cli.command()
@click.option(
    "--since",
    type=TimeParam(),
    default=None,
    show_default="needed unless --resume",
    help="RFC 3339 time, or -2h / -30m / -1d",
)
@click.option(
    "--until",
    type=TimeParam(),
    default=None,
    show_default="the tip at start",
    help="RFC 3339 time, or -1h",
)
@click.option("--source", default="changes", help="topic (unprefixed)")
@click.option(
    "--to-topic",
    metavar="TOPIC",
    show_default="stdout, as JSON lines",
    help="write records unchanged to this (existing) topic",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="write files into this directory (part-00000.<ext>, ...), with a checkpoint",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "avro", "parquet"]),
    default="jsonl",
    metavar="FORMAT",
    help="jsonl, avro or parquet (the parquet extra), with --output",
)
@click.option(
    "--max-file-mb",
    type=click.FloatRange(min=0.001),
    default=128.0,
    help="roll to a new file once one reaches this size (MiB)",
)
@click.option(
    "--avro-codec",
    type=click.Choice(["snappy", "deflate", "null"]),
    default="snappy",
    help="compression of Avro blocks",
)
@click.option("--resume", is_flag=True, help="continue the export in --output from its checkpoint")
@click.option("--tenant", help="only this tenant's records")
@click.option("--event-type", help="only this event type; globs like 'expense_*:*'")
@_pass_globals
def replay(
    g: _Globals,
    since: datetime | None,
    until: datetime | None,
    source: str,
    to_topic: str | None,
    output: Path | None,
    fmt: str,
    max_file_mb: float,
    avro_codec: str,
    resume: bool,
    tenant: str | None,
    event_type: str | None,
) -> int:
    """Copy a window of a topic's history to a topic, stdout or files.

    Reads each partition (read_committed) from the offset of --since up to the tip at start
    (or --until); writes records unchanged to --to-topic, decoded to stdout as JSON lines,
    or with --output into files of --format (jsonl, avro container files, parquet), rolled
    by size and resumable with --resume after an interrupt. Progress goes to stderr when it
    is a terminal; a summary line ends every run.
    """
    from changefeed.replay import ReplayError, ReplayWindow
    from changefeed.replay import replay as run_replay

    if to_topic and output:
        raise click.UsageError("give --to-topic or --output, not both")
    if output is None and (resume or fmt != "jsonl"):
        raise click.UsageError("--format avro|parquet and --resume write files: add --output DIR")
    if since is None and not resume:
        raise click.UsageError("--since is required (except with --resume)")
    settings = g.settings()
    if resume:
        since = since or datetime.fromtimestamp(0, UTC)  # the checkpoint's window is used
    assert since is not None
    try:
        window = ReplayWindow(since=since, until=until, tenant=tenant, event_type=event_type)
    except ReplayError as exc:
        raise click.BadParameter(str(exc), param_hint="'--until'") from exc
    if output is not None:
        from changefeed.export import export

        export_report = export(
            settings,
            window,
            source=settings.topic(source),
            directory=output,
            fmt=fmt,  # type: ignore[arg-type]
            max_file_bytes=int(max_file_mb * 1024 * 1024),
            resume=resume,
            avro_codec=avro_codec,
        )
        click.echo(export_report.describe(), err=True)
        return ExitCode.OK
    report = run_replay(
        settings,
        window,
        source=settings.topic(source),
        target_topic=to_topic,
        out=None if to_topic else sys.stdout,
    )
    click.echo(report.describe(), err=True)
    return ExitCode.OK


# -- dead letters -------------------------------------------------------------------------
@cli.group()
def dlq() -> None:
    """Dead letters of actions.dlq: list, open (admins), send back to actions."""


@dlq.command("list")
@_pass_globals
def dlq_list(g: _Globals) -> int:
    """One JSON line per dead letter: offset, reason, origin, key; the original stays sealed."""
    from changefeed.dlq import list_dead_letters

    for summary in list_dead_letters(g.settings()):
        click.echo(json.dumps(summary))
    return ExitCode.OK


@dlq.command("show")
@click.argument("offset", type=click.IntRange(min=0))
@_pass_globals
def dlq_show(g: _Globals, offset: int) -> int:
    """Open the dead letter at OFFSET and print its original action as JSON.

    Decrypts with the deployment secret (CHANGEFEED_SECRET, or $CHANGEFEED_HOME/secret.key):
    the output holds the original in clear, for an admin's eyes only.
    """
    from changefeed.dlq import show_dead_letter

    click.echo(json.dumps(show_dead_letter(g.settings(), offset), indent=2))
    return ExitCode.OK


@dlq.command("redrive")
@click.option(
    "--offset",
    "offsets",
    type=click.IntRange(min=0),
    multiple=True,
    help="a dead letter to send back (repeatable)",
)
@click.option("--all", "all_", is_flag=True, help="every dead letter the topic holds")
@click.option(
    "--fixed",
    type=click.Path(dir_okay=False, path_type=Path),
    help="send this action (JSON, as `dlq show` prints it, edited) in place of one --offset",
)
@click.option("--dry-run", is_flag=True, help="say what would be sent, send nothing")
@_pass_globals
def dlq_redrive(
    g: _Globals, offsets: tuple[int, ...], all_: bool, fixed: Path | None, dry_run: bool
) -> int:
    """Send dead letters back to actions, through the action contract.

    A record goes only if it is valid now (or replaced by --fixed); one still invalid is
    reported with its reason and left in place. Exits 1 when any was not sent.
    """
    from changefeed.dlq import load_fixed_action, redrive

    if bool(offsets) == all_:
        raise click.UsageError("give --offset N (one or more) or --all")
    fixed_action = load_fixed_action(fixed.read_text()) if fixed is not None else None
    results = redrive(g.settings(), None if all_ else offsets, fixed=fixed_action, dry_run=dry_run)
    for result in results:
        click.echo(result.describe())
    return (
        ExitCode.OK
        if all(r.sent or dry_run and not r.reason for r in results)
        else (ExitCode.FAILED)
    )


# -- reprocess, retention, schemas -------------------------------------------------------
@cli.command()
@click.option(
    "--since",
    type=TimeParam(),
    required=True,
    help="write the changes of actions from this time on (RFC 3339, or -2h / -1d)",
)
@click.option(
    "--until",
    type=TimeParam(),
    default=None,
    show_default="the tip at start",
    help="and before this time",
)
@click.option("--app-id", required=True, help="a new app id: names this run's consumer group")
@click.option(
    "--to-topic",
    required=True,
    metavar="TOPIC",
    help="a fresh topic for the changes (created like changes when missing; must be empty)",
)
@_pass_globals
def reprocess(
    g: _Globals, since: datetime, until: datetime | None, app_id: str, to_topic: str
) -> int:
    """Derive the changes again from the retained actions, into a fresh topic.

    Runs the processors' logic over the actions the broker still holds, with fresh state;
    actions before --since only build state. Never writes to a live topic, never joins
    the live consumer group, never touches the live tables.
    """
    from changefeed.reprocess import ReprocessError, ReprocessPlan
    from changefeed.reprocess import reprocess as run_reprocess

    settings = g.settings()
    plan = ReprocessPlan(since=since, until=until, app_id=app_id, target_topic=to_topic)
    try:
        plan.check(settings)
    except ReprocessError as exc:
        raise click.UsageError(str(exc)) from exc
    report = run_reprocess(settings, plan)
    click.echo(report.describe(plan), err=True)
    return ExitCode.OK


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="one JSON object a line instead of a table")
@_pass_globals
def retention(g: _Globals, as_json: bool) -> int:
    """Per project topic: oldest and newest record held, and the retention setting.

    How far back a replay, an export, a reprocess or a listing of the events API can
    reach. Exits 4 when a project topic is missing.
    """
    from changefeed.retention import format_table, topic_extents

    extents = topic_extents(g.settings())
    if as_json:
        for extent in extents:
            click.echo(json.dumps(extent.as_json()))
    else:
        for line in format_table(extents):
            click.echo(line)
    return ExitCode.OK


@cli.group()
def schemas() -> None:
    """The record schemas, for readers in other languages."""


@schemas.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def schemas_export(directory: Path) -> int:
    """Write the Avro schemas (.avsc), JSON Schemas and fingerprints into DIRECTORY.

    One standalone .avsc and one .schema.json per record a topic holds (ApiAction,
    ChangeEvent, DeadLetter), every archived version the codec still reads, and
    fingerprints.json mapping single-object fingerprints to schema files.
    """
    from schemas.codec import default_codec
    from schemas.schema_export import export_schemas

    for path in export_schemas(default_codec(), directory):
        click.echo(str(path))
    return ExitCode.OK


# -- keys ---------------------------------------------------------------------------------
@cli.group()
def keys() -> None:
    """API keys of the events API (stored as digests only)."""


@keys.command("create")
@click.option("--tenant", required=True, help="the tenant the key reads")
@click.option(
    "--role",
    type=click.Choice(["admin", "user"]),
    required=True,
    help="admin: the whole tenant; user: one user's events",
)
@click.option("--user", help="the user a user key reads the events of")
@click.option("--name", default="", help="a label, e.g. who holds the key")
@click.option(
    "--scope",
    "scope",
    default="read",
    show_default=True,
    help="comma-separated: read (the feed), write (generate events, manage schedules)",
)
@_pass_globals
def keys_create(
    g: _Globals, tenant: str, role: str, user: str | None, name: str, scope: str
) -> int:
    """Create a key and print it, once."""
    from changefeed.topics import ensure_topics, project_topics
    from events_api.access.errors import ApiKeyError
    from events_api.access.key_topic import TOPIC, KeyStore
    from events_api.access.keys import Role, new_key, parse_scopes

    try:
        scopes = parse_scopes(scope)
        key, record = new_key(tenant, Role(role), user_id=user, name=name, scopes=scopes)
    except ApiKeyError as exc:
        raise click.UsageError(str(exc)) from exc
    settings = g.settings()
    ensure_topics(settings, [t for t in project_topics(settings) if t.name.endswith(TOPIC)])
    KeyStore(settings).put(record)
    click.echo(key)
    click.echo(
        f"key {record.key_id} for tenant {record.tenant_id} ({record.role.value}, "
        f"scopes {','.join(record.scopes)}); "
        "this is the only time the key is shown",
        err=True,
    )
    return ExitCode.OK


@keys.command("list")
@click.option("--tenant", help="only this tenant's keys")
@_pass_globals
def keys_list(g: _Globals, tenant: str | None) -> int:
    """List keys as JSON lines (never the keys themselves)."""
    from events_api.access.key_topic import KeyStore

    for record in sorted(KeyStore(g.settings()).records().values(), key=lambda r: r.created_at):
        if tenant is None or record.tenant_id == tenant:
            click.echo(json.dumps(record.public()))
    return ExitCode.OK


@keys.command("revoke")
@click.argument("key_id")
@_pass_globals
def keys_revoke(g: _Globals, key_id: str) -> int:
    """Revoke the key KEY_ID (as `keys list` shows it); every worker refuses it at once."""
    from events_api.access.key_topic import KeyStore

    record = KeyStore(g.settings()).revoke(key_id)
    click.echo(f"key {record.key_id} revoked at {record.revoked_at}")
    return ExitCode.OK


# -- webhooks -----------------------------------------------------------------------------
@cli.group()
def webhooks() -> None:
    """Webhook tools (subscriptions are managed through the events API: /v1/webhooks)."""


@webhooks.command("listen")
@click.option("--port", type=click.IntRange(1, 65535), required=True, help="port to listen on")
@click.option("--host", default="127.0.0.1", help="address to bind")
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="WHSEC",
    help="whsec_ signing secret to verify with (repeatable)  [default: $CHANGEFEED_WEBHOOK_SECRET]",
)
def webhooks_listen(port: int, host: str, secrets: tuple[str, ...]) -> int:
    """A local receiver: verifies signatures and prints one JSON line per delivery."""
    from webhooks.errors import SignatureError
    from webhooks.listen import run_listener

    given = list(secrets)
    if not given and os.environ.get("CHANGEFEED_WEBHOOK_SECRET"):
        given.append(os.environ["CHANGEFEED_WEBHOOK_SECRET"])
    try:
        return run_listener(host, port, given)
    except SignatureError as exc:
        raise click.UsageError(f"--secret: {exc}") from exc


# -- demo ---------------------------------------------------------------------------------
@cli.command()
@click.option(
    "--duration", type=click.FloatRange(min=0), default=20.0, help="seconds of demo traffic"
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=40.0,
    help="demo requests per second",
)
@click.option("--keep-running", is_flag=True, help="leave the services up after the traffic")
@click.option(
    "--webhook-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="port of the demo's webhook listener  [default: the demo API's port + 1]",
)
@_pass_globals
def demo(
    g: _Globals, duration: float, rate: float, keep_running: bool, webhook_port: int | None
) -> int:
    """Everything end to end: broker, topics, worker, APIs, traffic.

    Starts (or reuses) the broker, ensures the topics, starts the worker and the demo API,
    subscribes a local webhook listener, sends demo traffic through the demo API, waits
    until the change events are readable, then prints a sample, what the listener
    received and where to look.
    """
    from changefeed.demo import run_demo

    return run_demo(
        g.settings(),
        duration_s=duration,
        rate=rate,
        keep_running=keep_running,
        webhook_port=webhook_port,
    )


# -- entry point --------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = False
    try:
        with cli.make_context(PROG, args) as ctx:
            debug = bool(ctx.params.get("debug"))
            result = cli.invoke(ctx)
        return int(result) if isinstance(result, int) else ExitCode.OK
    except click.exceptions.Exit as exc:  # --help, --version
        return int(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:  # a group without its command
        click.echo(exc.format_message(), err=True)
        return ExitCode.USAGE
    except click.UsageError as exc:
        if debug:
            traceback.print_exc()
        click.echo(_usage_line(exc), err=True)
        return ExitCode.USAGE
    except click.ClickException as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"{PROG}: error: {_one_line(exc.format_message())}", err=True)
        return int(exc.exit_code)
    except (KeyboardInterrupt, click.Abort):
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (``changefeed replay ... | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.FAILED
    except Exception as exc:
        if debug:
            traceback.print_exc()
        failure = failure_for(exc)
        click.echo(failure.line, err=True)
        return failure.code


def _usage_line(exc: click.UsageError) -> str:
    path = exc.ctx.command_path if exc.ctx is not None else PROG
    return f"{path}: error: {_one_line(exc.format_message())}; see '{path} --help'"


def _one_line(text: str) -> str:
    return " ".join(text.split()).rstrip(".")


if __name__ == "__main__":
    sys.exit(main())
