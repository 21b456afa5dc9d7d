"""The processors' job written with Quix Streams: a comparator for ``bench/bench_pipeline.py``.

Reads ``actions`` (raw Avro ``ApiAction`` values, keys ``tenant/subject_type/subject_id``) in
a Quix Streams ``Application`` with ``processing_guarantee="exactly-once"``, RocksDB state
with its changelog topic (Quix's defaults) and a commit interval of 0.1 s, and writes Avro
``ChangeEvent`` records to ``<prefix>quix.changes`` (same partition count, keyed by the
subject). Per record, like :class:`processors.pipeline.ActionPipeline`: decode with the
project's codec (the native reader and writer too when installed, as in the worker; the
timestamp as int micros, as the worker reads it), validate, dedupe on ``event_id``, order
guard (``version``, else ``occurred_at``, via :func:`processors.models.is_older`), redact with
:class:`schemas.masking.Redactor` (the worker's paths and derived key), diff with
:func:`processors.diff.diff_payloads` and :func:`processors.diff.to_avro_changes`, change id
from :func:`schemas.identity.change_id`, the same ``ChangeEvent`` fields and CloudEvents
headers as the worker. The outcome rules (late, no-op, create, delete, custom, API key
fingerprints) follow the worker's.

What it does differently from ``changefeed worker``:

* **State writes per change: 2, as the worker**, but smaller: one entry per event id (the
  wall-clock ms it was first seen) and one per subject (payload, deleted, version,
  occurred_at, sequence). The worker's entries also keep what it needs to diff a late action
  against its true predecessor: the payload each change left (in its id's entry) and the
  positions of the subject's recent changes (in its state). A no-op writes the id entry (and
  the subject's advanced position when in order), as in the worker.
* **Late actions are diffed against the subject's current state**, not against their true
  predecessor (there is no record of earlier payloads here). So a late action's
  ``previous_payload``/``payload_changes`` differ from the worker's, and a late update equal
  to the current state counts as a no-op here while the worker may emit it.
* **Dedupe scope and window.** Quix state is scoped to the message key, so an event id is
  remembered per subject (the worker: per partition). An id counts as a duplicate while
  ``now - first_seen < retention_ms``; expired ids are **never purged** (the worker's RocksDB
  drops them at compaction, by time to live), so this state grows without bound.
* **No dead-letter topic.** A bad record (undecodable, unknown schema, invalid field, key
  not the subject, bad payload, or any error in the per-record logic) is counted and
  skipped; nothing is produced for it.
* **No feed index, no events API, no tables to serve**: no SQLite index writer child (the
  worker's indexes every change on the same two cores), no web server, no health or metrics
  endpoint, no record-size guard.
* **Output partition**: chosen by the producer from the key (``murmur2_random``, the same
  hash as the Java client and kafka-python, so the action's partition when ``actions`` was
  filled by either); the worker writes to the action's partition explicitly.
* **Transactions** are Quix's own (a checkpoint every 0.1 s commits the changes, the state
  changelog and the offsets together); the worker also commits early when caught up.

Run by ``bench/bench_pipeline.py`` (phase ``quix``) in a subprocess, with the settings in the
``CHANGEFEED_*`` environment like ``changefeed worker``. ``QUIX_JOB_MARKER`` names a file
written once, when the first record is processed (``time.monotonic()`` and the process's CPU
seconds then); ``QUIX_JOB_STATS`` a file written at exit with the outcome counters. The job
runs until SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from changefeed.config import Settings
from changefeed.topics import TopicSpec, ensure_topics
from processors.diff import diff_payloads, to_avro_changes
from processors.models import is_older, subject_key
from schemas.cloudevents import cloudevent_headers
from schemas.codec import Codec, default_codec
from schemas.identity import change_id
from schemas.masking import Redactor

ACTION_SCHEMA = "changefeed.ApiAction"
CHANGE_SCHEMA = "changefeed.ChangeEvent"
OUTPUT_TOPIC = "quix.changes"
COMMIT_INTERVAL_S = 0.1
_STATE_ACTIONS = ("create", "update", "delete")
_REQUIRED_TEXT = ("event_id", "request_id", "tenant_id", "event_type", "subject_type", "subject_id")
_FINGERPRINT = re.compile(r"^[a-z0-9-]{2,32}:[0-9a-f]{8,128}$")
_JSON_TEXT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)
_SUBJECT = "s"  # state key of the subject's state, under the message key
_SEEN = "e:"  # state key prefix of an event id


class KeyState(Protocol):
    """What the job needs of Quix's per-key ``State``."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


class BadAction(Exception):
    """A record the job skips (the worker would dead-letter it)."""


class ChangeJob:
    """The per-record logic: ``process`` returns the change to produce, or ``None``."""

    def __init__(
        self,
        codec: Codec,
        redactor: Redactor,
        retention_ms: int,
        source: str,
        clock: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:
        self.codec = codec
        self.redactor = redactor
        self.retention_ms = retention_ms
        self.source = source
        self.clock = clock
        self.counts = dict.fromkeys(
            ("processed", "changed", "late", "duplicates", "noop", "bad"), 0
        )

    def process(
        self, value: bytes | None, key: bytes | None, state: KeyState
    ) -> tuple[bytes, list[tuple[str, bytes]]] | None:
        self.counts["processed"] += 1
        try:
            return self._process(value, key, state)
        except Exception:  # noqa: BLE001 - counted and skipped, see the module docstring
            self.counts["bad"] += 1
            return None

    def _process(
        self, value: bytes | None, key: bytes | None, state: KeyState
    ) -> tuple[bytes, list[tuple[str, bytes]]] | None:
        if value is None:
            raise BadAction("tombstone")
        record = self.codec.decode(value, ACTION_SCHEMA, timestamps="micros")
        for name in _REQUIRED_TEXT:
            if not record.get(name):
                raise BadAction(f"{name} is empty")
        event_id = record["event_id"]
        subject = subject_key(record["tenant_id"], record["subject_type"], record["subject_id"])
        if "\x00" in event_id or "\x00" in record["request_id"] or "\x00" in subject:
            raise BadAction("NUL in an id")
        if key is None or key.decode("utf-8", "replace") != subject:
            raise BadAction("the record key is not the subject")
        now_us = self.clock()
        seen_ms = state.get(_SEEN + event_id)
        if seen_ms is not None and now_us // 1000 - seen_ms < self.retention_ms:
            self.counts["duplicates"] += 1
            return None

        action = record["action"]
        version = record.get("version")
        occurred_at = _micros(record["occurred_at"])
        if (version is not None and version < 0) or occurred_at <= 0:
            raise BadAction("bad version or occurred_at")
        if not 0 <= record.get("criticality", 0) <= 5:
            raise BadAction("criticality out of range")
        content_type = record.get("payload_content_type", "")
        payload_text, payload = _payload(record, action, content_type)
        redacted = self.redactor.redact(payload) if payload is not None else None
        if payload_text is not None and (redacted is not payload or not _is_json(content_type)):
            payload_text = _JSON_TEXT.encode(redacted)  # as the worker: masked, or a JSON string

        current = state.get(_SUBJECT)  # [payload, deleted, version, occurred_at, sequence]
        changes_state = action in _STATE_ACTIONS
        late = (
            changes_state
            and current is not None
            and current[3] is not None
            and is_older(version, occurred_at, current[2], current[3])
        )
        # Late: against the current state (the worker: the true predecessor from history).
        if changes_state and current is not None and not current[1]:
            previous_text = current[0]
        else:
            previous_text = None

        if action == "custom":
            operations: Any = ([], {})
        else:
            previous = json.loads(previous_text) if previous_text is not None else None
            diff = diff_payloads(previous, redacted)
            if action == "delete":
                noop = not late and current is not None and current[1]
            else:
                noop = previous_text is not None and not diff.changed
            if noop:
                state.set(_SEEN + event_id, now_us // 1000)
                if not late and current is not None:
                    state.set(_SUBJECT, [current[0], current[1], version, occurred_at, current[4]])
                self.counts["noop"] += 1
                return None
            operations = to_avro_changes(diff)

        sequence = current[4] if current is not None else 0
        cid = change_id(event_id)
        change = self._change_event(
            record,
            cid,
            previous_text,
            payload_text,
            operations,
            late,
            sequence,
            occurred_at,
            now_us,
        )
        encoded = self.codec.encode(CHANGE_SCHEMA, change)
        headers = cloudevent_headers(
            id=cid,
            type=record["event_type"],
            source=change["source"],
            subject=subject,
            time=occurred_at,
            content_type="application/avro",
        )
        state.set(_SEEN + event_id, now_us // 1000)
        if current is not None and (late or not changes_state):
            state.set(_SUBJECT, [*current[:4], sequence + 1])
        elif not changes_state:
            state.set(_SUBJECT, [None, False, None, None, sequence + 1])
        else:
            state.set(
                _SUBJECT, [payload_text, action == "delete", version, occurred_at, sequence + 1]
            )
        self.counts["changed"] += 1
        self.counts["late"] += late
        return encoded, headers

    def _change_event(
        self,
        source: dict[str, Any],
        cid: str,
        previous_text: str | None,
        current_text: str | None,
        operations: Any,
        late: bool,
        sequence: int,
        occurred_at: int,
        now_us: int,
    ) -> dict[str, Any]:
        """The fields ``processors.pipeline`` gives a ``ChangeEvent``."""
        payload_changes, field_changes = operations
        return {
            "change_id": cid,
            "event_id": source["event_id"],
            "request_id": source["request_id"],
            "tenant_id": source["tenant_id"],
            "action": source["action"],
            "event_type": source["event_type"],
            "subject_type": source["subject_type"],
            "subject_id": source["subject_id"],
            "subject_ref": source.get("subject_ref"),
            "version": source.get("version"),
            "actor": self._actor(source.get("actor") or {}),
            "criticality": source.get("criticality", 0),
            "code": source.get("code", 0),
            "internal": source.get("internal", True),
            "payload_content_type": source.get("payload_content_type", "application/json"),
            "previous_payload": previous_text,
            "current_payload": current_text,
            "payload_changes": payload_changes,
            "field_changes": field_changes,
            "late": late,
            "subject_sequence": sequence,
            "subject_changed_at": occurred_at,
            "created_at": now_us,
            "source": source.get("source") or self.source,
        }

    def _actor(self, actor: dict[str, Any]) -> dict[str, Any]:
        fingerprint = actor.get("api_key_fingerprint")
        if fingerprint and not _FINGERPRINT.match(fingerprint):
            actor = {**actor, "api_key_fingerprint": self.redactor.fingerprint_api_key(fingerprint)}
        return actor


def _micros(moment: datetime | int) -> int:
    if isinstance(moment, datetime):
        return (moment - _EPOCH) // _ONE_MICROSECOND
    return int(moment)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _payload(record: dict[str, Any], action: str, content_type: str) -> tuple[str | None, Any]:
    """(text, parsed) of the action's payload, as the worker reads it."""
    text = record.get("payload")
    if action in ("create", "update"):
        if text is None or not _is_json(content_type):
            raise BadAction(f"a {action} needs a JSON payload")
        payload = json.loads(text)
        if type(payload) is not dict:
            raise BadAction("the payload is not a JSON object")
        return text, payload
    if action == "delete" or text is None:
        return None, None
    return text, json.loads(text) if _is_json(content_type) else text


def new_job(settings: Settings) -> ChangeJob:
    """The job configured like the worker (:func:`processors.app.create_app`)."""
    return ChangeJob(
        default_codec(),
        Redactor(settings.redact_paths, settings.derived_key("redact")),
        settings.retention_ms,
        settings.source,
    )


def main() -> int:
    from quixstreams import Application

    settings = Settings.from_env()
    output = settings.topic(OUTPUT_TOPIC)
    ensure_topics(settings, [TopicSpec(output, settings.partitions)])
    marker = os.environ.get("QUIX_JOB_MARKER")
    stats = os.environ.get("QUIX_JOB_STATS")
    job = new_job(settings)
    app = Application(
        broker_address=settings.bootstrap,
        consumer_group=f"{settings.app_id}-quix",
        processing_guarantee="exactly-once",
        commit_interval=COMMIT_INTERVAL_S,
        auto_offset_reset="earliest",
        state_dir=str(settings.data_dir / "quix-state"),
        producer_extra_config={"partitioner": "murmur2_random"},
        loglevel="WARNING",
    )
    source = app.topic(settings.topic("actions"), value_deserializer="bytes")
    sink = app.topic(output, value_serializer="bytes", key_serializer="bytes")
    started = False

    def step(value: bytes, key: bytes, timestamp: int, headers: Any, state: KeyState) -> list[Any]:
        nonlocal started
        if not started:
            started = True
            if marker:
                mark = {"monotonic": time.monotonic(), "cpu_s": time.process_time()}
                Path(f"{marker}.tmp").write_text(json.dumps(mark))
                os.replace(f"{marker}.tmp", marker)
        result = job.process(value, key, state)
        return [] if result is None else [result]

    sdf = app.dataframe(source)
    sdf = sdf.apply(step, stateful=True, expand=True, metadata=True)
    sdf = sdf.set_headers(lambda value, key, timestamp, headers: value[1])
    sdf = sdf.apply(lambda value: value[0])
    sdf.to_topic(sink)
    try:
        app.run()
    finally:
        if stats:
            Path(stats).write_text(json.dumps(job.counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
