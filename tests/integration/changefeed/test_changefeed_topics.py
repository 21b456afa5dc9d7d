"""Topics as code against the real broker: created once, drift corrected or reported."""

from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from worker_process import wait_until

from changefeed.config import SEVEN_DAYS_MS, Settings
from changefeed.kafka.admin import admin_client
from changefeed.topics import TopicSpec, describe_topics, ensure_topics, project_topics


def test_every_project_topic_keeps_seven_days(settings: Settings) -> None:
    names = [t.name for t in project_topics(settings)]
    described = describe_topics(settings, names)
    assert set(described) == set(names)
    for name, info in described.items():
        assert info["configs"]["retention.ms"] == str(SEVEN_DAYS_MS), name


def test_ensure_is_idempotent(settings: Settings) -> None:
    again = ensure_topics(settings)
    assert [r.describe().split(": ", 1)[1] for r in again] == ["ok"] * len(again)


def test_retention_drift_is_corrected(settings: Settings) -> None:
    changes = settings.topic("changes")
    with admin_client(settings.bootstrap) as admin:
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, changes, configs={"retention.ms": "1000"})]
        )
    # The broker applies an accepted change from its metadata log a moment later.
    wait_until(
        lambda: describe_topics(settings, [changes])[changes]["configs"]["retention.ms"] == "1000",
        30,
        "the altered retention to show",
    )
    reports = {r.name: r for r in ensure_topics(settings)}
    assert reports[changes].corrected == {"retention.ms": ("1000", str(SEVEN_DAYS_MS))}
    assert describe_topics(settings, [changes])[changes]["configs"]["retention.ms"] == str(
        SEVEN_DAYS_MS
    )


def test_partition_drift_is_reported_not_changed(kafka_bootstrap: str, unique: str) -> None:
    s = Settings(bootstrap=kafka_bootstrap, topic_prefix=f"d{unique}.", partitions=2)
    with admin_client(kafka_bootstrap) as admin:
        admin.create_topics([NewTopic(s.topic("actions"), 3, 1)])
    spec = TopicSpec(s.topic("actions"), 2)
    (report,) = ensure_topics(s, [spec])
    assert report.drift and "declared 2, topic has 3" in report.drift[0]
    assert describe_topics(s, [spec.name])[spec.name]["partitions"] == 3


def test_topics_named_by_a_run_are_deleted_and_no_other(settings: Settings, unique: str) -> None:
    from changefeed.kafka.admin import delete_topics_named

    ours = [f"del{unique}.a", f"x-del{unique}-b"]
    other = f"keep{unique}.c"
    ensure_topics(settings, [TopicSpec(name, 1) for name in [*ours, other]])
    assert delete_topics_named(settings.bootstrap, [f"del{unique}"]) == sorted(ours)
    with admin_client(settings.bootstrap) as admin:
        wait_until(lambda: not set(ours) & set(admin.list_topics()), 30, "the deleted topics to go")
        assert other in admin.list_topics()
    assert delete_topics_named(settings.bootstrap, []) == []
