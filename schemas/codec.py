"""Avro encoding of changefeed records, framed so that every message names its writer schema.

Wire formats (chosen per :class:`Codec`):

``single-object`` (default), the Avro specification's single-object encoding::

    C3 01 | CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form,
            8 bytes little-endian | Avro binary body

``confluent``, the Confluent Schema Registry wire format, with ids taken from configuration
because no registry is reachable::

    00 | schema id, 4 bytes big-endian | Avro binary body

Schemas. The current schemas are ``schemas/<namespace>.<Name>.avsc``, one named type per file,
references resolved from the same folder. Older versions stay in
``schemas/archive/<namespace>.<Name>.v<N>.avsc`` as standalone schemas (every referenced type
inlined, so that a later change to a shared type cannot silently change the archived version
and its fingerprint). :meth:`Codec.encode` always writes the current schema;
:meth:`Codec.decode` accepts bytes written with any known version of the requested type and
resolves them to the current schema with Avro schema resolution (fields the writer lacked take
the reader's default, fields the reader dropped are skipped).

Timestamps. ``timestamp-micros`` fields (``occurred_at``, ``subject_changed_at``,
``created_at``, ``failed_at``) accept a timezone-aware :class:`~datetime.datetime` or ``int``
microseconds since the Unix epoch. A naive datetime in a top-level timestamp field is refused
with :class:`EncodeError`, because its instant is ambiguous. Decoding returns aware UTC
datetimes.

Native reader and writer. When the ``changefeed_native`` extension is installed
(:mod:`schemas.native`), ``decode`` reads bodies that need no schema resolution with it and
``encode`` tries it first; whatever it is not certain of goes down the paths below, so values,
bytes and errors are fastavro's either way.

Cost of checks. ``encode`` first tries a writer specialised to the record type
(:mod:`schemas.fast_writer`, generated when the codec is built), which writes the same bytes
as fastavro's writer several times faster, but only for records whose every value has exactly
the expected type and range. Anything else (a missing required field, a wrong type, an unknown
enum symbol, a naive datetime, an ``int`` beyond its range...) goes to the path below, so
errors are the same either way.

That path leaves rejecting a bad record to fastavro's writer, which must look at every value
anyway, and runs the slower full validation only after a failure, to name the field. Before
writing it checks the top-level fields for what the writer would silently get wrong: naive
datetimes, ``int`` values beyond 32 bits, non-bool values for ``boolean``. Keys that are not
fields are ignored, as Avro projection does. :meth:`Codec.validate` makes the complete check,
nested fields included, for callers who want it, e.g. for input from outside the process.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any, Literal, cast

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import (
    SchemaParseException,
    UnknownType,
    fingerprint,
    load_schema,
    parse_schema,
    to_parsing_canonical_form,
)
from fastavro.validation import ValidationError, validate

from schemas import native
from schemas.errors import (
    DecodeError,
    EncodeError,
    SchemaLoadError,
    SchemaNotFoundError,
    UnknownSchemaError,
)
from schemas.fast_writer import build_writer

SCHEMA_DIR = Path(__file__).resolve().parent
ARCHIVE_DIR = SCHEMA_DIR / "archive"

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
SINGLE_OBJECT_HEADER_SIZE = len(SINGLE_OBJECT_MAGIC) + 8
CONFLUENT_MAGIC = b"\x00"
CONFLUENT_HEADER_SIZE = len(CONFLUENT_MAGIC) + 4
CONFLUENT_MAX_ID = 2**31 - 1

Framing = Literal["single-object", "confluent"]
ParsedSchema = dict[str, Any]

_ARCHIVE_STEM = re.compile(r"^(?P<full_name>.+)\.v(?P<number>[1-9][0-9]*)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_AWARE_TIMESTAMP_TYPES = frozenset({"timestamp-millis", "timestamp-micros", "timestamp-nanos"})
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_NAIVE_DATETIME = "is a naive datetime; give an aware one or int microseconds"
_OUTSIDE_INT = "is outside the 32-bit range of an Avro int"
_NOT_BOOL = "must be a bool"
_FIELD_IN_WRITER_MESSAGE = re.compile(r"(?:on field|no default for) (?P<field>\w+)")

# What fastavro's writer raises for a record that does not fit (AttributeError: not a mapping).
_ENCODE_FAILURES = (ValueError, TypeError, KeyError, AttributeError, OverflowError)
# What fastavro's reader raises on bytes that are not a valid body for the writer schema.
_DECODE_FAILURES = (
    EOFError,
    IndexError,
    KeyError,
    ValueError,
    TypeError,
    OverflowError,
    AttributeError,
)


@dataclass(frozen=True, eq=False)
class SchemaVersion:
    """One writer schema the codec knows: a current schema or an archived older version.

    ``label`` is the file's stem: the full name for a current schema
    (``changefeed.ApiAction``), ``<full name>.v<N>`` for an archived one. It is also the key
    of the Confluent ``schema_ids`` map.
    """

    label: str
    full_name: str
    path: Path
    schema: ParsedSchema = field(repr=False)
    canonical_form: str = field(repr=False)
    fingerprint: bytes

    @property
    def archived(self) -> bool:
        return self.label != self.full_name


@dataclass(frozen=True, slots=True)
class _EncodePlan:
    schema: ParsedSchema
    header: bytes
    # Top-level fields fastavro's writer would encode wrongly without complaint:
    timestamp_fields: tuple[str, ...]  # a naive datetime is taken as UTC
    int_fields: tuple[str, ...]  # an int beyond 32 bits is written as a long
    boolean_fields: tuple[str, ...]  # any value is written by its truth: "false" is true
    # Header and body from the specialised writer, or None: then fastavro's writer decides.
    fast_encode: Callable[[object], bytes | None]
    # The same from the native writer (schemas.native), tried first; None when not installed.
    native_encode: Callable[[object], bytes | None] | None = None


@dataclass(frozen=True, slots=True)
class _DecodePlan:
    name: str
    version: SchemaVersion
    reader_schema: ParsedSchema | None  # None when the writer schema is the current one
    # Top-level timestamp fields: what ``timestamps="micros"`` converts on the fastavro path.
    timestamp_fields: tuple[str, ...] = ()
    # The native readers of the writer schema (schemas.native), when it needs no resolution:
    # timestamps as datetimes, and as int microseconds.
    native_read: native.Read | None = None
    native_read_micros: native.Read | None = None


class _Sink:
    """Collects the body fastavro writes, appended to the frame header.

    fastavro's compiled writer calls ``write`` once with the whole body, so this saves the
    BytesIO allocation and the copy out of it.
    """

    __slots__ = ("data",)

    def __init__(self, header: bytes) -> None:
        self.data = header

    def write(self, chunk: bytes | bytearray) -> None:
        self.data += chunk


class Codec:
    """Encodes and decodes changefeed records; built once per process (see :func:`default_codec`).

    Loading parses and fingerprints every schema, so a codec is expensive to build and cheap to
    use; it holds no mutable state after ``__init__`` and is safe to share between threads and
    tasks.

    ``framing`` selects the wire format (see the module docs). ``schema_ids`` is required for
    ``confluent`` framing and maps schema labels (current full names such as
    ``changefeed.ApiAction``, or archived labels such as ``changefeed.ApiAction.v1``) to registry
    ids; a version without an id can be neither encoded nor decoded.

    ``use_native=False`` leaves out the native reader and writer (:mod:`schemas.native`)
    even when they are installed; values, bytes and errors are the same either way.
    """

    def __init__(
        self,
        schema_dir: Path | str = SCHEMA_DIR,
        archive_dir: Path | str | None = None,
        *,
        framing: Framing = "single-object",
        schema_ids: Mapping[str, int] | None = None,
        use_native: bool = True,
    ) -> None:
        schema_dir = Path(schema_dir)
        archive = Path(archive_dir) if archive_dir is not None else schema_dir / "archive"
        current = _load_current_versions(schema_dir)
        archived = _load_archived_versions(archive, current)
        self.framing: Framing = framing
        self._current = {version.full_name: version for version in current}
        self._versions = (*current, *archived)
        headers = _frame_headers(self._versions, framing, schema_ids)
        self._encoders = _encode_plans(current, headers, use_native)
        self._decoders = _decode_plans(self._versions, self._current, headers, use_native)
        self._header_size = (
            SINGLE_OBJECT_HEADER_SIZE if framing == "single-object" else CONFLUENT_HEADER_SIZE
        )

    @property
    def versions(self) -> tuple[SchemaVersion, ...]:
        """Every schema the codec can read: current ones first, then archived ones."""
        return self._versions

    def schema(self, name: str) -> ParsedSchema:
        """The current fastavro-parsed schema of a record type; shared, so do not modify it."""
        return self._current_version(name).schema

    def fingerprint(self, name: str) -> bytes:
        """CRC-64-AVRO fingerprint of the current schema ``name``: 8 bytes, little-endian."""
        return self._current_version(name).fingerprint

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Frame and encode ``record`` with the current schema of record type ``name``.

        Raises :class:`EncodeError` (naming the field where possible) when the record does not
        fit, and :class:`SchemaNotFoundError` when ``name`` is not an encodable record type.
        """
        plan = self._encoders.get(name)
        if plan is None:
            raise self._not_encodable(name)
        if plan.native_encode is not None:
            data = plan.native_encode(record)
            if data is not None:
                return data
        data = plan.fast_encode(record)
        if data is not None:
            return data
        sink = _Sink(plan.header)
        try:
            _refuse_silent_mistakes(name, plan, record)
            # fastavro only calls .write on the sink; its stub asks for a full IO.
            schemaless_writer(sink, plan.schema, record)  # type: ignore[arg-type]
        except _ENCODE_FAILURES as exc:
            raise _encode_error(name, plan.schema, record, exc) from exc
        return sink.data

    def decode(
        self,
        data: bytes | bytearray | memoryview,
        name: str,
        *,
        timestamps: Literal["datetime", "micros"] = "datetime",
    ) -> dict[str, Any]:
        """Decode framed bytes into a record of the current schema of record type ``name``.

        The frame names the writer schema; any known version of ``name`` is resolved to the
        current one. Raises :class:`UnknownSchemaError` when the writer schema is not known or
        is not a version of ``name``, :class:`DecodeError` for anything else that prevents
        decoding (bad magic, truncated or trailing bytes, garbage), and
        :class:`SchemaNotFoundError` when ``name`` itself is not a known record type.
        Timestamps come back as aware UTC datetimes, or with ``timestamps="micros"`` as int
        microseconds since the epoch (cheaper, for callers that compute with them).
        """
        if type(data) is not bytes:
            data = bytes(data)
        header_size = self._header_size
        plan = self._decoders.get(data[:header_size])
        if plan is None or plan.name != name:
            raise self._unreadable(data, name, plan)
        micros = timestamps == "micros"
        read = plan.native_read_micros if micros else plan.native_read
        if read is not None:
            try:
                record, end = read(data, header_size)
            except Exception:  # noqa: BLE001 - not certain: fastavro decides, below
                pass
            else:
                if end == len(data):
                    return cast(dict[str, Any], record)
        body = data[header_size:]  # measured faster than seeking past the header
        buffer = BytesIO(body)
        try:
            record = schemaless_reader(buffer, plan.version.schema, plan.reader_schema)
        except SchemaResolutionError as exc:
            raise UnknownSchemaError(
                f"{plan.version.label} data cannot be resolved to the current {name}: {exc}",
                schema_key=self._schema_key(data),
            ) from exc
        except _DECODE_FAILURES as exc:
            raise DecodeError(f"{plan.version.label} body is undecodable: {exc!r}") from exc
        trailing = len(body) - buffer.tell()
        if trailing:
            raise DecodeError(f"{plan.version.label} body is followed by {trailing} extra bytes")
        decoded = cast(dict[str, Any], record)
        if micros:
            for field_name in plan.timestamp_fields:
                moment = decoded.get(field_name)
                if isinstance(moment, datetime):
                    decoded[field_name] = _micros_since_epoch(moment)
        return decoded

    def validate(self, name: str, record: Mapping[str, Any]) -> None:
        """Check ``record`` completely against the current schema ``name`` without encoding.

        Catches what ``encode`` lets through for speed: nested ``int`` values beyond 32 bits and
        nested ``boolean`` fields given other types. Raises :class:`EncodeError` naming the
        offending field.
        """
        plan = _encode_plan(self._current_version(name).schema, header=b"", fast=False)
        if not isinstance(record, Mapping):
            raise EncodeError(f"{name} record must be a mapping, not {type(record).__name__}")
        _refuse_silent_mistakes(name, plan, record)
        invalid_field = _first_invalid_field(plan.schema, record)
        if invalid_field is not None:
            raise EncodeError(f"{name} record does not fit at {invalid_field}", field=invalid_field)

    def _current_version(self, name: str) -> SchemaVersion:
        version = self._current.get(name)
        if version is None or version.schema.get("type") != "record":
            raise SchemaNotFoundError(name, f"known record types: {self._record_names()}")
        return version

    def _record_names(self) -> str:
        names = (n for n, v in self._current.items() if v.schema.get("type") == "record")
        return ", ".join(sorted(names))

    def _not_encodable(self, name: str) -> SchemaNotFoundError:
        self._current_version(name)  # raises for names that are not record types
        return SchemaNotFoundError(name, f"no id for it in the {self.framing} schema_ids")

    def _schema_key(self, data: bytes) -> bytes | int:
        """The fingerprint or schema id in the frame header; DecodeError if there is none."""
        if self.framing == "single-object":
            if len(data) < SINGLE_OBJECT_HEADER_SIZE or data[:2] != SINGLE_OBJECT_MAGIC:
                raise DecodeError(
                    f"not Avro single-object encoding: expected {SINGLE_OBJECT_MAGIC.hex()} and "
                    f"an 8-byte fingerprint, got {data[:SINGLE_OBJECT_HEADER_SIZE].hex()!r}"
                )
            return data[2:SINGLE_OBJECT_HEADER_SIZE]
        if len(data) < CONFLUENT_HEADER_SIZE or data[:1] != CONFLUENT_MAGIC:
            raise DecodeError(
                "not Confluent framing: expected magic byte 00 and a 4-byte schema id, got "
                f"{data[:CONFLUENT_HEADER_SIZE].hex()!r}"
            )
        return int.from_bytes(data[1:CONFLUENT_HEADER_SIZE], "big")

    def _unreadable(self, data: bytes, name: str, plan: _DecodePlan | None) -> Exception:
        self._current_version(name)  # a wrong name is the caller's bug, not the data's
        key = self._schema_key(data)
        shown = key.hex() if isinstance(key, bytes) else str(key)
        what = "fingerprint" if isinstance(key, bytes) else "schema id"
        if plan is None:
            return UnknownSchemaError(f"unknown writer {what} {shown}", schema_key=key)
        return UnknownSchemaError(
            f"writer {what} {shown} is {plan.version.label}, not a version of {name}",
            schema_key=key,
        )


@functools.cache
def default_codec() -> Codec:
    """The process-wide single-object codec over ``schemas/`` and ``schemas/archive/``."""
    return Codec()


def canonical_fingerprint(schema: ParsedSchema) -> bytes:
    """CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form, as the 8 wire bytes.

    fastavro returns the hex of the little-endian bytes (the order the specification's
    single-object header uses), so ``bytes.fromhex`` yields the header bytes directly.
    """
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def _load_current_versions(schema_dir: Path) -> list[SchemaVersion]:
    paths = sorted(schema_dir.glob("*.avsc"))
    if not paths:
        raise SchemaLoadError(f"no *.avsc schema files in {schema_dir}")
    versions = [_version_from_schema(path, path.stem, _load_referencing(path)) for path in paths]
    for version in versions:
        if version.full_name != version.label:
            raise SchemaLoadError(
                f"{version.path} defines {version.full_name}; the file must be named "
                f"{version.full_name}.avsc so that references to it resolve"
            )
    return versions


def _load_archived_versions(
    archive_dir: Path, current: Iterable[SchemaVersion]
) -> list[SchemaVersion]:
    if not archive_dir.is_dir():
        return []
    current_names = {version.full_name for version in current}
    versions = []
    for path in sorted(archive_dir.glob("*.avsc")):
        match = _ARCHIVE_STEM.match(path.stem)
        if match is None:
            raise SchemaLoadError(f"{path}: archived schemas are named <full name>.v<N>.avsc")
        version = _version_from_schema(path, path.stem, _load_standalone(path))
        if version.full_name != match["full_name"]:
            raise SchemaLoadError(f"{path} defines {version.full_name}, not {match['full_name']}")
        if version.full_name not in current_names:
            raise SchemaLoadError(f"{path} is a version of {version.full_name}, which is gone")
        versions.append(version)
    return versions


def _load_referencing(path: Path) -> ParsedSchema:
    try:
        return cast(ParsedSchema, load_schema(str(path)))
    except (OSError, ValueError, SchemaParseException, UnknownType) as exc:
        raise SchemaLoadError(f"cannot load {path}: {exc}") from exc


def _load_standalone(path: Path) -> ParsedSchema:
    try:
        return cast(ParsedSchema, parse_schema(json.loads(path.read_text(encoding="utf-8"))))
    except UnknownType as exc:
        raise SchemaLoadError(
            f"{path} refers to {exc.name}; archived schemas must inline every type they use"
        ) from exc
    except (OSError, ValueError, SchemaParseException) as exc:
        raise SchemaLoadError(f"cannot load {path}: {exc}") from exc


def _version_from_schema(path: Path, label: str, schema: ParsedSchema) -> SchemaVersion:
    if not isinstance(schema, dict) or "name" not in schema:
        raise SchemaLoadError(f"{path} must define one named type")
    return SchemaVersion(
        label=label,
        full_name=schema["name"],
        path=path,
        schema=schema,
        canonical_form=to_parsing_canonical_form(schema),
        fingerprint=canonical_fingerprint(schema),
    )


def _frame_headers(
    versions: Iterable[SchemaVersion], framing: str, schema_ids: Mapping[str, int] | None
) -> dict[str, bytes]:
    """Frame header bytes by version label; labels without a header cannot be framed."""
    if framing == "single-object":
        if schema_ids is not None:
            raise SchemaLoadError("schema_ids only apply to confluent framing")
        return {v.label: SINGLE_OBJECT_MAGIC + v.fingerprint for v in versions}
    if framing != "confluent":
        raise SchemaLoadError(f"unknown framing {framing!r}: single-object or confluent")
    if not schema_ids:
        raise SchemaLoadError("confluent framing needs schema_ids (label -> registry id)")
    return _confluent_headers({v.label for v in versions}, schema_ids)


def _confluent_headers(labels: set[str], schema_ids: Mapping[str, int]) -> dict[str, bytes]:
    unknown = sorted(set(schema_ids) - labels)
    if unknown:
        raise SchemaLoadError(f"schema_ids name unknown schemas: {', '.join(unknown)}")
    seen: dict[int, str] = {}
    for label, schema_id in schema_ids.items():
        if isinstance(schema_id, bool) or not isinstance(schema_id, int):
            raise SchemaLoadError(f"schema id of {label} must be an int, not {schema_id!r}")
        if not 0 <= schema_id <= CONFLUENT_MAX_ID:
            raise SchemaLoadError(f"schema id of {label} must be in 0..{CONFLUENT_MAX_ID}")
        if schema_id in seen:
            raise SchemaLoadError(f"schema id {schema_id} given to {seen[schema_id]} and {label}")
        seen[schema_id] = label
    return {label: CONFLUENT_MAGIC + sid.to_bytes(4, "big") for label, sid in schema_ids.items()}


def _encode_plans(
    current: Iterable[SchemaVersion], headers: Mapping[str, bytes], use_native: bool
) -> dict[str, _EncodePlan]:
    return {
        version.full_name: _encode_plan(
            version.schema, headers[version.label], use_native=use_native
        )
        for version in current
        if version.label in headers and version.schema["type"] == "record"
    }


def _encode_plan(
    schema: ParsedSchema, header: bytes, *, fast: bool = True, use_native: bool = False
) -> _EncodePlan:
    """How to encode one record type; ``fast=False`` skips generating the specialised writer,
    ``use_native`` adds the native one when it is installed.

    Only top-level fields get the extra checks, which covers every such field of the
    changefeed schemas; :meth:`Codec.validate` checks nested ones too.
    """
    fields = [(f["name"], _optional_type(f["type"])) for f in schema["fields"]]
    return _EncodePlan(
        schema=schema,
        header=header,
        timestamp_fields=tuple(n for n, t in fields if _is_aware_timestamp(t)),
        int_fields=tuple(n for n, t in fields if t == "int"),
        boolean_fields=tuple(n for n, t in fields if t == "boolean"),
        fast_encode=build_writer(schema, prefix=header).encode if fast else _no_fast_encode,
        native_encode=native.writer(schema, header) if fast and use_native else None,
    )


def _no_fast_encode(record: object) -> None:
    """The specialised writer of a plan that has none: every record goes to fastavro."""
    return None


def _decode_plans(
    versions: Iterable[SchemaVersion],
    current: Mapping[str, SchemaVersion],
    headers: Mapping[str, bytes],
    use_native: bool,
) -> dict[bytes, _DecodePlan]:
    """Decode plans keyed by the whole frame header (magic and fingerprint or schema id).

    Keying by the header makes the magic check and the schema lookup one dict lookup; a miss
    is sorted out on the slow path. A current schema comes first, so an archived copy
    identical to it (same fingerprint) does not replace it and its data is read without
    resolution.
    """
    plans: dict[bytes, _DecodePlan] = {}
    for version in versions:
        header = headers.get(version.label)
        if header is None or version.schema["type"] != "record":
            continue
        reader = current[version.full_name]
        same = reader.fingerprint == version.fingerprint
        if header in plans:
            continue
        stamps = _timestamp_fields(reader.schema)
        if same and use_native:
            plans[header] = _DecodePlan(
                version.full_name,
                version,
                None,
                stamps,
                native.reader(version.schema),
                native.reader(version.schema, micros=True),
            )
        else:
            plans[header] = _DecodePlan(
                version.full_name, version, None if same else reader.schema, stamps
            )
    return plans


def _timestamp_fields(schema: ParsedSchema) -> tuple[str, ...]:
    """The top-level timestamp fields of a record schema; refuses one with nested ones,
    which ``timestamps="micros"`` would leave as datetimes on the fastavro path."""
    stamps = tuple(
        f["name"] for f in schema["fields"] if _is_aware_timestamp(_optional_type(f["type"]))
    )
    inner = [f["type"] for f in schema["fields"] if f["name"] not in stamps]
    if '"timestamp-' in json.dumps(inner, default=str):
        raise SchemaLoadError(f"{schema['name']}: timestamps below the top level are not read")
    return stamps


def _micros_since_epoch(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _optional_type(field_type: Any) -> Any:
    """The type of a field, seen through a ``["null", T]`` union."""
    if isinstance(field_type, list) and len(field_type) == 2 and "null" in field_type:
        return field_type[1] if field_type[0] == "null" else field_type[0]
    return field_type


def _is_aware_timestamp(field_type: Any) -> bool:
    return isinstance(field_type, dict) and field_type.get("logicalType") in _AWARE_TIMESTAMP_TYPES


def _refuse_silent_mistakes(name: str, plan: _EncodePlan, record: Mapping[str, Any]) -> None:
    """Raise EncodeError for values fastavro's writer would encode wrongly without complaint.

    An absent value (None) is left to fastavro, which uses the default or names the field.
    """
    get = record.get
    for field_name in plan.timestamp_fields:
        value = get(field_name)
        if isinstance(value, datetime) and value.tzinfo is None:
            raise _field_error(name, field_name, _NAIVE_DATETIME)
    for field_name in plan.int_fields:
        value = get(field_name)
        if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
            raise _field_error(name, field_name, _OUTSIDE_INT)
    for field_name in plan.boolean_fields:
        value = get(field_name)
        if value is not None and value is not True and value is not False:
            raise _field_error(name, field_name, _NOT_BOOL)


def _field_error(name: str, field_name: str, problem: str) -> EncodeError:
    where = f"{name}.{field_name}"
    return EncodeError(f"{where} {problem}", field=where)


def _encode_error(name: str, schema: ParsedSchema, record: object, exc: Exception) -> EncodeError:
    if not isinstance(record, Mapping):
        return EncodeError(f"{name} record must be a mapping, not {type(record).__name__}")
    invalid_field = _first_invalid_field(schema, record)
    if invalid_field is None:
        match = _FIELD_IN_WRITER_MESSAGE.search(str(exc))
        invalid_field = f"{name}.{match['field']}" if match else None
    where = f" at {invalid_field}" if invalid_field else ""
    return EncodeError(f"{name} record does not fit{where}: {exc}", field=invalid_field)


def _first_invalid_field(schema: ParsedSchema, record: object) -> str | None:
    """The most specific field fastavro's validator objects to, or None if it accepts all.

    For a union the validator reports every branch it tried; the last report is the deepest
    one (e.g. ``changefeed.SubjectRef.id`` rather than ``changefeed.ApiAction.subject_ref``).
    """
    try:
        validate(record, schema, raise_errors=True)
    except ValidationError as exc:
        problems = exc.errors
        return str(problems[-1].field) if problems else None
    except _ENCODE_FAILURES:
        return None
    return None
