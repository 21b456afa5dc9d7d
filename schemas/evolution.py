"""Proof that data written with one schema version can be read with another.

fastavro has no static compatibility checker: it resolves a writer schema against a reader
schema while reading, and raises ``SchemaResolutionError`` only for the parts of the schema the
data actually goes through. A union branch or enum symbol that no test record uses is never
checked. :func:`covering_records` therefore builds a few records that, between them, take every
union branch and every enum symbol of the writer schema, and :func:`check_readable` writes each
one with the writer schema and reads it back with the reader schema through fastavro's own
resolution. The policy it serves: every archived version of a type stays readable by the current
schema (see ``schemas/archive/``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from io import BytesIO
from typing import Any, cast
from uuid import UUID

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import parse_schema

from schemas.errors import IncompatibleSchemaError

# Past this depth a recursive schema takes its shortest way out (null branch, empty collection).
_MAX_DEPTH = 32
_MAX_RECORDS = 4096

_Named = Mapping[str, Any]


def check_readable(writer_schema: Any, reader_schema: Any) -> None:
    """Raise :class:`IncompatibleSchemaError` unless the reader can read the writer's data.

    Both schemas may be raw (JSON-like) or fastavro-parsed; named types must be inlined or
    already parsed. Reading is checked over :func:`covering_records` of the writer schema.
    """
    writer = _parsed(writer_schema)
    reader = _parsed(reader_schema)
    for record in covering_records(writer):
        buffer = BytesIO()
        schemaless_writer(buffer, writer, record)
        buffer.seek(0)
        try:
            schemaless_reader(buffer, writer, reader)
        except SchemaResolutionError as exc:
            raise IncompatibleSchemaError(
                f"data written with {_name(writer)} cannot be read with {_name(reader)}: {exc}"
            ) from exc


def covering_records(schema: Any) -> list[Any]:
    """Records of ``schema`` that together take every union branch and every enum symbol.

    Record ``k`` picks option ``k mod n`` at each choice point with ``n`` options and hands
    ``k // n`` down to what the chosen option contains, so options nested under a union branch
    are covered too. Not every combination of choices appears, only every single choice.
    """
    parsed = _parsed(schema)
    named = cast(_Named, parsed.get("__named_schemas", {})) if isinstance(parsed, dict) else {}
    count = min(_choices_needed(parsed, named, frozenset()), _MAX_RECORDS)
    return [_sample(parsed, named, index, 0) for index in range(count)]


def _parsed(schema: Any) -> Any:
    if isinstance(schema, dict) and "__fastavro_parsed" in schema:
        return schema
    return parse_schema(schema)


def _name(schema: Any) -> str:
    return str(schema.get("name", schema.get("type"))) if isinstance(schema, dict) else str(schema)


def _choices_needed(schema: Any, named: _Named, seen: frozenset[str]) -> int:
    """Records needed so that the deepest chain of nested choices sees each of its options."""
    if isinstance(schema, str):
        if schema in named and schema not in seen:
            return _choices_needed(named[schema], named, seen | {schema})
        return 1
    if isinstance(schema, list):
        return len(schema) * max((_choices_needed(b, named, seen) for b in schema), default=1)
    kind = schema["type"]
    if kind == "record":
        seen = seen | {schema["name"]}
        fields = schema["fields"]
        return max((_choices_needed(f["type"], named, seen) for f in fields), default=1)
    if kind == "enum":
        return len(schema["symbols"])
    if kind == "array":
        return _choices_needed(schema["items"], named, seen)
    if kind == "map":
        return _choices_needed(schema["values"], named, seen)
    return 1


def _sample(schema: Any, named: _Named, index: int, depth: int) -> Any:
    if isinstance(schema, str):
        return (
            _sample(named[schema], named, index, depth)
            if schema in named
            else _primitive(schema, index)
        )
    if isinstance(schema, list):
        return _union_sample(schema, named, index, depth)
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: _sample(f["type"], named, index, depth + 1) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][index % len(schema["symbols"])]
    if kind == "array":
        return [] if depth > _MAX_DEPTH else [_sample(schema["items"], named, index, depth)]
    if kind == "map":
        return {} if depth > _MAX_DEPTH else {"k": _sample(schema["values"], named, index, depth)}
    if kind == "fixed" and "logicalType" not in schema:
        return bytes(schema["size"])
    return _logical(schema, index)


def _union_sample(branches: list[Any], named: _Named, index: int, depth: int) -> Any:
    if depth > _MAX_DEPTH and "null" in branches:
        return None
    branch = branches[index % len(branches)]
    return _sample(branch, named, index // len(branches), depth + 1)


def _logical(schema: Mapping[str, Any], index: int) -> Any:
    logical_type = schema.get("logicalType")
    if logical_type == "uuid":
        return str(UUID(int=index))
    if logical_type == "decimal":
        return Decimal(index).scaleb(-int(schema.get("scale", 0)))
    return _primitive(schema["type"], index)


def _primitive(kind: str, index: int) -> Any:
    values: dict[str, Any] = {
        "null": None,
        "boolean": index % 2 == 1,
        "int": index,
        "long": index,
        "float": float(index),
        "double": math.ldexp(index, -1),
        "bytes": index.to_bytes(2, "big"),
        "string": f"s{index}",
    }
    if kind not in values:
        raise IncompatibleSchemaError(f"cannot build sample data for Avro type {kind!r}")
    return values[kind]
