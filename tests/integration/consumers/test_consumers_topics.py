"""Readers of the topics the processors wrote: deserializers, file exports (Avro, JSON
lines, Parquet; interrupted and resumed), reprocessing into a fresh topic, retention."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from consumers_harness import actions_for, fresh_settings, publish_actions, read_topic
from kafka import KafkaConsumer, KafkaProducer
from worker_process import WorkerProcess, wait_until

import changefeed.export_formats
from changefeed.cli import main
from changefeed.client import ChangeEvent
from changefeed.config import BrokerSettings, Settings
from changefeed.deserializers import ChangeDeserializer, Undecodable
from changefeed.export import export
from changefeed.export_formats import json_default
from changefeed.replay import ReplayWindow
from changefeed.reprocess import ReprocessError, ReprocessPlan, reprocess
from changefeed.retention import topic_extents

SUBJECTS = [f"s{n:02d}" for n in range(30)]
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass
class Deployment:
    settings: Settings
    first: list[str]  # change ids of the first batch of actions
    second: list[str]  # ... and of the second, published after ``middle``
    middle: datetime
    garbage: bytes


def between_milliseconds() -> datetime:
    """A time strictly after every record produced so far and before every later one
    (record times are whole milliseconds)."""
    start_ms = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 < start_ms + 2:
        pass  # at most two milliseconds
    middle = datetime.fromtimestamp((start_ms + 1) / 1000, UTC)
    return middle


@pytest.fixture(scope="module")
def deployment(
    kafka_bootstrap: str, broker_settings: BrokerSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("topics")
    settings = fresh_settings(kafka_bootstrap, broker_settings, tmp / "worker")
    first_actions = actions_for(SUBJECTS, 3, run="x")
    first = publish_actions(settings, first_actions)
    middle = between_milliseconds()
    second_actions = actions_for(SUBJECTS, 3, first=3, run="x")
    late = actions_for(SUBJECTS[:5], 1, first=1, run="late")  # older versions: late changes
    second = publish_actions(settings, second_actions + late)
    publish_actions(settings, second_actions[:10])  # duplicates: no change
    garbage = b"\xc3\x01not an action at all"
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    producer.send(settings.topic("actions"), key=b"acme/expense_report/s00", value=garbage)
    producer.flush()
    producer.close()
    worker = WorkerProcess(settings, tmp).start()
    try:
        worker.wait_ready(180)
        wait_until(
            lambda: len(read_topic(settings, settings.topic("actions.dlq"))) == 1,
            180,
            "the garbage dead-lettered",
        )
        wait_until(
            lambda: (
                len(read_topic(settings, settings.topic("changes"))) == len(first) + len(second)
            ),
            60,
            "every change committed",
        )
    finally:
        worker.stop()
    yield Deployment(settings, first, second, middle, garbage)


# -- deserializers ---------------------------------------------------------------------------


def test_deserializers_read_what_the_processors_wrote(deployment: Deployment) -> None:
    settings = deployment.settings
    changes = read_topic(settings, settings.topic("changes"))
    as_dict = ChangeDeserializer("changes")
    typed = ChangeDeserializer(settings.topic("changes"), typed=True)
    decoded = [as_dict(r.value) for r in changes]
    assert sorted(d["change_id"] for d in decoded) == sorted(deployment.first + deployment.second)
    events = [typed(r.value) for r in changes]
    assert all(isinstance(e, ChangeEvent) for e in events)
    late = [e for e in events if e.late]
    assert len(late) == 5 and all(e.previous_payload is not None for e in late)
    update = next(e for e in events if e.version == 4 and not e.late)
    assert update.field_changes["/amount"].old == 3 and update.field_changes["/amount"].new == 4

    actions = ChangeDeserializer("actions", on_error="return")
    read = [actions(r.value) for r in read_topic(settings, settings.topic("actions"))]
    bad = [r for r in read if isinstance(r, Undecodable)]
    assert len(bad) == 1 and bad[0].value == deployment.garbage
    dlq = ChangeDeserializer("actions.dlq")
    letters = [dlq(r.value) for r in read_topic(settings, settings.topic("actions.dlq"))]
    assert len(letters) == 1 and letters[0]["topic"] == settings.topic("actions")
    assert letters[0]["reason_code"] == "unknown_schema"
    assert letters[0]["sealed"] and deployment.garbage not in (letters[0]["value"] or b"")


def readme_block(marker: str) -> str:
    """The python block of the README that follows ``<!-- marker -->``."""
    text = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    after = text.split(f"<!-- {marker} -->", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("library", ["kafka-python", "aiokafka"])
def test_readme_consumer_examples_run_as_written(
    deployment: Deployment, library: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHANGEFEED_BOOTSTRAP", deployment.settings.bootstrap)
    monkeypatch.setenv("CHANGEFEED_TOPIC_PREFIX", deployment.settings.topic_prefix)
    printed = io.StringIO()
    code = compile(readme_block(f"example: {library}"), f"README {library}", "exec")
    with contextlib.redirect_stdout(printed):
        exec(code, {"__name__": "readme_example"})
    ids = [line.split()[0] for line in printed.getvalue().splitlines()]
    assert sorted(ids) == sorted(deployment.first + deployment.second)


# -- exports ---------------------------------------------------------------------------------


def rows_of(directory: Path, fmt: str) -> list[dict[str, Any]]:
    """Every row of every part file, as the JSON lines export writes them."""
    rows: list[dict[str, Any]] = []
    for part in sorted(directory.glob(f"part-*.{fmt}")):
        if fmt == "jsonl":
            rows += [json.loads(line) for line in part.read_text().splitlines()]
        elif fmt == "avro":
            with part.open("rb") as f:
                reader = fastavro.reader(f)
                assert reader.writer_schema["name"] == "changefeed.export.ChangeEventRow"
                rows += [json.loads(json.dumps(r, default=json_default)) for r in reader]
    return rows


def by_position(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["partition"], r["offset"]))


def same_records(files: list[dict[str, Any]], whole: list[dict[str, Any]]) -> None:
    """The same rows (duplicates would show), each partition's in offset order."""
    assert by_position(files) == by_position(whole)
    for partition in {r["partition"] for r in files}:
        offsets = [r["offset"] for r in files if r["partition"] == partition]
        assert offsets == sorted(offsets)


def run_export(settings: Settings, directory: Path, fmt: str, **options: Any) -> Any:
    return export(
        settings,
        ReplayWindow(since=EPOCH),
        source=settings.topic("changes"),
        directory=directory,
        fmt=fmt,  # type: ignore[arg-type]
        **options,
    )


def test_avro_container_files_hold_the_jsonl_export(deployment: Deployment, tmp_path: Path) -> None:
    settings = deployment.settings
    jsonl = run_export(settings, tmp_path / "jsonl", "jsonl")
    avro = run_export(settings, tmp_path / "avro", "avro", max_file_bytes=16 * 1024)
    assert len(avro.files) > 2, "files roll by size"
    assert all(not n.endswith(".inprogress") for n in avro.files)
    expected = by_position(rows_of(tmp_path / "jsonl", "jsonl"))
    assert len(expected) == jsonl.written == len(deployment.first) + len(deployment.second)
    assert by_position(rows_of(tmp_path / "avro", "avro")) == expected
    null = run_export(settings, tmp_path / "null", "avro", avro_codec="null")
    assert null.written == jsonl.written
    assert by_position(rows_of(tmp_path / "null", "avro")) == expected


def test_parquet_export_reads_back_with_duckdb(deployment: Deployment, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    duckdb = pytest.importorskip("duckdb")
    report = run_export(deployment.settings, tmp_path / "pq", "parquet")
    files = [str(tmp_path / "pq" / name) for name in report.files]
    count, late, amounts = duckdb.sql(
        f"select count(*), count(*) filter (where value.late), "
        f"count(distinct value.change_id) from read_parquet({files!r})"
    ).fetchall()[0]
    assert count == amounts == len(deployment.first) + len(deployment.second)
    assert late == 5
    (changed_at,) = duckdb.sql(
        f"select max(value.subject_changed_at) from read_parquet({files!r})"
    ).fetchall()[0]
    assert changed_at.year == 2023  # timestamps are timestamps


def test_an_interrupted_export_resumes_without_duplicates_or_gaps(
    deployment: Deployment, tmp_path: Path
) -> None:
    settings = deployment.settings
    run_export(settings, tmp_path / "whole", "avro", max_file_bytes=8 * 1024)
    whole = rows_of(tmp_path / "whole", "avro")
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the middle of a file
        run_export(settings, tmp_path / "cut", "avro", max_file_bytes=8 * 1024, stop_after=37)
    assert len(rows_of(tmp_path / "cut", "avro")) == 37  # the open file was closed cleanly
    resumed = run_export(settings, tmp_path / "cut", "avro", resume=True)
    assert resumed.resumed
    same_records(rows_of(tmp_path / "cut", "avro"), whole)


def test_a_killed_export_resumes_from_its_last_finished_file(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash (no chance to close the file): the half-written file is dropped on resume
    and its records are read again from the checkpoint."""
    settings = deployment.settings
    run_export(settings, tmp_path / "whole", "jsonl", max_file_bytes=4 * 1024)
    whole = rows_of(tmp_path / "whole", "jsonl")
    real_write = changefeed.export_formats.JsonLinesWriter.write
    calls = {"n": 0}

    def crash_after_50(self: Any, record: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 50:
            raise SystemExit("killed")
        real_write(self, record)

    monkeypatch.setattr(changefeed.export_formats.JsonLinesWriter, "write", crash_after_50)
    with pytest.raises(SystemExit):
        run_export(settings, tmp_path / "cut", "jsonl", max_file_bytes=4 * 1024)
    assert list((tmp_path / "cut").glob("*.inprogress")), "the crash left a half-written file"
    monkeypatch.setattr(changefeed.export_formats.JsonLinesWriter, "write", real_write)
    run_export(settings, tmp_path / "cut", "jsonl", resume=True)
    assert not list((tmp_path / "cut").glob("*.inprogress"))
    same_records(rows_of(tmp_path / "cut", "jsonl"), whole)


def test_replay_command_writes_files_and_a_summary(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    settings = deployment.settings
    monkeypatch.setenv("CHANGEFEED_TOPIC_PREFIX", settings.topic_prefix)
    out = tmp_path / "cli"
    argv = ["--bootstrap", settings.bootstrap, "replay", "--since", "-1d", "--format", "avro"]
    assert main([*argv, "--output", str(out)]) == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    total = len(deployment.first) + len(deployment.second)
    assert summary.startswith(f"exported {total:,} of {total:,} records read to 1 file(s)")
    assert main([*argv, "--output", str(out)]) == 1  # not over an existing export
    assert "--resume" in capsys.readouterr().err
    assert main([*argv, "--output", str(out), "--resume"]) == 0  # complete: nothing to do
    assert len(rows_of(out, "avro")) == total


# -- reprocess -------------------------------------------------------------------------------


def decoded(records: list[Any]) -> dict[str, dict[str, Any]]:
    as_dict = ChangeDeserializer("changes")
    out = {}
    for record in records:
        change = as_dict(record.value)
        change.pop("created_at")  # when the change was derived: the one field that differs
        headers = {k: v for k, v in record.headers if k != "ce_time"}
        out[change["change_id"]] = {
            "partition": record.partition,
            "key": record.key,
            "headers": headers,
            "change": change,
        }
    return out


def committed_offsets(settings: Settings, group: str) -> dict[int, int | None]:
    from kafka import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=group)
    try:
        tps = [TopicPartition(settings.topic("actions"), p) for p in range(settings.partitions)]
        return {tp.partition: consumer.committed(tp) for tp in tps}
    finally:
        consumer.close()


def test_reprocess_equals_the_live_changes_of_the_window(deployment: Deployment) -> None:
    settings = deployment.settings
    live_group = committed_offsets(settings, settings.app_id)
    target = f"{settings.topic_prefix}rebuilt.changes"
    plan = ReprocessPlan(
        since=deployment.middle,
        until=None,
        app_id=f"{settings.app_id}-rebuild",
        target_topic=target,
    )
    report = reprocess(settings, plan, progress_stream=io.StringIO())
    assert report.folded == len(deployment.first)
    assert report.written == len(deployment.second)
    live = decoded(read_topic(settings, settings.topic("changes")))
    rebuilt = decoded(read_topic(settings, target))
    assert sorted(rebuilt) == sorted(deployment.second)
    assert rebuilt == {cid: live[cid] for cid in deployment.second}
    assert committed_offsets(settings, settings.app_id) == live_group  # live group untouched
    assert set(committed_offsets(settings, plan.app_id).values()) != {None}
    with pytest.raises(ReprocessError, match="already holds records"):
        reprocess(settings, plan)


@pytest.mark.parametrize(
    ("app_id", "topic", "error"),
    [
        ("live", "fresh", "new app"),
        ("new", "changes", "live topic"),
        ("new", "actions", "live topic"),
        ("new", "LIVE-subject_state-changelog", "live topic"),
    ],
)
def test_reprocess_refuses_to_touch_the_live_deployment(
    deployment: Deployment, app_id: str, topic: str, error: str
) -> None:
    settings = deployment.settings
    live_app = settings.app_id
    plan = ReprocessPlan(
        since=deployment.middle,
        until=None,
        app_id=live_app if app_id == "live" else "rebuild",
        target_topic=topic.replace("LIVE", live_app)
        if topic.startswith("LIVE")
        else settings.topic(topic),
    )
    with pytest.raises(ReprocessError, match=error):
        plan.check(settings)


# -- retention -------------------------------------------------------------------------------


def test_retention_reports_how_far_each_topic_reaches(
    deployment: Deployment, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = deployment.settings
    extents = {e.topic: e for e in topic_extents(settings)}
    actions = extents[settings.topic("actions")]
    assert actions.oldest is not None and actions.newest is not None
    assert actions.oldest <= deployment.middle <= actions.newest
    assert actions.retention_ms == settings.retention_ms and actions.cleanup == "delete"
    assert extents[settings.topic("api_keys")].cleanup == "compact"
    changes = extents[settings.topic("changes")]
    assert changes.records >= len(deployment.first) + len(deployment.second)
    monkeypatch.setenv("CHANGEFEED_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("CHANGEFEED_APP_ID", settings.app_id)
    assert main(["--bootstrap", settings.bootstrap, "retention"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "topic",
        "partitions",
        "records",
        "oldest",
        "newest",
        "retention",
        "cleanup",
    ]
    assert any(line.startswith(settings.topic("actions")) and "7d" in line for line in lines)


def test_an_undecodable_record_is_skipped_and_counted(
    deployment: Deployment, tmp_path: Path
) -> None:
    """``actions`` holds one record that is no action: Avro skips it, JSON lines keep it raw."""
    settings = deployment.settings
    window = ReplayWindow(since=EPOCH)
    common = {"source": settings.topic("actions")}
    avro = export(settings, window, directory=tmp_path / "a", fmt="avro", **common)
    jsonl = export(settings, window, directory=tmp_path / "j", fmt="jsonl", **common)
    assert avro.skipped == 1 and avro.written == jsonl.written - 1
    assert "1 undecodable record(s) skipped" in avro.describe()
    raw = [r for r in rows_of(tmp_path / "j", "jsonl") if "undecodable" in r["value"]]
    assert [bytes.fromhex(r["value"]["raw"]) for r in raw] == [deployment.garbage]
