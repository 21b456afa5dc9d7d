"""The ``changefeed`` command: one entry point, a subcommand per job.

Settings come from the environment, read here once (:meth:`Settings.from_env`), and are
handed down; flags override them. Heavy imports (Faust, aiohttp) happen inside the
subcommand that needs them, so ``changefeed --help`` and ``broker status`` stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from changefeed.config import Settings
from changefeed.errors import ChangefeedError

Handler = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="changefeed",
        description="Change-event pipeline: API actions -> Kafka -> change events, tables, feed.",
    )
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (env CHANGEFEED_BOOTSTRAP)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    broker = sub.add_parser("broker", help="the local single-node Kafka broker (KRaft)")
    broker_sub = broker.add_subparsers(dest="broker_command", required=True, metavar="ACTION")
    start = broker_sub.add_parser(
        "start", help="fetch the jars once, format, start, wait until ready"
    )
    start.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    start.set_defaults(handler=_broker_start)
    broker_sub.add_parser("status", help="is it running and answering?").set_defaults(
        handler=_broker_status
    )
    stop = broker_sub.add_parser("stop", help="controlled shutdown (SIGTERM, then SIGKILL)")
    stop.add_argument("--kill", action="store_true", help="SIGKILL at once (simulate a crash)")
    stop.set_defaults(handler=_broker_stop)

    topics = sub.add_parser("topics", help="the project's topics, as declared in code")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    topics_sub.add_parser(
        "ensure", help="create missing topics, correct config drift, report partition drift"
    ).set_defaults(handler=_topics_ensure)
    topics_sub.add_parser(
        "describe", help="partitions, retention.ms and cleanup.policy of every project topic"
    ).set_defaults(handler=_topics_describe)

    worker = sub.add_parser("worker", help="run the Faust processors worker and the events API")
    worker.add_argument("--loglevel", default="info", help="worker log level")
    worker.set_defaults(handler=_worker)

    demo_api = sub.add_parser("demo-api", help="run the demo business API that publishes actions")
    demo_api.set_defaults(handler=_demo_api)

    loadgen = sub.add_parser("loadgen", help="send realistic demo traffic")
    loadgen.add_argument("--target", help="demo API base URL; omit to publish directly to Kafka")
    loadgen.add_argument("--rate", type=float, default=50.0, help="actions per second")
    loadgen.add_argument("--duration", type=float, default=30.0, help="seconds to run")
    loadgen.add_argument("--tenants", type=int, default=3)
    loadgen.add_argument(
        "--duplicates", type=float, default=0.05, help="share re-sent as duplicates"
    )
    loadgen.add_argument("--out-of-order", type=float, default=0.05, help="share completed late")
    loadgen.add_argument("--seed", type=int, default=None, help="random seed, for repeatable runs")
    loadgen.set_defaults(handler=_loadgen)

    replay = sub.add_parser(
        "replay", help="copy a window of a topic's history to another topic or to stdout"
    )
    replay.add_argument("--since", required=True, help="RFC 3339 time, or -2h / -30m / -1d")
    replay.add_argument("--until", help="RFC 3339 time or -1h (default: the tip at start)")
    replay.add_argument("--source", default="changes", help="project topic to read (unprefixed)")
    replay.add_argument("--to-topic", help="write records unchanged to this (existing) topic")
    replay.add_argument("--tenant", help="only this tenant's records")
    replay.add_argument("--event-type", help="only this event type; globs like 'expense_*:*'")
    replay.set_defaults(handler=_replay)

    keys = sub.add_parser("keys", help="API keys of the events API (stored as digests only)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="create a key and print it, once")
    create.add_argument("--tenant", required=True, help="the tenant the key reads")
    create.add_argument(
        "--role", required=True, choices=["admin", "user"], help="admin: whole tenant; user: own"
    )
    create.add_argument("--user", help="the user a user key reads the events of")
    create.add_argument("--name", default="", help="a label, e.g. who holds the key")
    create.set_defaults(handler=_keys_create)
    keys_list = keys_sub.add_parser("list", help="list keys (never the keys themselves)")
    keys_list.add_argument("--tenant", help="only this tenant's keys")
    keys_list.set_defaults(handler=_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key; every worker refuses it at once")
    revoke.add_argument("key_id", help="the key id, as keys list shows it")
    revoke.set_defaults(handler=_keys_revoke)

    demo = sub.add_parser(
        "demo", help="start broker, topics, worker and APIs, send demo traffic, print where to look"
    )
    demo.add_argument("--duration", type=float, default=20.0, help="seconds of demo traffic")
    demo.add_argument("--rate", type=float, default=40.0, help="demo requests per second")
    demo.add_argument(
        "--keep-running", action="store_true", help="leave the services up after the traffic"
    )
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.bootstrap:
        settings = settings.with_(bootstrap=args.bootstrap)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except ChangefeedError as exc:
        print(f"changefeed: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _broker_start(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from changefeed.broker import LocalBroker

    began = time.monotonic()
    status = LocalBroker(settings.broker).start(timeout_s=args.timeout)
    print(f"{status.describe()} (ready in {time.monotonic() - began:.1f}s)")
    return 0


def _broker_status(args: argparse.Namespace, settings: Settings) -> int:
    from changefeed.broker import LocalBroker

    status = LocalBroker(settings.broker).status()
    print(status.describe())
    return 0 if status.reachable else 3


def _broker_stop(args: argparse.Namespace, settings: Settings) -> int:
    from changefeed.broker import LocalBroker

    stopped = LocalBroker(settings.broker).stop(kill=args.kill)
    print("stopped" if stopped else "was not running")
    return 0


def _topics_ensure(args: argparse.Namespace, settings: Settings) -> int:
    from changefeed.topics import ensure_topics

    reports = ensure_topics(settings)
    for report in reports:
        print(report.describe())
    return 4 if any(r.drift for r in reports) else 0


def _topics_describe(args: argparse.Namespace, settings: Settings) -> int:
    from changefeed.topics import describe_topics, project_topics

    names = [t.name for t in project_topics(settings)]
    described = describe_topics(settings, names)
    for name, info in described.items():
        configs = info["configs"]
        assert isinstance(configs, dict)
        print(
            json.dumps(
                {
                    "topic": name,
                    "partitions": info["partitions"],
                    "retention.ms": configs.get("retention.ms"),
                    "cleanup.policy": configs.get("cleanup.policy"),
                }
            )
        )
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from events_api.views import register_events_api
    from processors.worker import run_worker

    return run_worker(
        settings, loglevel=args.loglevel, extend=lambda app: register_events_api(app, settings)
    )


def _demo_api(args: argparse.Namespace, settings: Settings) -> int:
    from producers.demo_api.server import run_demo_api

    return run_demo_api(settings)


def _loadgen(args: argparse.Namespace, settings: Settings) -> int:
    from producers.loadgen import LoadProfile, run_loadgen

    profile = LoadProfile(
        rate=args.rate,
        duration_s=args.duration,
        tenants=args.tenants,
        duplicate_rate=args.duplicates,
        out_of_order_rate=args.out_of_order,
        seed=args.seed,
    )
    return run_loadgen(settings, profile, target=args.target)


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from changefeed.replay import ReplayWindow, parse_time, replay

    window = ReplayWindow(
        since=parse_time(args.since),
        until=parse_time(args.until) if args.until else None,
        tenant=args.tenant,
        event_type=args.event_type,
    )
    report = replay(
        settings,
        window,
        source=settings.topic(args.source),
        target_topic=args.to_topic,
        out=None if args.to_topic else sys.stdout,
    )
    print(report.describe(), file=sys.stderr)
    return 0


def _keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from changefeed.topics import ensure_topics, project_topics
    from events_api.access.key_topic import TOPIC, KeyStore
    from events_api.access.keys import Role, new_key

    key, record = new_key(args.tenant, Role(args.role), user_id=args.user, name=args.name)
    ensure_topics(settings, [t for t in project_topics(settings) if t.name.endswith(TOPIC)])
    KeyStore(settings).put(record)
    print(key)
    print(
        f"key {record.key_id} for tenant {record.tenant_id} ({record.role.value}); "
        "this is the only time the key is shown",
        file=sys.stderr,
    )
    return 0


def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from events_api.access.key_topic import KeyStore

    for record in sorted(KeyStore(settings).records().values(), key=lambda r: r.created_at):
        if args.tenant is None or record.tenant_id == args.tenant:
            print(json.dumps(record.public()))
    return 0


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from events_api.access.key_topic import KeyStore

    record = KeyStore(settings).revoke(args.key_id)
    print(f"key {record.key_id} revoked at {record.revoked_at}")
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from changefeed.demo import run_demo

    return run_demo(
        settings, duration_s=args.duration, rate=args.rate, keep_running=args.keep_running
    )


if __name__ == "__main__":
    sys.exit(main())
