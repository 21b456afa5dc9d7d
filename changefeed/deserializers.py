"""Kafka deserializers for readers of the project's topics: bytes in, a record out.

For data teams consuming ``changes``, ``actions`` or ``actions.dlq`` directly, with
kafka-python (``value_deserializer=``) or aiokafka (the same argument)::

    from changefeed.deserializers import ChangeDeserializer
    KafkaConsumer("changes", value_deserializer=ChangeDeserializer("changes"))

A value in Avro single-object encoding (``C3 01`` + fingerprint) or Confluent framing
(``00`` + schema id, with the ids the codec was given) is decoded with its writer schema and
resolved to the current schema, so records written by older versions read the same.
The result is a dict of the current schema (timestamps as aware datetimes; payloads as the
JSON text they travel as) or, with ``typed=True`` on ``changes``, a
:class:`~changefeed.client.models.ChangeEvent` like the events API client's, with payloads
parsed. A ``None`` value (a tombstone) stays ``None``.

Bytes that are not a record of the topic raise :class:`DeserializationError` by default;
with ``on_error="return"`` they come back as :class:`Undecodable` (bytes and reason), so a
single bad record cannot stop a consumer loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from changefeed.errors import ChangefeedError
from schemas.codec import Codec, default_codec
from schemas.errors import SchemaError
from schemas.schema_export import TOPIC_RECORDS

TopicKind = Literal["changes", "actions", "actions.dlq"]


class DeserializationError(ChangefeedError):
    """A record value is not a record of the topic it was read from."""


@dataclass(frozen=True)
class Undecodable:
    """A value that could not be decoded (``on_error="return"``)."""

    value: bytes
    reason: str


class ChangeDeserializer:
    """``ChangeDeserializer(topic_kind, typed=False, on_error="raise")``: a callable from a
    record's value bytes to its record (see the module docstring)."""

    def __init__(
        self,
        topic_kind: TopicKind | str,
        *,
        typed: bool = False,
        on_error: Literal["raise", "return"] = "raise",
        codec: Codec | None = None,
    ) -> None:
        kind = _kind(topic_kind)
        self.record_name = TOPIC_RECORDS[kind]
        if typed and kind != "changes":
            raise ValueError("typed=True is offered for 'changes' (ChangeEvent) only")
        if on_error not in ("raise", "return"):
            raise ValueError("on_error must be 'raise' or 'return'")
        self.typed = typed
        self.on_error = on_error
        self.codec = codec or default_codec()

    def __call__(self, value: bytes | None) -> Any:
        if value is None:
            return None
        try:
            record = self.codec.decode(value, self.record_name)
        except SchemaError as exc:
            if self.on_error == "return":
                return Undecodable(bytes(value), str(exc))
            raise DeserializationError(f"not a {self.record_name} record: {exc}") from exc
        if self.typed:
            from changefeed.client.models import ChangeEvent

            return ChangeEvent.from_record(record)
        return record


def deserialize(value: bytes | None, topic_kind: TopicKind | str, *, typed: bool = False) -> Any:
    """One value of ``topic_kind`` decoded (a convenience over :class:`ChangeDeserializer`)."""
    return _cached(str(topic_kind), typed)(value)


_DESERIALIZERS: dict[tuple[str, bool], ChangeDeserializer] = {}


def _cached(kind: str, typed: bool) -> ChangeDeserializer:
    key = (kind, typed)
    if key not in _DESERIALIZERS:
        _DESERIALIZERS[key] = ChangeDeserializer(kind, typed=typed)
    return _DESERIALIZERS[key]


def _kind(topic: str) -> str:
    """``changes``, ``actions`` or ``actions.dlq``; a prefixed topic name works too."""
    for kind in sorted(TOPIC_RECORDS, key=len, reverse=True):
        if topic == kind or topic.endswith("." + kind) or topic.endswith(kind):
            return kind
    raise ValueError(f"not a changefeed topic: {topic!r}; one of {', '.join(TOPIC_RECORDS)}")
