"""Admin access to ``actions.dlq``: list dead letters, open one, send records back.

Dead letters keep the original record sealed (:mod:`processors.dead_letters`): nothing in
the topic is readable without the deployment secret. These functions run where the secret
is (``CHANGEFEED_SECRET``, or ``$CHANGEFEED_HOME/secret.key``), for an admin:

* :func:`list_dead_letters`: every dead letter the topic still holds (retention), without
  opening any: position, reason, origin, key, how large the sealed original is.
* :func:`show_dead_letter`: one dead letter opened: the original action decoded to JSON
  (in clear: it is for the admin's terminal, nothing stores it), or its bytes as base64 when
  they do not decode; the headers.
* :func:`redrive`: sends dead letters back to ``actions``. Without a fix, the original is
  decoded and published again through the publisher's encoder (the action contract and
  masking, so the topic gets no secret from us), which refuses it if it is still invalid:
  only records that are valid now (dead-lettered by a bug or a schema since fixed) go. With
  ``fixed`` (an action as JSON, as ``show`` prints it, edited), that action is published in
  place of one dead letter. A redriven action keeps its ``event_id``, so the processors'
  dedupe absorbs a second redrive of the same record.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from changefeed.config import Settings
from changefeed.errors import ChangefeedError, TopicMissingError
from processors.dead_letters import DEAD_LETTER_SCHEMA, DeadLetterSealer, SealError
from producers.envelope import ActionEncoder
from producers.errors import InvalidActionError
from schemas.action_contract import occurred_at_micros
from schemas.codec import default_codec
from schemas.errors import SchemaError

DLQ_TOPIC = "actions.dlq"
API_ACTION = "changefeed.ApiAction"
POLL_MS = 500


class DeadLetterError(ChangefeedError):
    """A dead letter cannot be found, opened or redriven as asked."""


@dataclass(frozen=True)
class DeadLetterEntry:
    """One record of ``actions.dlq``: its offset there and the decoded DeadLetter."""

    offset: int
    record: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """What ``list`` shows: nothing of the original but its size."""
        record = self.record
        sealed = record.get("sealed")
        clear = record.get("value")
        return {
            "offset": self.offset,
            "failed_at": _iso(record.get("failed_at")),
            "reason_code": record["reason_code"],
            "reason": record["reason"],
            "origin": f"{record['topic']}[{record['partition']}]@{record['offset']}",
            "key": _text(record.get("key")),
            "original": "sealed"
            if sealed is not None
            else ("clear (written before sealing)" if clear is not None else "omitted"),
            "original_bytes": len(sealed or clear or b""),
        }


@dataclass(frozen=True)
class RedriveResult:
    offset: int
    event_id: str | None
    sent: bool
    reason: str = ""

    def describe(self) -> str:
        if self.sent:
            return f"dlq@{self.offset}: event {self.event_id} sent back to actions"
        return f"dlq@{self.offset}: not sent: {self.reason}"


def read_dead_letters(
    settings: Settings, offsets: Iterable[int] | None = None
) -> list[DeadLetterEntry]:
    """The dead letters the topic holds now (all, or those at ``offsets``), oldest first."""
    wanted = None if offsets is None else set(offsets)
    codec = default_codec()
    topic = settings.topic(DLQ_TOPIC)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise TopicMissingError(f"topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        consumer.seek_to_beginning(*tps)
        entries: list[DeadLetterEntry] = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            batches = consumer.poll(timeout_ms=POLL_MS)
            if not batches and all(consumer.position(tp) >= ends[tp] for tp in tps):
                break
            for messages in batches.values():
                for message in messages:
                    if message.offset >= ends[TopicPartition(topic, message.partition)]:
                        continue
                    if wanted is not None and message.offset not in wanted:
                        continue
                    try:
                        record = codec.decode(message.value, DEAD_LETTER_SCHEMA)
                    except SchemaError as exc:
                        record = _unreadable(message.offset, exc)
                    entries.append(DeadLetterEntry(message.offset, record))
    finally:
        consumer.close()
    return sorted(entries, key=lambda e: e.offset)


def list_dead_letters(settings: Settings) -> list[dict[str, Any]]:
    return [entry.summary() for entry in read_dead_letters(settings)]


def open_original(
    settings: Settings, entry: DeadLetterEntry
) -> tuple[bytes | None, dict[str, bytes]]:
    """The original value and headers of a dead letter (opening the seal)."""
    record = entry.record
    sealed = record.get("sealed")
    if sealed is None:
        if record.get("value") is None:
            raise DeadLetterError(
                f"dead letter {entry.offset} kept no original (it was too large to keep)"
            )
        return record["value"], dict(record.get("headers") or {})
    sealer = DeadLetterSealer(settings.derived_key("dlq"))
    try:
        return sealer.open(sealed, record["topic"], record["partition"], record["offset"])
    except SealError as exc:
        raise DeadLetterError(f"dead letter {entry.offset} does not open: {exc}") from exc


def show_dead_letter(settings: Settings, offset: int) -> dict[str, Any]:
    """One dead letter, opened: its summary, the original action (or bytes) and headers."""
    entry = _one(settings, offset)
    value, headers = open_original(settings, entry)
    shown: dict[str, Any] = entry.summary()
    shown["headers"] = {name: _text(data) for name, data in headers.items()}
    action = _decode_action(value)
    if action is not None:
        shown["action"] = action
    else:
        shown["value_base64"] = None if value is None else base64.b64encode(value).decode()
    return shown


def redrive(
    settings: Settings,
    offsets: Iterable[int] | None,
    *,
    fixed: Mapping[str, Any] | None = None,
    dry_run: bool = False,
) -> list[RedriveResult]:
    """Send the dead letters at ``offsets`` (None: all) back to ``actions``; see the module
    docstring. Nothing is sent for a record that is still invalid; its reason is returned."""
    wanted = None if offsets is None else sorted(set(offsets))
    if fixed is not None and (wanted is None or len(wanted) != 1):
        raise DeadLetterError("a fixed action replaces exactly one dead letter: give one --offset")
    entries = read_dead_letters(settings, wanted)
    if wanted is not None:
        missing = sorted(set(wanted) - {e.offset for e in entries})
        if missing:
            raise DeadLetterError(f"no dead letter at offset(s) {missing} (expired or never)")
    encoder = ActionEncoder(
        settings.topic("actions"), default_codec(), settings.source, settings.redactor()
    )
    results: list[RedriveResult] = []
    outgoing = []
    for entry in entries:
        try:
            action = dict(fixed) if fixed is not None else _original_action(settings, entry)
            record = encoder.encode(action)
        except (DeadLetterError, InvalidActionError) as exc:
            event_id = None if fixed is None else fixed.get("event_id")
            results.append(RedriveResult(entry.offset, event_id, False, str(exc)))
            continue
        outgoing.append(record)
        results.append(RedriveResult(entry.offset, record.event_id, not dry_run))
    if outgoing and not dry_run:
        producer = KafkaProducer(
            bootstrap_servers=settings.bootstrap, acks="all", enable_idempotence=True
        )
        try:
            futures = [
                producer.send(r.topic, value=r.value, key=r.key, headers=r.headers)
                for r in outgoing
            ]
            producer.flush()
            for future in futures:
                future.get(timeout=30)
        finally:
            producer.close()
    return results


def load_fixed_action(text: str) -> dict[str, Any]:
    """An action as JSON (``show``'s ``action``, edited); ``occurred_at`` in epoch micros."""
    try:
        action = json.loads(text)
    except ValueError as exc:
        raise DeadLetterError(f"the fixed action is not JSON: {exc}") from exc
    if not isinstance(action, dict):
        raise DeadLetterError("the fixed action must be a JSON object")
    return action


def _original_action(settings: Settings, entry: DeadLetterEntry) -> dict[str, Any]:
    value, _ = open_original(settings, entry)
    action = _decode_action(value, as_json=False)
    if action is None:
        raise DeadLetterError(
            "the original does not decode as an action; fix it with --fixed (see dlq show)"
        )
    return action


def _decode_action(value: bytes | None, *, as_json: bool = True) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        action = default_codec().decode(value, API_ACTION)
    except SchemaError:
        return None
    if as_json:
        occurred = action.get("occurred_at")
        if isinstance(occurred, datetime):
            action["occurred_at"] = occurred_at_micros(occurred)
    return action


def _one(settings: Settings, offset: int) -> DeadLetterEntry:
    found = read_dead_letters(settings, [offset])
    if not found:
        raise DeadLetterError(f"no dead letter at offset {offset} (expired, or never)")
    return found[0]


def _unreadable(offset: int, exc: Exception) -> dict[str, Any]:
    return {
        "reason_code": "unreadable",
        "reason": f"this dlq record does not decode: {exc}",
        "topic": "?",
        "partition": -1,
        "offset": -1,
        "key": None,
        "value": None,
        "sealed": None,
        "failed_at": None,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode()
