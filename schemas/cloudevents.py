"""CloudEvents 1.0 attributes as Kafka headers (Kafka protocol binding, binary content mode).

In binary mode the Kafka record value is the event data itself (here the Avro bytes from
:mod:`schemas.codec`) and each context attribute travels as a header named ``ce_<attribute>``
with a UTF-8 value; ``datacontenttype`` travels as the ``content-type`` header. Consumers can
route and filter on these headers without decoding the value.

The value is Avro single-object encoded, so the writer schema is identified in-band by its
fingerprint; ``dataschema`` is therefore optional and only passed through when a caller has a
URI for the schema.

Headers are ``list[tuple[str, bytes]]``, the shape both kafka-python and aiokafka accept.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from schemas.errors import DecodeError, EncodeError

SPEC_VERSION = "1.0"
AVRO_CONTENT_TYPE = "application/avro"
HEADER_PREFIX = "ce_"
CONTENT_TYPE_HEADER = "content-type"
REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def cloudevent_headers(
    *,
    id: str,
    type: str,
    source: str,
    subject: str | None = None,
    time: datetime | int | None = None,
    content_type: str = AVRO_CONTENT_TYPE,
    dataschema: str | None = None,
) -> list[tuple[str, bytes]]:
    """Kafka headers carrying the CloudEvents context attributes of one event.

    ``time`` is an aware datetime or int microseconds since the epoch (the unit of the Avro
    ``timestamp-micros`` fields, so ``occurred_at`` can be passed either way) and is written
    in RFC 3339 UTC with microseconds. Raises :class:`EncodeError` naming the attribute when a
    required attribute is empty or ``time`` is a naive datetime.
    """
    attributes = {"specversion": SPEC_VERSION, "id": id, "source": source, "type": type}
    for name, value in attributes.items():
        if not value:
            raise EncodeError(f"CloudEvents attribute {name} must not be empty", field=name)
    if subject is not None:
        attributes["subject"] = subject
    if time is not None:
        attributes["time"] = rfc3339(time)
    if dataschema is not None:
        attributes["dataschema"] = dataschema
    headers = [(HEADER_PREFIX + name, value.encode()) for name, value in attributes.items()]
    headers.append((CONTENT_TYPE_HEADER, content_type.encode()))
    return headers


def parse_cloudevent_headers(
    headers: Iterable[tuple[str, bytes | None]] | None,
) -> dict[str, str]:
    """The CloudEvents attributes in Kafka headers, keyed by attribute name.

    Returns ``specversion``, ``id``, ``source``, ``type`` and whichever of ``subject``,
    ``time``, ``dataschema``, ``datacontenttype`` (from ``content-type``) and extension
    attributes are present; headers that are not CloudEvents headers are ignored. Raises
    :class:`DecodeError` when a required attribute is missing, an attribute appears twice,
    a value is not UTF-8, or the spec version is not 1.0.
    """
    attributes: dict[str, str] = {}
    for key, value in headers or ():
        name = _attribute_name(key)
        if name is None:
            continue
        if name in attributes:
            raise DecodeError(f"CloudEvents header {key} appears more than once")
        attributes[name] = _header_text(key, value)
    missing = [name for name in REQUIRED_ATTRIBUTES if name not in attributes]
    if missing:
        lacking = ", ".join(HEADER_PREFIX + name for name in missing)
        raise DecodeError(f"CloudEvents headers lack {lacking}")
    if attributes["specversion"] != SPEC_VERSION:
        raise DecodeError(f"CloudEvents specversion {attributes['specversion']!r} is not 1.0")
    return attributes


def rfc3339(moment: datetime | int) -> str:
    """RFC 3339 UTC timestamp with microseconds, e.g. ``2024-05-01T12:00:00.000001Z``."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise EncodeError("CloudEvents time must be an aware datetime", field="time")
        moment = moment.astimezone(UTC)
        return moment.isoformat(timespec="microseconds").removesuffix("+00:00") + "Z"
    global _last_second
    seconds, micros = divmod(moment, 1_000_000)
    second, text = _last_second
    if seconds != second:  # consecutive events mostly share their second
        try:
            start = _EPOCH + timedelta(seconds=seconds)
        except OverflowError as exc:
            raise EncodeError(
                f"CloudEvents time {moment} us is out of range", field="time"
            ) from exc
        text = start.isoformat(timespec="seconds").removesuffix("+00:00")
        _last_second = (seconds, text)
    return f"{text}.{micros:06d}Z"


_last_second: tuple[int, str] = (-1, "1969-12-31T23:59:59")


def _attribute_name(key: str) -> str | None:
    if key == CONTENT_TYPE_HEADER:
        return "datacontenttype"
    if key.startswith(HEADER_PREFIX) and len(key) > len(HEADER_PREFIX):
        return key[len(HEADER_PREFIX) :]
    return None


def _header_text(key: str, value: bytes | None) -> str:
    if value is None:
        raise DecodeError(f"CloudEvents header {key} has no value")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"CloudEvents header {key} is not UTF-8") from exc
