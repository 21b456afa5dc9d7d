"""Byte layout of spool segments: a magic header, then length-prefixed, CRC-checked frames.

Segment file::

    b"CFSPOOL\\x01"                      8 bytes, names the format and its version
    frame*

Frame (big-endian)::

    u32 payload length | u32 CRC-32 of payload | payload

Payload of an :class:`OutgoingRecord`::

    u16 topic | u16 event_id | u32 key | u32 value | u16 header count | (u16 name | u32 value)*

each ``uN x`` being a length followed by that many bytes (strings in UTF-8). The length and
checksum come first so that a reader can tell a complete frame from one a crash cut short
(too few bytes) or left half-written (checksum mismatch) without trusting anything inside.
"""

from __future__ import annotations

import struct
import zlib

from producers.outgoing import Headers, OutgoingRecord

SEGMENT_MAGIC = b"CFSPOOL\x01"
FRAME_HEADER = struct.Struct(">II")
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024  # far above Kafka's message limit; larger means garbage

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class FrameError(ValueError):
    """Bytes that are not a valid frame or payload (internal; the spool maps it)."""


def encode_frame(record: OutgoingRecord) -> bytes:
    """The frame holding ``record``, ready to append to a segment."""
    payload = encode_payload(record)
    return FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def encode_payload(record: OutgoingRecord) -> bytes:
    parts = [
        _short(record.topic.encode()),
        _short(record.event_id.encode()),
        _long(record.key),
        _long(record.value),
        _U16.pack(len(record.headers)),
    ]
    for name, value in record.headers:
        parts.append(_short(name.encode()))
        parts.append(_long(value))
    return b"".join(parts)


def check_frame_header(header: bytes) -> tuple[int, int]:
    """``(payload length, crc)`` of a frame header; :class:`FrameError` if implausible."""
    if len(header) < FRAME_HEADER.size:
        raise FrameError("truncated frame header")
    length, crc = FRAME_HEADER.unpack(header[: FRAME_HEADER.size])
    if length > MAX_PAYLOAD_BYTES:
        raise FrameError(f"frame length {length} exceeds {MAX_PAYLOAD_BYTES}")
    return length, crc


def decode_payload(payload: bytes, crc: int) -> OutgoingRecord:
    """The record in ``payload``; :class:`FrameError` if the checksum or layout is wrong."""
    if zlib.crc32(payload) != crc:
        raise FrameError("checksum mismatch")
    reader = _Reader(payload)
    topic = reader.short().decode()
    event_id = reader.short().decode()
    key = reader.long()
    value = reader.long()
    headers: Headers = [(reader.short().decode(), reader.long()) for _ in range(reader.u16())]
    if not reader.at_end():
        raise FrameError("trailing bytes after record")
    return OutgoingRecord(topic, key, value, headers, event_id)


def _short(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise FrameError(f"field of {len(data)} bytes does not fit a u16 length")
    return _U16.pack(len(data)) + data


def _long(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


class _Reader:
    """Walks a payload, raising :class:`FrameError` instead of reading past its end."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def u16(self) -> int:
        return int(_U16.unpack(self._take(2))[0])

    def short(self) -> bytes:
        return self._take(self.u16())

    def long(self) -> bytes:
        return self._take(int(_U32.unpack(self._take(4))[0]))

    def at_end(self) -> bool:
        return self._at == len(self._data)

    def _take(self, n: int) -> bytes:
        end = self._at + n
        if end > len(self._data):
            raise FrameError("payload ends inside a field")
        chunk = self._data[self._at : end]
        self._at = end
        return chunk
