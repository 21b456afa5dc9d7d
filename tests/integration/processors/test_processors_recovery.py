"""Tables survive a restart: after a graceful stop and after SIGKILL, the worker restores
its tables from the changelogs and carries on as if it had never stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from processors_harness import (
    ActionPublisher,
    TopicReader,
    WorkerProcess,
    action,
    decode_change,
    read_changelog,
)

from changefeed.config import Settings
from processors import models


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_tables_are_recovered_after_restart(settings: Settings, tmp_path: Path, how: str) -> None:
    worker = WorkerProcess(settings, tmp_path).start()
    publisher = ActionPublisher(settings)
    changes = TopicReader(settings, [settings.topic("changes")])
    subjects = [f"s{n}" for n in range(20)]
    try:
        worker.wait_ready()
        publisher.publish(
            action(f"{s}-1", "create", {"s": s, "n": 1}, subject_id=s, version=1) for s in subjects
        )
        changes.wait_for(len(subjects))
        if how == "kill":
            worker.kill()
        else:
            assert worker.stop() == 0, worker.tail()

        worker.start().wait_ready()
        # a re-sent create is still a duplicate; an update diffs against the restored state
        publisher.publish(
            action(f"{s}-1", "create", {"s": s, "n": 1}, subject_id=s, version=1) for s in subjects
        )
        publisher.publish(
            action(f"{s}-2", "update", {"s": s, "n": 2}, subject_id=s, version=2) for s in subjects
        )
        records = changes.wait_for(2 * len(subjects))
        changes.settle()
        assert len(changes.records) == 2 * len(subjects)
        updates = [decode_change(r) for r in records[len(subjects) :]]
        for update in updates:
            assert json.loads(update["previous_payload"])["n"] == 1
            assert update["field_changes"] == {"/n": {"old": "1", "new": "2"}}
            assert update["subject_sequence"] == 1
        assert worker.metrics()["duplicates"] == len(subjects)
    finally:
        publisher.close()
        changes.close()
        worker.stop()
    state = read_changelog(settings, models.SUBJECT_STATE)
    for s in subjects:
        restored = models.SubjectState.decode(state[f"acme/expense_report/{s}".encode()])
        assert json.loads(restored.payload or "") == {"s": s, "n": 2}
        assert restored.sequence == 2
