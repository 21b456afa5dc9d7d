"""Dead letters: input records that cannot become change events, kept whole for a replay.

A dead letter carries the reason (a ``reason_code`` from the ``DeadLetter`` schema and a
sentence), where the record was (topic, partition, offset, timestamp) and the record itself
(key, value and headers, byte for byte), so an operator can fix the cause and re-publish it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

UNDECODABLE = "undecodable"
UNKNOWN_SCHEMA = "unknown_schema"
INVALID_FIELD = "invalid_field"
PROCESSING_ERROR = "processing_error"
REASON_CODES = frozenset((UNDECODABLE, UNKNOWN_SCHEMA, INVALID_FIELD, PROCESSING_ERROR))
DEAD_LETTER_SCHEMA = "changefeed.DeadLetter"
MAX_REASON_CHARS = 2000


@dataclass(frozen=True)
class RawRecord:
    """One record of the ``actions`` topic, as it came off the wire."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


def dead_letter(
    record: RawRecord, reason_code: str, reason: str, failed_at_us: int
) -> dict[str, Any]:
    """The ``changefeed.DeadLetter`` record of ``record``; unknown codes become processing_error."""
    headers: dict[str, bytes] = {}
    for name, value in record.headers:
        headers[name] = bytes(value) if value is not None else b""
    return {
        "reason_code": reason_code if reason_code in REASON_CODES else PROCESSING_ERROR,
        "reason": reason[:MAX_REASON_CHARS],
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "key": record.key,
        "value": record.value,
        "headers": headers,
        "failed_at": failed_at_us,
    }
