"""Dead letters: input records that cannot become change events, kept whole for a replay.

A dead letter carries the reason (a ``reason_code`` from the ``DeadLetter`` schema and a
sentence, masked like text payloads), where the record was (topic, partition, offset,
timestamp), its key, and the record itself (value and headers, byte for byte) **sealed**:
encrypted and authenticated with AES-256-GCM (the ``cryptography`` package) under a key
derived from the deployment secret (``Settings.derived_key("dlq")``), so ``actions.dlq``
never holds a secret a bad record carried in clear. An operator on a machine that has the
secret opens it (``changefeed dlq show``), fixes the cause and re-publishes it
(``changefeed dlq redrive``).

Sealed blob: ``01`` (format) + 4-byte key id (the first bytes of HMAC-SHA256(key, "key-id"),
so a blob sealed under another secret is named as such, not taken for tampering) + 12-byte
random nonce + ciphertext-and-tag. The associated data binds it to its origin (topic,
partition, offset): a blob copied onto another dead letter does not open. The plaintext
frames the value (absent for a tombstone) and each header, length-prefixed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from processors.errors import ProcessingError

UNDECODABLE = "undecodable"
UNKNOWN_SCHEMA = "unknown_schema"
INVALID_FIELD = "invalid_field"
PROCESSING_ERROR = "processing_error"
REASON_CODES = frozenset((UNDECODABLE, UNKNOWN_SCHEMA, INVALID_FIELD, PROCESSING_ERROR))
DEAD_LETTER_SCHEMA = "changefeed.DeadLetter"
MAX_REASON_CHARS = 2000


@dataclass(slots=True)
class RawRecord:
    """One record of the ``actions`` topic, as it came off the wire."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


SEAL_FORMAT = 1
_NONCE_BYTES = 12
_KEY_ID_BYTES = 4
_NO_VALUE = 0xFFFFFFFF
_AAD_DOMAIN = b"changefeed.dlq.v1\x00"


class SealError(ProcessingError):
    """A sealed dead letter does not open: another secret, tampering, or not a sealed blob."""


class DeadLetterSealer:
    """Seals and opens the original record of dead letters under one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the dead-letter key must be 32 bytes")
        self._aead = AESGCM(key)
        self.key_id = hmac.new(key, b"key-id", hashlib.sha256).digest()[:_KEY_ID_BYTES]

    def seal(self, record: RawRecord) -> bytes:
        plain = _frame(record.value, _headers_of(record))
        nonce = os.urandom(_NONCE_BYTES)
        aad = _aad(record.topic, record.partition, record.offset)
        return bytes([SEAL_FORMAT]) + self.key_id + nonce + self._aead.encrypt(nonce, plain, aad)

    def open(
        self, sealed: bytes, topic: str, partition: int, offset: int
    ) -> tuple[bytes | None, dict[str, bytes]]:
        """The original value and headers of a dead letter of ``topic[partition]@offset``."""
        head = 1 + _KEY_ID_BYTES + _NONCE_BYTES
        if len(sealed) < head + 16 or sealed[0] != SEAL_FORMAT:
            raise SealError("not a sealed dead letter (unknown format)")
        if sealed[1 : 1 + _KEY_ID_BYTES] != self.key_id:
            raise SealError("sealed under another secret (CHANGEFEED_SECRET differs)")
        nonce = sealed[1 + _KEY_ID_BYTES : head]
        try:
            plain = self._aead.decrypt(nonce, sealed[head:], _aad(topic, partition, offset))
        except InvalidTag:
            raise SealError("the sealed record was altered or belongs elsewhere") from None
        return _unframe(plain)


def _aad(topic: str, partition: int, offset: int) -> bytes:
    return _AAD_DOMAIN + f"{topic}\x00{partition}\x00{offset}".encode()


def _headers_of(record: RawRecord) -> dict[str, bytes]:
    headers: dict[str, bytes] = {}
    for name, value in record.headers:
        headers[name] = bytes(value) if value is not None else b""
    return headers


def _frame(value: bytes | None, headers: dict[str, bytes]) -> bytes:
    parts = [struct.pack(">I", _NO_VALUE if value is None else len(value))]
    if value is not None:
        parts.append(bytes(value))
    parts.append(struct.pack(">I", len(headers)))
    for name, data in headers.items():
        encoded = name.encode("utf-8", "surrogatepass")
        parts += [struct.pack(">I", len(encoded)), encoded, struct.pack(">I", len(data)), data]
    return b"".join(parts)


def _unframe(plain: bytes) -> tuple[bytes | None, dict[str, bytes]]:
    at = 0

    def take(n: int) -> bytes:
        nonlocal at
        if at + n > len(plain):
            raise SealError("the sealed record is truncated")
        chunk, at = plain[at : at + n], at + n
        return chunk

    (size,) = struct.unpack(">I", take(4))
    value = None if size == _NO_VALUE else take(size)
    (count,) = struct.unpack(">I", take(4))
    headers: dict[str, bytes] = {}
    for _ in range(count):
        (n,) = struct.unpack(">I", take(4))
        name = take(n).decode("utf-8", "surrogatepass")
        (n,) = struct.unpack(">I", take(4))
        headers[name] = take(n)
    return value, headers


def dead_letter(
    record: RawRecord,
    reason_code: str,
    reason: str,
    failed_at_us: int,
    sealer: DeadLetterSealer | None = None,
) -> dict[str, Any]:
    """The ``changefeed.DeadLetter`` record of ``record``; unknown codes become
    processing_error. With ``sealer``, value and headers travel only sealed."""
    headers = _headers_of(record)
    if sealer is not None:
        return {
            "reason_code": reason_code if reason_code in REASON_CODES else PROCESSING_ERROR,
            "reason": reason[:MAX_REASON_CHARS],
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp_ms": record.timestamp_ms,
            "key": record.key,
            "value": None,
            "headers": {},
            "failed_at": failed_at_us,
            "sealed": sealer.seal(record),
        }
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
        "sealed": None,
    }
