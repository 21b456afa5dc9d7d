from changefeed.config import Settings
from changefeed.topics import TABLE_CLEANUP, Cleanup, changelog_topic, project_topics


def test_every_topic_keeps_the_one_retention_setting() -> None:
    s = Settings(retention_ms=123_456_789)
    for spec in project_topics(s):
        assert spec.configs(s.retention_ms)["retention.ms"] == "123456789"


def test_core_topics_are_declared_with_prefix() -> None:
    names = {t.name for t in project_topics(Settings(topic_prefix="p."))}
    assert {"p.actions", "p.changes", "p.actions.dlq"} <= names


def test_changelogs_match_the_source_partitions_and_are_compacted() -> None:
    s = Settings(partitions=7, app_id="app")
    specs = {t.name: t for t in project_topics(s)}
    actions = specs["actions"]
    for table in TABLE_CLEANUP:
        changelog = specs[changelog_topic(s, table)]
        assert changelog.partitions == actions.partitions == 7
        assert changelog.cleanup in (Cleanup.COMPACT, Cleanup.COMPACT_DELETE)


def test_subject_state_outlives_retention_but_indexes_expire() -> None:
    assert TABLE_CLEANUP["subject_state"] is Cleanup.COMPACT
    assert TABLE_CLEANUP["seen_events"] is Cleanup.COMPACT_DELETE


def test_a_changelog_is_declared_for_each_table_of_the_processors_and_no_other() -> None:
    from processors import models

    assert set(TABLE_CLEANUP) == set(models.TABLE_NAMES)
