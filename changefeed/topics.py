"""The project's topics, declared once, created and checked idempotently.

Every topic carries ``retention.ms`` from :attr:`Settings.retention_ms` (7 days by default).
Faust changelog topics are declared here as well, with the same partition count as the
``actions`` topic their tables are fed from: Faust refuses to run a table whose changelog
and source differ in partitions, and declaring them ourselves means the worker never
relies on broker auto-creation (which is off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from changefeed.config import Settings
from changefeed.errors import TopicError, TopicMissingError
from changefeed.kafka.admin import admin_client


class Cleanup(StrEnum):
    DELETE = "delete"
    COMPACT = "compact"
    COMPACT_DELETE = "compact,delete"


# Tables of processors/, and how their changelogs are cleaned. Subject state is kept past
# retention (an update after eight days still needs its predecessor to diff against);
# indexes and the dedupe window expire with retention.
TABLE_CLEANUP: dict[str, Cleanup] = {
    "subject_state": Cleanup.COMPACT,
    "seen_events": Cleanup.COMPACT_DELETE,
    # Schedules outlive retention (a monthly schedule must survive a quiet week).
    "schedules": Cleanup.COMPACT,
}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    cleanup: Cleanup = Cleanup.DELETE
    extra: dict[str, str] = field(default_factory=dict)
    replication_factor: int = 1

    def configs(self, retention_ms: int) -> dict[str, str]:
        return {
            "retention.ms": str(retention_ms),
            "cleanup.policy": self.cleanup.value,
            **self.extra,
        }


def changelog_topic(settings: Settings, table: str) -> str:
    """Faust's changelog name for ``table`` of the app ``settings.app_id``."""
    return f"{settings.app_id}-{table}-changelog"


def project_topics(settings: Settings) -> list[TopicSpec]:
    """The declarative list: every topic changefeed reads or writes."""
    n = settings.partitions
    topics = [
        TopicSpec(settings.topic("actions"), n),
        TopicSpec(settings.topic("changes"), n),
        TopicSpec(settings.topic("actions.dlq"), 1),
        # API keys of the events API: the latest record per key id (events_api/access/).
        TopicSpec(settings.topic("api_keys"), 1, Cleanup.COMPACT),
        # Webhook subscriptions, secrets sealed (webhooks/subscription_topic.py).
        TopicSpec(settings.topic("webhooks"), 1, Cleanup.COMPACT),
        # Failed webhook deliveries, on the partition of their change (webhooks/job_topic.py);
        # they expire with retention, as the changes they carry do.
        TopicSpec(settings.topic("webhook_jobs"), n, Cleanup.COMPACT_DELETE),
    ]
    topics += [
        TopicSpec(changelog_topic(settings, table), n, cleanup)
        for table, cleanup in TABLE_CLEANUP.items()
    ]
    return topics


@dataclass(frozen=True)
class TopicReport:
    """What ``ensure_topics`` found and did for one topic."""

    name: str
    created: bool = False
    corrected: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.created:
            return f"{self.name}: created"
        parts = [f"corrected {k}: {old} -> {new}" for k, (old, new) in self.corrected.items()]
        parts += [f"DRIFT {d}" for d in self.drift]
        return f"{self.name}: " + ("; ".join(parts) if parts else "ok")


def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None) -> list[TopicReport]:
    """Create missing topics, correct config drift, report partition drift.

    Idempotent: run it at every start. Config drift (``retention.ms``, ``cleanup.policy``)
    is corrected in place; a partition count that differs from the declaration is reported
    and left alone, because changing it would move keys to other partitions and break the
    per-subject order the product relies on.
    """
    specs = project_topics(settings) if specs is None else specs
    with admin_client(settings.bootstrap) as admin:
        existing = set(admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created = _create(admin, missing, settings.retention_ms)
        reports = [TopicReport(s.name, created=True) for s in missing if s.name in created]
        present = [s for s in specs if s.name in existing or s.name not in created]
        if present:
            reports += _reconcile(admin, present, settings.retention_ms)
    order = {s.name: i for i, s in enumerate(specs)}
    return sorted(reports, key=lambda r: order[r.name])


def _create(admin, specs: list[TopicSpec], retention_ms: int) -> set[str]:  # type: ignore[no-untyped-def]
    if not specs:
        return set()
    new = [
        NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.configs(retention_ms))
        for s in specs
    ]
    try:
        admin.create_topics(new, raise_errors=False, wait_for_metadata=True)
    except TopicAlreadyExistsError:
        pass  # another process created it between our list and our create
    except KafkaError as exc:
        raise TopicError(f"creating topics failed: {exc}") from exc
    return {s.name for s in specs}


def describe_topics(settings: Settings, names: list[str]) -> dict[str, dict[str, object]]:
    """Partition count and the topic-level configs of each name (the ``kafka-configs`` view)."""
    with admin_client(settings.bootstrap) as admin:
        return _describe(admin, names)


def _describe(admin, names: list[str]) -> dict[str, dict[str, object]]:  # type: ignore[no-untyped-def]
    try:
        meta = {t["name"]: t for t in admin.describe_topics(names)}
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        configs = admin.describe_configs(resources, config_filter="all")["topic"]
    except KafkaError as exc:
        raise TopicError(f"describing topics {names} failed: {exc}") from exc
    out: dict[str, dict[str, object]] = {}
    for name in names:
        topic_meta = meta.get(name)
        if topic_meta is None or topic_meta.get("error_code", 0) != 0:
            raise TopicMissingError(f"topic {name} does not exist")
        out[name] = {
            "partitions": len(topic_meta["partitions"]),
            "configs": {k: v["value"] for k, v in configs.get(name, {}).items()},
        }
    return out


def _reconcile(admin, specs: list[TopicSpec], retention_ms: int) -> list[TopicReport]:  # type: ignore[no-untyped-def]
    described = _describe(admin, [s.name for s in specs])
    reports = []
    fixes = []
    for spec in specs:
        actual = described[spec.name]
        actual_configs: dict[str, str] = actual["configs"]  # type: ignore[assignment]
        wanted = spec.configs(retention_ms)
        corrected = {
            k: (actual_configs.get(k), v) for k, v in wanted.items() if actual_configs.get(k) != v
        }
        drift = []
        if actual["partitions"] != spec.partitions:
            drift.append(
                f"partitions: declared {spec.partitions}, topic has {actual['partitions']}"
                " (not changed: it would re-key subjects)"
            )
        if corrected:
            fixes.append(
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    spec.name,
                    configs={k: v for k, (_, v) in corrected.items()},
                )
            )
        reports.append(TopicReport(spec.name, corrected=corrected, drift=drift))
    if fixes:
        try:
            admin.alter_configs(fixes)
        except KafkaError as exc:
            raise TopicError(f"correcting topic configs failed: {exc}") from exc
    return reports
