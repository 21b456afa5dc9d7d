"""What the processors keep per subject and per action, and how it is laid out in the tables.

Every table of :mod:`processors.tables` stores raw bytes: keys are UTF-8 text (parts joined
by ``NUL``, which no id may contain), values are compact JSON, except ``change_by_id``, which
holds the very Avro bytes published on ``changes``. Raw bytes keep a changelog record and the
RocksDB entry it restores into identical, and let :mod:`processors.tables` scan a key prefix.

Key layout (the events API relies on it; see :mod:`processors.tables` for the lookups):

========================  ==============================================  =================
table                     key                                             value
========================  ==============================================  =================
``subject_state``         ``tenant/subject_type/subject_id``              :class:`SubjectState`
``seen_events``           ``id NUL event_id``                             :class:`SeenEvent`
``seen_events``           ``exp NUL <13-digit ms> NUL event_id``          expiry index entry
``change_by_id``          ``change_id``                                   Avro ``ChangeEvent``
``changes_by_request``    ``request_id NUL change_id``                    subject key
``subject_history``       ``subject key NUL <12-digit sequence>``         :class:`HistoryEntry`
========================  ==============================================  =================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SEP = "\x00"
SUBJECT_STATE = "subject_state"
SEEN_EVENTS = "seen_events"
CHANGE_BY_ID = "change_by_id"
CHANGES_BY_REQUEST = "changes_by_request"
SUBJECT_HISTORY = "subject_history"
TABLE_NAMES = (SUBJECT_STATE, SEEN_EVENTS, CHANGE_BY_ID, CHANGES_BY_REQUEST, SUBJECT_HISTORY)

_SEEN_PREFIX = f"id{SEP}"
EXPIRY_PREFIX = f"exp{SEP}".encode()
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def subject_key(tenant_id: str, subject_type: str, subject_id: str) -> str:
    """The subject's identity, also the Kafka key of its actions and change events."""
    return f"{tenant_id}/{subject_type}/{subject_id}"


def seen_key(event_id: str) -> bytes:
    return f"{_SEEN_PREFIX}{event_id}".encode()


def expiry_key(seen_ms: int, event_id: str) -> bytes:
    """Sorts by time: a purge reads expired ids from the front, stops at the first live one."""
    return f"exp{SEP}{seen_ms:013d}{SEP}{event_id}".encode()


def expiry_ms(key: bytes) -> int:
    return int(key[4:17])


def request_key(request_id: str, change_id: str) -> bytes:
    return f"{request_id}{SEP}{change_id}".encode()


def request_prefix(request_id: str) -> bytes:
    return f"{request_id}{SEP}".encode()


def history_key(subject: str, sequence: int) -> bytes:
    return f"{subject}{SEP}{sequence:012d}".encode()


def history_prefix(subject: str) -> bytes:
    return f"{subject}{SEP}".encode()


def is_older(
    version: int | None, occurred_at: int, than_version: int | None, than_occurred_at: int
) -> bool:
    """Whether an action at (version, occurred_at) is strictly older than the other one.

    The source's version decides when both sides carry one (the occurrence time breaks a
    tie); otherwise the occurrence time alone. Equal positions are not "older": the later
    arrival wins a tie, so two actions of the same microsecond still apply in arrival order.
    """
    if version is not None and than_version is not None:
        return (version, occurred_at) < (than_version, than_occurred_at)
    return occurred_at < than_occurred_at


def _dump(values: dict[str, Any]) -> bytes:
    return _JSON.encode(values).encode()


@dataclass(frozen=True)
class SubjectState:
    """The current state of one subject, as of its newest applied action.

    ``payload`` is the redacted JSON text (``None`` once deleted, or while only custom
    events were seen). ``version``/``occurred_at`` are the order position of the newest
    applied action (``None`` before any create/update/delete); a no-op update advances them
    without changing ``payload``. ``sequence`` counts the change events recorded for the
    subject (late and custom ones included): the next one gets it as ``subject_sequence``.
    """

    payload: str | None
    deleted: bool
    version: int | None
    occurred_at: int | None
    sequence: int
    event_id: str | None
    change_id: str | None

    def encode(self) -> bytes:
        return _dump(
            {
                "payload": self.payload,
                "deleted": self.deleted,
                "version": self.version,
                "occurred_at": self.occurred_at,
                "sequence": self.sequence,
                "event_id": self.event_id,
                "change_id": self.change_id,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> SubjectState:
        return cls(**json.loads(data))


@dataclass(frozen=True)
class SeenEvent:
    """An event_id already processed; remembered until ``seen_ms`` + retention."""

    seen_ms: int
    change_id: str | None

    def encode(self) -> bytes:
        return _dump({"seen_ms": self.seen_ms, "change_id": self.change_id})

    @classmethod
    def decode(cls, data: bytes) -> SeenEvent:
        return cls(**json.loads(data))


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded change of a subject; the change itself is in ``change_by_id``."""

    change_id: str
    event_id: str
    action: str
    version: int | None
    occurred_at: int
    late: bool
    sequence: int

    def encode(self) -> bytes:
        return _dump(
            {
                "change_id": self.change_id,
                "event_id": self.event_id,
                "action": self.action,
                "version": self.version,
                "occurred_at": self.occurred_at,
                "late": self.late,
                "sequence": self.sequence,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> HistoryEntry:
        return cls(**json.loads(data))


def encode_expiry(index_keys: list[tuple[str, bytes]]) -> bytes:
    """The value of an expiry entry: the index keys (table, key) to forget with the id."""
    return _JSON.encode([[table, key.decode()] for table, key in index_keys]).encode()


def decode_expiry(data: bytes) -> list[tuple[str, bytes]]:
    return [(table, key.encode()) for table, key in json.loads(data)]
