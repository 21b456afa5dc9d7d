"""File formats of ``changefeed replay --output DIR``: JSON lines, Avro container files, Parquet.

Every format writes the same rows: ``{"partition", "offset", "value"}`` where ``value`` is
the record decoded to the current schema of its topic (``changefeed.ChangeEvent`` for
``changes``, ``ApiAction`` for ``actions``, ``DeadLetter`` for ``actions.dlq``). So a file
of any format read back holds what the JSON lines export holds.

* **jsonl**: one JSON object a line; timestamps as ISO 8601, bytes as hex (as
  ``changefeed replay`` to stdout has always written).
* **avro**: an Avro object container file whose header holds the writer schema (a record
  ``changefeed.export.<Name>Row`` with ``partition``, ``offset`` and ``value`` of the topic's
  full current schema), readable by fastavro, Spark and DuckDB. Records written with the
  current schema in single-object encoding are copied without decoding: an Avro record's
  binary form is its fields' forms one after the other, so the row is the zig-zag varints
  of partition and offset followed by the record's own body. Others (older schema versions,
  Confluent framing) are decoded, resolved and re-encoded. Blocks are compressed with
  ``snappy`` (the default, as Spark writes them; several times faster than ``deflate``),
  ``deflate`` (smaller files), or left ``null``.
* **parquet** (optional extra ``changefeed[parquet]``, pyarrow): the same rows with the
  Avro schema mapped to Arrow (records as structs, maps as maps, unions with null as
  nullable columns, ``timestamp-micros`` as UTC timestamps).

A writer writes one file; :mod:`changefeed.export` rolls files by size and checkpoints.
"""

from __future__ import annotations

import io
import json
import os
import zlib
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import cramjam
from fastavro import schemaless_writer
from fastavro.schema import parse_schema

from changefeed.errors import ChangefeedError
from schemas.codec import SINGLE_OBJECT_HEADER_SIZE, SINGLE_OBJECT_MAGIC, Codec
from schemas.errors import SchemaError
from schemas.schema_export import standalone

Format = Literal["jsonl", "avro", "parquet"]
FORMATS: tuple[Format, ...] = ("jsonl", "avro", "parquet")
EXTENSIONS: dict[str, str] = {"jsonl": "jsonl", "avro": "avro", "parquet": "parquet"}
AVRO_CODECS = ("snappy", "deflate", "null")
AVRO_BLOCK_BYTES = 256 * 1024
PARQUET_ROW_GROUP = 20_000
SYNC_MARKER_SIZE = 16


class ExportFormatError(ChangefeedError):
    """A format cannot be written (unknown, or its optional library is not installed)."""


class UndecodableRecord(ExportFormatError):
    """A record that does not decode as the topic's schema: skipped and counted by Avro and
    Parquet exports (JSON lines keep it as raw bytes with the reason)."""


class RecordLike(Protocol):
    partition: int
    offset: int
    value: bytes


class FileWriter(Protocol):
    """Writes rows of one file; ``bytes_written`` counts what reached the file so far."""

    @property
    def bytes_written(self) -> int: ...

    def write(self, record: RecordLike) -> None: ...

    def close(self) -> None: ...


def _decoded(codec: Codec, record: RecordLike, name: str) -> dict[str, Any]:
    if record.value is None:
        raise UndecodableRecord(f"offset {record.offset} of partition {record.partition} is empty")
    try:
        return codec.decode(record.value, name)
    except SchemaError as exc:
        raise UndecodableRecord(
            f"offset {record.offset} of partition {record.partition}: {exc}"
        ) from exc


def json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_row(record: RecordLike, codec: Codec, record_name: str | None) -> str:
    """The JSON line of ``record`` (the same line ``changefeed replay`` prints)."""
    body: object
    if record_name is None or record.value is None:
        body = {"raw": None if record.value is None else record.value.hex()}
    else:
        try:
            body = codec.decode(record.value, record_name)
        except SchemaError as exc:
            # A record that is not what the topic should hold is written as it is, with
            # why: it never stops the replay, and nothing is silently dropped.
            body = {"raw": record.value.hex(), "undecodable": str(exc)}
    row = {"partition": record.partition, "offset": record.offset, "value": body}
    return json.dumps(row, default=json_default)


def open_writer(
    fmt: Format, path: Path, codec: Codec, record_name: str | None, *, avro_codec: str = "snappy"
) -> FileWriter:
    if fmt == "jsonl":
        return JsonLinesWriter(path, codec, record_name)
    if record_name is None:
        raise ExportFormatError(f"--format {fmt} needs a project topic (its schema is known)")
    if fmt == "avro":
        return AvroContainerWriter(path, codec, record_name, avro_codec)
    if fmt == "parquet":
        return ParquetWriter(path, codec, record_name)
    raise ExportFormatError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


class JsonLinesWriter:
    def __init__(self, path: Path, codec: Codec, record_name: str | None) -> None:
        self._out: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._codec = codec
        self._name = record_name
        self.bytes_written = 0

    def write(self, record: RecordLike) -> None:
        line = (json_row(record, self._codec, self._name) + "\n").encode()
        self._out.write(line)
        self.bytes_written += len(line)

    def close(self) -> None:
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()


# -- Avro object container files -----------------------------------------------------------


def row_schema(codec: Codec, record_name: str) -> dict[str, Any]:
    """The export row of ``record_name``: partition, offset and the record itself."""
    short = record_name.rsplit(".", 1)[-1]
    return {
        "type": "record",
        "name": f"{short}Row",
        "namespace": "changefeed.export",
        "doc": f"A {record_name} record of a changefeed topic, with where it was read",
        "fields": [
            {"name": "partition", "type": "int"},
            {"name": "offset", "type": "long"},
            {"name": "value", "type": standalone(codec.schema(record_name))},
        ],
    }


def zigzag_varint(value: int) -> bytes:
    """Avro's binary form of an ``int`` / ``long``."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_PARTITION_VARINTS = [zigzag_varint(p) for p in range(4096)]  # partitions a topic may have


def _avro_bytes(data: bytes) -> bytes:
    return zigzag_varint(len(data)) + data


class AvroContainerWriter:
    """An Avro object container file written block by block (see the module docstring)."""

    def __init__(self, path: Path, codec: Codec, record_name: str, compression: str) -> None:
        if compression not in AVRO_CODECS:
            raise ExportFormatError(f"Avro codec must be one of {', '.join(AVRO_CODECS)}")
        self._codec = codec
        self._name = record_name
        self._compression = compression
        self._header = SINGLE_OBJECT_MAGIC + codec.fingerprint(record_name)
        self._value_schema = parse_schema(codec.schema(record_name))
        self._sync = os.urandom(SYNC_MARKER_SIZE)
        self._block: list[bytes] = []
        self._block_bytes = 0
        self._out: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed by close()
        schema_json = json.dumps(row_schema(codec, record_name), separators=(",", ":"))
        meta = {"avro.schema": schema_json.encode(), "avro.codec": compression.encode()}
        header = bytearray(b"Obj\x01")
        header += zigzag_varint(len(meta))
        for key, value in meta.items():
            header += _avro_bytes(key.encode()) + _avro_bytes(value)
        header += zigzag_varint(0) + self._sync
        self._out.write(header)
        self._flushed = len(header)

    def write(self, record: RecordLike) -> None:
        value = record.value
        if value is not None and value[:SINGLE_OBJECT_HEADER_SIZE] == self._header:
            body = value[SINGLE_OBJECT_HEADER_SIZE:]
        else:  # an older writer schema or Confluent framing: resolve, then re-encode
            buffer = io.BytesIO()
            schemaless_writer(buffer, self._value_schema, _decoded(self._codec, record, self._name))
            body = buffer.getvalue()
        row = _PARTITION_VARINTS[record.partition] + zigzag_varint(record.offset) + body
        self._block.append(row)
        self._block_bytes += len(row)
        if self._block_bytes >= AVRO_BLOCK_BYTES:
            self._flush_block()

    @property
    def bytes_written(self) -> int:
        """Bytes in the file, counting the open block at its uncompressed size."""
        return self._flushed + self._block_bytes

    def _flush_block(self) -> None:
        if not self._block:
            return
        data = b"".join(self._block)
        if self._compression == "snappy":  # Avro's snappy: raw snappy + CRC-32 (big-endian)
            crc = zlib.crc32(data).to_bytes(4, "big")
            data = bytes(cramjam.snappy.compress_raw(data)) + crc
        elif self._compression == "deflate":
            packer = zlib.compressobj(1, zlib.DEFLATED, -15)
            data = packer.compress(data) + packer.flush()
        block = zigzag_varint(len(self._block)) + zigzag_varint(len(data)) + data + self._sync
        self._out.write(block)
        self._flushed += len(block)
        self._block = []
        self._block_bytes = 0

    def close(self) -> None:
        self._flush_block()
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()


# -- Parquet ---------------------------------------------------------------------------------


def arrow_type(schema: Any) -> Any:
    """The Arrow type of a plain Avro schema (see :func:`schemas.schema_export.standalone`)."""
    import pyarrow as pa

    if isinstance(schema, list):
        branches = [s for s in schema if s != "null"]
        if len(branches) != 1:
            return pa.string()  # a union of several types: kept as its JSON text
        return arrow_type(branches[0])
    if isinstance(schema, str):
        return {
            "string": pa.string(),
            "bytes": pa.binary(),
            "int": pa.int32(),
            "long": pa.int64(),
            "float": pa.float32(),
            "double": pa.float64(),
            "boolean": pa.bool_(),
            "null": pa.null(),
        }[schema]
    kind = schema["type"]
    logical = schema.get("logicalType")
    if logical == "timestamp-micros":
        return pa.timestamp("us", tz="UTC")
    if logical == "timestamp-millis":
        return pa.timestamp("ms", tz="UTC")
    if kind == "record":
        return pa.struct([pa.field(f["name"], arrow_type(f["type"])) for f in schema["fields"]])
    if kind == "array":
        return pa.list_(arrow_type(schema["items"]))
    if kind == "map":
        return pa.map_(pa.string(), arrow_type(schema["values"]))
    if kind == "enum":
        return pa.string()
    if kind == "fixed":
        return pa.binary(schema["size"])
    return arrow_type(kind)


def _arrow_value(schema: Any, value: Any) -> Any:
    """``value`` shaped for pyarrow: maps become lists of pairs."""
    if value is None:
        return None
    if isinstance(schema, list):
        branches = [s for s in schema if s != "null"]
        if len(branches) != 1:
            return json.dumps(value, default=json_default)
        return _arrow_value(branches[0], value)
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            return {
                f["name"]: _arrow_value(f["type"], value.get(f["name"])) for f in schema["fields"]
            }
        if kind == "array":
            return [_arrow_value(schema["items"], v) for v in value]
        if kind == "map":
            return [(k, _arrow_value(schema["values"], v)) for k, v in value.items()]
    return value


class ParquetWriter:
    def __init__(self, path: Path, codec: Codec, record_name: str) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ExportFormatError(
                "--format parquet needs pyarrow: pip install 'changefeed[parquet]'"
            ) from exc
        self._pa = pa
        self._codec = codec
        self._name = record_name
        self._avro = row_schema(codec, record_name)
        self._schema = arrow_type(self._avro)
        self._path = path
        self._writer = pq.ParquetWriter(
            str(path), pa.schema(list(self._schema)), compression="zstd"
        )
        self._rows: list[dict[str, Any]] = []
        self.bytes_written = 0

    def write(self, record: RecordLike) -> None:
        value = _decoded(self._codec, record, self._name)
        row = {"partition": record.partition, "offset": record.offset, "value": value}
        self._rows.append(_arrow_value(self._avro, row))
        if len(self._rows) >= PARQUET_ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        table = self._pa.Table.from_pylist(self._rows, schema=self._pa.schema(list(self._schema)))
        self._writer.write_table(table)
        self._rows = []
        self.bytes_written = self._path.stat().st_size

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self.bytes_written = self._path.stat().st_size
