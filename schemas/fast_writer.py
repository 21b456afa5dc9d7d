"""Avro binary writers specialised to one schema, byte-identical to fastavro's.

:func:`build_writer` turns a fastavro-parsed schema into a :class:`FastWriter` whose ``encode``
returns ``prefix + body``, where ``body`` is exactly what ``fastavro.schemaless_writer`` writes
for the same record, or ``None`` when it does not handle the record. The caller then runs
fastavro's writer itself, so every error (type, message, field name) stays fastavro's.

How. The writer is Python source generated once per schema and compiled with ``compile()``:
one function with a straight line of code per field, nested records written inline (a
recursive type gets a function of its own), so that a record costs no schema walking and no
per-value dispatch. ``FastWriter.source`` holds the source, commented with the field names.

Subset handled. Records, ``null``, ``boolean``, ``int``, ``long``, ``float``, ``double``,
``bytes``, ``string``, enums, fixed, arrays, maps, unions of ``null`` and one other type,
named-type references (recursive ones too) and the logical types ``timestamp-micros`` and
``timestamp-millis`` on ``long`` (an aware :class:`~datetime.datetime` or ``int``). Logical
types fastavro does not know are written as their underlying type, as fastavro does.

Values handled. Only values that fastavro's writer and its validator both accept and for
which the bytes are certain; anything else makes ``encode`` return ``None``:

* records and maps must be ``dict`` (no other mapping), arrays ``list`` (no tuple, no
  ``array.array``); a record inside a union with a ``-type`` key falls back (fastavro's
  validator, which picks the union's branch, reads it);
* ``string`` and map keys must be ``str``, ``bytes`` and ``fixed`` must be ``bytes``; a string
  that is not valid UTF-8 (a lone surrogate) falls back;
* ``int`` / ``long`` must be ``int`` (not ``bool``) in the 32-bit / 64-bit range;
  ``boolean`` must be ``True`` or ``False``; ``float`` / ``double`` must be ``float``;
* timestamps must be an ``int`` in the 64-bit range or an aware ``datetime`` (exactly that
  type): a naive one falls back (fastavro reads it as local time);
* an enum symbol must be a ``str`` among the symbols.

A missing record key takes the field's default, as in fastavro (``dict.get(name, default)``);
without a default the value is ``None``, which only a type containing ``null`` accepts, so a
missing required field falls back. Keys that are not fields are ignored, as in fastavro.

Schemas falling back whenever a value reaches them: unions other than ``["null", T]`` /
``[T, "null"]`` (fastavro picks their branch by validating each one), except for ``None`` in
one with ``null``, and the logical types fastavro converts other than the two timestamps
(``decimal``, ``uuid``, ``date``, ``time-*``, ``local-timestamp-*``).
"""

from __future__ import annotations

import contextlib
import functools
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastavro.logical_writers import LOGICAL_WRITERS

__all__ = ["FallbackError", "FastWriter", "build_writer"]

Encode = Callable[[Any], bytes | None]


class FallbackError(Exception):
    """Raised inside a generated writer for a value it does not handle; never leaves ``encode``.

    ``encode`` also treats KeyError (a required field missing), TypeError, ValueError
    (UnicodeEncodeError included) and OverflowError as "not handled": a value that raises
    them is one fastavro must judge.
    """


FALLBACK_ERRORS = (FallbackError, KeyError, TypeError, ValueError, OverflowError)


@dataclass(frozen=True, eq=False)
class FastWriter:
    """The compiled writer of one schema.

    ``encode(record)`` returns ``prefix`` followed by the Avro binary body, or ``None`` when
    the record is outside the handled subset (see the module docs). ``source`` is the
    generated Python source.
    """

    name: str
    source: str = field(repr=False)
    encode: Encode = field(repr=False)


def build_writer(schema: Mapping[str, Any] | list[Any] | str, prefix: bytes = b"") -> FastWriter:
    """Generate and compile the writer of a fastavro-parsed schema (``parse_schema`` output).

    Named types referenced by name must be defined earlier in the schema or be listed in its
    ``__named_schemas`` (both hold for fastavro's parsed schemas). Raises ValueError for what
    fastavro could not have parsed, such as an unknown type name.
    """
    generator = _Generator(_named_types(schema))
    source = generator.module(schema)
    namespace = generator.namespace(prefix)
    name = schema.get("name", "") if isinstance(schema, Mapping) else str(schema)
    exec(compile(source, f"<fast_writer {name}>", "exec"), namespace)
    return FastWriter(name=name, source=source, encode=namespace["encode"])


# --- helpers the generated code calls --------------------------------------------------------

# Varints of 0 .. _TABLE_SIZE - 1, and string / bytes length prefixes (zig-zag 2n) of those sizes.
_TABLE_SIZE = 2048
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_TIMESTAMP_UNITS = {
    "long-timestamp-micros": timedelta(microseconds=1),
    "long-timestamp-millis": timedelta(milliseconds=1),
}


def _unsigned_varint(n: int) -> bytes:
    """Unsigned LEB128 of ``n >= 0``: 7 bits a byte, low bits first, high bit = more follow."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = tuple(_unsigned_varint(n) for n in range(_TABLE_SIZE))
# By bit length up to 56 (8 varint bytes): the byte count and the continuation bits.
_SPREAD_BITS = 56
_BYTES_BY_BITS = tuple(max(1, (bits + 6) // 7) for bits in range(_SPREAD_BITS + 1))
_MORE_BY_BITS = tuple(sum(0x80 << (8 * i) for i in range(count - 1)) for count in _BYTES_BY_BITS)


def _varint(n: int) -> bytes:
    """Unsigned LEB128 of ``n >= 0``.

    Small values come from a table. Up to 56 bits (every timestamp in micros until year
    3111), the 7-bit groups are moved apart to one a byte in at most three steps (groups 4-7
    up 4 bits, then groups 2-3 and 6-7 up 2, then the odd ones up 1) and the continuation bits
    are set at once: faster than a byte at a time.
    """
    if n < _TABLE_SIZE:
        return _VARINTS[n]
    bits = n.bit_length()
    if bits <= 28:
        n = (n & 0x3FFF) | ((n & 0xFFFC000) << 2)
    elif bits <= _SPREAD_BITS:
        n = (n & 0xFFFFFFF) | (n >> 28 << 32)
        n = (n & 0x00003FFF00003FFF) | ((n & 0x0FFFC0000FFFC000) << 2)
    else:
        return _unsigned_varint(n)
    n = (n & 0x007F007F007F007F) | ((n & 0x3F803F803F803F80) << 1)
    return (n | _MORE_BY_BITS[bits]).to_bytes(_BYTES_BY_BITS[bits], "little")


@functools.cache
def _length_table(head: bytes) -> tuple[bytes, ...]:
    """``head`` followed by the Avro length prefix (zig-zag ``2n``) of ``n``, by ``n``.

    Shared by every writer: there is one per union branch index in front of a string.
    """
    return tuple(head + _varint(n << 1) for n in range(_TABLE_SIZE))


_HELPERS: dict[str, object] = {
    "FallbackError": FallbackError,
    "FALLBACK_ERRORS": FALLBACK_ERRORS,
    "datetime": datetime,
    "EPOCH": _EPOCH,
    "varint": _varint,
    "VARINTS": _VARINTS,
    "pack_float": struct.Struct("<f").pack,
    "pack_double": struct.Struct("<d").pack,
}


# --- code generation -------------------------------------------------------------------------


def _named_types(schema: Any) -> dict[str, dict[str, Any]]:
    """Every named type defined in a parsed schema, by full name."""
    named: dict[str, dict[str, Any]] = {}
    if isinstance(schema, Mapping):
        named.update(schema.get("__named_schemas", {}))

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch)
        elif isinstance(node, Mapping):
            kind = node.get("type")
            if kind in ("record", "error", "enum", "fixed") and "name" in node:
                named.setdefault(node["name"], node)
            if kind in ("record", "error"):
                for record_field in node.get("fields", ()):
                    walk(record_field["type"])
            elif kind == "array":
                walk(node["items"])
            elif kind == "map":
                walk(node["values"])

    walk(schema)
    return named


class _Generator:
    """Builds the source of one writer module and the constants it refers to.

    Records are written inline where they occur; a record type that contains itself gets a
    function, called where it recurs.
    """

    def __init__(self, named: dict[str, dict[str, Any]]) -> None:
        self._named = named
        self._constants: dict[str, object] = {}
        self._constant_names: dict[tuple[str, Any], str] = {}
        self._functions: dict[str, str] = {}  # record full name -> its function's name
        self._function_sources: list[list[str]] = []
        self._inlining: list[str] = []  # full names of the records being written, outermost first
        self._unions = 0  # how many unions the value being written is in
        self._counter = 0

    def module(self, schema: Any) -> str:
        lines = [
            "def encode(record):",
            "    out = bytearray(PREFIX)",
            "    try:",
            *self._value(schema, "record", 2),
            "    except FALLBACK_ERRORS:",
            "        return None",
            "    return bytes(out)",
        ]
        functions = ["\n".join(source) for source in self._function_sources]
        return "\n\n\n".join(["\n".join(lines), *functions]) + "\n"

    def namespace(self, prefix: bytes) -> dict[str, Any]:
        return {**_HELPERS, **self._constants, "PREFIX": bytes(prefix)}

    def _constant(self, kind: str, value: object, key: Any = None) -> str:
        """A name for ``value`` in the generated module, shared by equal keys."""
        memo = (kind, key if key is not None else id(value))
        name = self._constant_names.get(memo)
        if name is None:
            name = f"{kind}_{len(self._constant_names)}"
            self._constant_names[memo] = name
            self._constants[name] = value
        return name

    def _fresh(self, *stems: str) -> tuple[str, ...]:
        """New variable names, numbered alike: ``("get", "value")`` -> ``("get1", "value1")``."""
        self._counter += 1
        return tuple(f"{stem}{self._counter}" for stem in stems)

    # records

    def _record(self, schema: Mapping[str, Any], var: str, depth: int) -> list[str]:
        full_name = schema["name"]
        if full_name in self._inlining:
            return ["    " * depth + f"{self._record_function(schema)}({var}, out)"]
        self._inlining.append(full_name)
        try:
            return self._record_fields(schema, var, depth)
        finally:
            self._inlining.pop()

    def _record_function(self, schema: Mapping[str, Any]) -> str:
        full_name = schema["name"]
        function = self._functions.get(full_name)
        if function is None:
            function = f"write_{re.sub(r'[^0-9A-Za-z_]', '_', full_name)}_{len(self._functions)}"
            self._functions[full_name] = function  # before the body, which calls it
            outer, self._inlining = self._inlining, [full_name]
            try:
                body = self._record_fields(schema, "record", 1, function=True)
            finally:
                self._inlining = outer
            self._function_sources.append([f"def {function}(record, out):", *body])
        return function

    def _record_fields(
        self, schema: Mapping[str, Any], var: str, depth: int, *, function: bool = False
    ) -> list[str]:
        pad = "    " * depth
        get, value = self._fresh("get", "value")
        # fastavro's validator, which picks a union's branch, refuses a record whose "-type"
        # names another type; a function may be called from a union.
        check_type = self._unions > 0 or function
        lines = [
            f"{pad}# record {schema['name']}",
            f"{pad}if type({var}) is not dict" + (f" or '-type' in {var}:" if check_type else ":"),
            f"{pad}    raise FallbackError",
        ]
        fields, reads = [], []
        for record_field in schema["fields"]:
            reads.append(self._field_value(record_field, var, get))
            fields.append(f"{pad}# {record_field['name']}: {_describe(record_field['type'])}")
            fields.append(f"{pad}{value} = {reads[-1]}")
            fields.extend(self._value(record_field["type"], value, depth))
        if any(read.startswith(f"{get}(") for read in reads):
            lines.append(f"{pad}{get} = {var}.get")
        return lines + fields

    def _field_value(self, record_field: Mapping[str, Any], var: str, get: str) -> str:
        """The expression reading a field as fastavro does: ``record.get(name, default)``.

        A field without a default that cannot be null is read by subscript, faster than
        ``get``: when the key is missing fastavro raises, and the KeyError falls back.
        """
        name = repr(record_field["name"])
        if "default" not in record_field:
            if "null" in record_field["type"]:  # fastavro's own test, substring or branch
                return f"{get}({name})"
            return f"{var}[{name}]"
        default = record_field["default"]
        if record_field["type"] in ("float", "double"):
            # fastavro writes float(value) for such fields, so a default like "NaN" works.
            with contextlib.suppress(TypeError, ValueError):
                default = float(default)
        if default is None or type(default) in (bool, int, str):
            return f"{get}({name}, {default!r})"
        return f"{get}({name}, {self._constant('DEFAULT', default)})"

    # values

    def _value(self, schema: Any, var: str, depth: int) -> list[str]:
        """Lines writing the value in ``var`` at indentation ``depth``."""
        pad = "    " * depth
        if isinstance(schema, list):
            return self._union(schema, var, depth)
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return self._primitive(schema, var, depth)
            if schema not in self._named:
                raise ValueError(f"unknown type {schema!r}: not a fastavro-parsed schema")
            return self._value(self._named[schema], var, depth)
        kind = schema.get("type") if isinstance(schema, Mapping) else None
        if not isinstance(kind, str):
            raise ValueError(f"unknown schema {schema!r}: not a fastavro-parsed schema")
        logical = schema.get("logicalType")
        if logical:
            key = f"{kind}-{logical}"
            if key in _TIMESTAMP_UNITS:
                return self._timestamp(_TIMESTAMP_UNITS[key], var, depth)
            if key in LOGICAL_WRITERS:
                return [f"{pad}raise FallbackError  # logical type {key}"]
        if kind in _PRIMITIVES:
            return self._primitive(kind, var, depth)
        if kind in ("record", "error"):
            return self._record(schema, var, depth)
        if kind == "enum":
            return self._enum(schema, var, depth)
        if kind == "fixed":
            return [
                f"{pad}if type({var}) is not bytes or len({var}) != {int(schema['size'])}:",
                f"{pad}    raise FallbackError",
                f"{pad}out += {var}",
            ]
        if kind == "array":
            return self._array(schema["items"], var, depth)
        if kind == "map":
            return self._map(schema["values"], var, depth)
        raise ValueError(f"unknown schema {schema!r}: not a fastavro-parsed schema")

    def _primitive(self, kind: str, var: str, depth: int, head: bytes = b"") -> list[str]:
        """Lines writing a primitive value, after ``head`` (a union branch index)."""
        pad = "    " * depth
        if kind == "string":
            return [
                f"{pad}if type({var}) is not str:",
                f"{pad}    raise FallbackError",
                f"{pad}data = {var}.encode()",
                *self._length_prefixed("data", pad, head),
            ]
        if kind == "bytes":
            return [
                f"{pad}if type({var}) is not bytes:",
                f"{pad}    raise FallbackError",
                *self._length_prefixed(var, pad, head),
            ]
        lines = [f"{pad}out += {head!r}"] if head else []
        if kind == "null":
            return [*lines, f"{pad}if {var} is not None:", f"{pad}    raise FallbackError"]
        if kind == "boolean":
            return [
                *lines,
                f"{pad}if {var} is True:",
                f"{pad}    out += b'\\x01'",
                f"{pad}elif {var} is False:",
                f"{pad}    out += b'\\x00'",
                f"{pad}else:",
                f"{pad}    raise FallbackError",
            ]
        if kind in ("int", "long"):
            low, high = (_INT_MIN, _INT_MAX) if kind == "int" else (_LONG_MIN, _LONG_MAX)
            return [
                *lines,
                f"{pad}if type({var}) is not int or not {low} <= {var} <= {high}:",
                f"{pad}    raise FallbackError",
                *self._zigzag(var, pad),
            ]
        # float, double: fastavro packs the C float / double, little-endian
        return [
            *lines,
            f"{pad}if type({var}) is not float:",
            f"{pad}    raise FallbackError",
            f"{pad}out += pack_{kind}({var})",
        ]

    def _zigzag(self, var: str, pad: str) -> list[str]:
        """Lines writing the int in ``var`` (in the 64-bit range) as a zig-zag varint."""
        return [
            f"{pad}zigzag = ({var} << 1) ^ ({var} >> 63)",
            f"{pad}out += VARINTS[zigzag] if zigzag < {_TABLE_SIZE} else varint(zigzag)",
        ]

    def _length_prefixed(self, var: str, pad: str, head: bytes = b"") -> list[str]:
        """``head``, then the length of the bytes in ``var`` (zig-zag), then those bytes."""
        return [f"{pad}size = len({var})", *self._length("size", pad, head), f"{pad}out += {var}"]

    def _length(self, size: str, pad: str, head: bytes = b"") -> list[str]:
        """``head``, then the length in ``size`` (zig-zag, so ``2 * size``)."""
        table = self._constant("LENGTHS", _length_table(head), key=head)
        long_head = f"{head!r} + " if head else ""
        return [
            f"{pad}out += {table}[{size}] if {size} < {_TABLE_SIZE} "
            f"else {long_head}varint({size} << 1)"
        ]

    def _timestamp(self, unit: timedelta, var: str, depth: int) -> list[str]:
        pad = "    " * depth
        unit_name = self._constant("UNIT", unit, key=unit)
        return [
            f"{pad}if type({var}) is datetime:",
            f"{pad}    if {var}.tzinfo is None:",
            f"{pad}        raise FallbackError  # naive: fastavro takes it as local time",
            f"{pad}    {var} = ({var} - EPOCH) // {unit_name}",
            f"{pad}elif type({var}) is not int or not {_LONG_MIN} <= {var} <= {_LONG_MAX}:",
            f"{pad}    raise FallbackError",
            *self._zigzag(var, pad),
        ]

    def _enum(self, schema: Mapping[str, Any], var: str, depth: int) -> list[str]:
        pad = "    " * depth
        codes = {symbol: _varint(index << 1) for index, symbol in enumerate(schema["symbols"])}
        table = self._constant("SYMBOLS", codes, key=tuple(schema["symbols"]))
        return [
            f"{pad}code = {table}.get({var}) if type({var}) is str else None",
            f"{pad}if code is None:",
            f"{pad}    raise FallbackError",
            f"{pad}out += code",
        ]

    def _array(self, items: Any, var: str, depth: int) -> list[str]:
        pad = "    " * depth
        (item,) = self._fresh("item")
        return [
            f"{pad}if type({var}) is not list:",
            f"{pad}    raise FallbackError",
            f"{pad}if {var}:",
            f"{pad}    size = len({var})",
            *self._length("size", pad + "    "),
            f"{pad}    for {item} in {var}:",
            *self._value(items, item, depth + 2),
            f"{pad}out += b'\\x00'",
        ]

    def _map(self, values: Any, var: str, depth: int) -> list[str]:
        pad = "    " * depth
        key, entry = self._fresh("key", "entry")
        return [
            f"{pad}if type({var}) is not dict:",
            f"{pad}    raise FallbackError",
            f"{pad}if {var}:",
            f"{pad}    size = len({var})",
            *self._length("size", pad + "    "),
            f"{pad}    for {key}, {entry} in {var}.items():",
            *self._primitive("string", key, depth + 2),
            *self._value(values, entry, depth + 2),
            f"{pad}out += b'\\x00'",
        ]

    def _union(self, branches: list[Any], var: str, depth: int) -> list[str]:
        pad = "    " * depth
        null_index = branches.index("null") if "null" in branches else -1
        if len(branches) != 2 or null_index < 0 or branches[0] == branches[1]:
            # fastavro takes the first branch its validator accepts; only null accepts None.
            if null_index < 0:
                return [f"{pad}raise FallbackError  # union without null"]
            return [
                f"{pad}if {var} is not None:",
                f"{pad}    raise FallbackError  # union of more than null and one type",
                f"{pad}out += {_varint(null_index << 1)!r}",
            ]
        other = branches[1 - null_index]
        null_code, other_code = _varint(null_index << 1), _varint((1 - null_index) << 1)
        if isinstance(other, str) and other in _PRIMITIVES:
            # The branch index goes in front of the value's first bytes, in one append.
            value_lines = self._primitive(other, var, depth + 1, head=other_code)
        else:
            self._unions += 1
            try:
                value_lines = [
                    f"{pad}    out += {other_code!r}",
                    *self._value(other, var, depth + 1),
                ]
            finally:
                self._unions -= 1
        return [
            f"{pad}if {var} is None:",
            f"{pad}    out += {null_code!r}",
            f"{pad}else:",
            *value_lines,
        ]


def _describe(schema: Any) -> str:
    """A short description of a field type for the generated source's comments."""
    if isinstance(schema, list):
        return "[" + ", ".join(_describe(branch) for branch in schema) + "]"
    if isinstance(schema, Mapping):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            return f"{kind} {schema.get('name')}"
        if kind == "array":
            return f"array<{_describe(schema['items'])}>"
        if kind == "map":
            return f"map<{_describe(schema['values'])}>"
        logical = schema.get("logicalType")
        return f"{_describe(kind)} ({logical})" if logical else _describe(kind)
    return str(schema)
