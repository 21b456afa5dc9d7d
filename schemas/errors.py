"""Errors of the schemas package.

Every class carries a ``reason_code``: a short machine-readable string that processors copy
into ``DeadLetter.reason_code``. Each code is one of the values that field documents
(``undecodable``, ``unknown_schema``, ``invalid_field``, ``processing_error``), so a dead
letter never carries a code its readers do not know.

Errors of fastavro, ``struct`` and the like are re-raised as these with ``raise ... from exc``:
callers catch ``DecodeError`` and never need to know which library failed, or how.
"""

from __future__ import annotations

from changefeed.errors import ChangefeedError


class SchemaError(ChangefeedError):
    """Base class of every error raised by the schemas package."""

    reason_code: str = "processing_error"


class SchemaLoadError(SchemaError):
    """A schema file, the archive folder or the codec's configuration cannot be used.

    Raised while a codec is built, never while records flow, so it points at a deployment or
    repository problem rather than at a bad record.
    """


class SchemaNotFoundError(SchemaError, LookupError):
    """The caller named a schema the codec does not have (or cannot frame, e.g. no id).

    Deliberately not a :class:`DecodeError`: a wrong name is a bug in the caller, and a
    processor that dead-letters on ``DecodeError`` must not hide it by parking every record.
    """

    def __init__(self, name: str, detail: str = "") -> None:
        self.name = name
        super().__init__(f"no schema {name!r}{': ' + detail if detail else ''}")


class EncodeError(SchemaError):
    """A record does not fit its schema: a required field is missing or has the wrong type.

    ``field`` is the offending field as ``<record full name>.<field>`` (e.g.
    ``changefeed.Actor.user_id``) when it could be determined, else ``None``.
    """

    reason_code = "invalid_field"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class DecodeError(SchemaError):
    """Bytes cannot be decoded: bad magic, too short, truncated, trailing or garbage bytes."""

    reason_code = "undecodable"


class UnknownSchemaError(DecodeError):
    """The writer schema named by the bytes is not one this codec can read as the wanted type.

    Either the fingerprint / schema id is not known at all (a producer runs a newer schema
    than this consumer, or the bytes come from elsewhere), or it belongs to another record
    type. ``schema_key`` is the fingerprint (8 bytes) or the Confluent schema id.
    """

    reason_code = "unknown_schema"

    def __init__(self, message: str, *, schema_key: bytes | int) -> None:
        self.schema_key = schema_key
        super().__init__(message)


class IncompatibleSchemaError(SchemaError):
    """Data written with one schema cannot be read with another (Avro schema resolution fails).

    Raised by :mod:`schemas.evolution` when a schema change would make old data unreadable.
    """
