"""Hypothesis strategies for values of Avro schemas, shared by the writer and reader tests."""

import json
from datetime import UTC, timedelta, timezone
from io import BytesIO
from typing import Any
from zoneinfo import ZoneInfo

from fastavro import schemaless_writer
from hypothesis import strategies as st

from schemas.codec import SCHEMA_DIR, default_codec

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}

# --- values of a schema ----------------------------------------------------------------------

_EDGE_INTS = [0, 1, -1, 63, -64, 64, -65, 1023, 1024, 8191, 8192, -8193, 2**20, -(2**27)]
_EDGE_LONGS = [*_EDGE_INTS, INT_MAX, INT_MIN, 2**31, 2**55 - 1, 2**55, -(2**55)]
_EDGE_LONGS += [2**56, 2**62, LONG_MAX, LONG_MIN, LONG_MAX - 1, LONG_MIN + 1]
_ZONES = [
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(-timedelta(hours=8)),
    ZoneInfo("Europe/Paris"),
]
_non_bmp = st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF, categories=["L", "S"])
_texts = (
    st.text(max_size=30)
    | st.text(alphabet=_non_bmp, max_size=8)
    # 2 048 bytes and more: the length no longer comes from the writer's table
    | st.builds(lambda s, n: s * n, st.sampled_from(["a", "é", "€", "😀"]), st.integers(510, 2100))
)
_binaries = st.binary(max_size=30) | st.binary(min_size=2040, max_size=2060)
_ints = st.integers(INT_MIN, INT_MAX) | st.sampled_from(_EDGE_INTS + [INT_MAX, INT_MIN])
_longs = st.integers(LONG_MIN, LONG_MAX) | st.sampled_from(_EDGE_LONGS)
_aware = st.datetimes(timezones=st.sampled_from(_ZONES))
_timestamps = _aware | _longs
_PRIMITIVE_VALUES = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": _ints,
    "long": _longs,
    "float": st.floats(width=32),  # representable in 32 bits (NaN and infinities included)
    "double": st.floats(),
    "bytes": _binaries,
    "string": _texts,
}


def values(schema: Any, named: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values fastavro's writer accepts for ``schema``, of exactly the expected types.

    Collections are small, and empty from depth 5 down, where unions are null if they can
    be (which ends recursive types).
    """
    if isinstance(schema, list):
        if depth >= 5 and "null" in schema:
            return st.none()
        return st.one_of(*(values(branch, named, depth) for branch in schema))
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return _PRIMITIVE_VALUES[schema]
        return values(named[schema], named, depth)
    kind, logical = schema["type"], schema.get("logicalType")
    if logical in ("timestamp-micros", "timestamp-millis") and kind == "long":
        return _timestamps
    if kind in PRIMITIVES:
        return _PRIMITIVE_VALUES[kind]
    if depth >= 5 and kind in ("array", "map"):
        return st.builds(list if kind == "array" else dict)
    if kind == "record":
        fields = schema["fields"]
        required = {f["name"]: values(f["type"], named, depth + 1) for f in fields}
        # A field with a default may be left out: the writer must use the default.
        optional = {n: required.pop(n) for n in list(required) if _has_default(fields, n)}
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "array":
        return st.lists(values(schema["items"], named, depth + 1), max_size=6)
    if kind == "map":
        return st.dictionaries(_texts, values(schema["values"], named, depth + 1), max_size=6)
    raise AssertionError(f"no values for {schema}")


def _has_default(fields: list[dict[str, Any]], name: str) -> bool:
    return any(f["name"] == name and "default" in f for f in fields)


def named_types(schema: dict[str, Any]) -> dict[str, Any]:
    """The named types a fastavro-parsed schema refers to by name."""
    return schema.get("__named_schemas", {})


RECORD_TYPES = sorted(
    f"{s['namespace']}.{s['name']}"
    for s in (json.loads(path.read_text()) for path in SCHEMA_DIR.glob("*.avsc"))
    if s["type"] == "record"
)
"""Every record type of the changefeed schemas."""


@st.composite
def records(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A record type of the changefeed schemas and a value of it."""
    name = draw(st.sampled_from(RECORD_TYPES))
    schema = default_codec().schema(name)
    return name, draw(values(schema, named_types(schema)))


def fastavro_body(schema: Any, record: Any) -> bytes:
    """What fastavro's writer writes for ``record``."""
    buffer = BytesIO()
    schemaless_writer(buffer, schema, record)
    return buffer.getvalue()
