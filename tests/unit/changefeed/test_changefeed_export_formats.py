"""File formats of exports, the progress line and the deserializers, without a broker."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import fastavro
import pytest
from change_events import change_event

from changefeed.deserializers import (
    ChangeDeserializer,
    DeserializationError,
    Undecodable,
    deserialize,
)
from changefeed.export_formats import (
    ExportFormatError,
    json_default,
    json_row,
    open_writer,
    zigzag_varint,
)
from changefeed.progress import Progress, progress_line
from schemas.codec import default_codec

V1_FIXTURE = (
    Path(__file__).parents[1] / "schemas" / "data" / "changefeed.ApiAction.v1.single-object.hex"
)


@dataclass
class Record:
    partition: int
    offset: int
    value: bytes


@pytest.mark.parametrize("compression", ["snappy", "deflate", "null"])
def test_avro_rows_copy_current_records_and_resolve_old_ones(
    tmp_path: Path, compression: str
) -> None:
    codec = default_codec()
    old = bytes.fromhex(V1_FIXTURE.read_text().strip())  # ApiAction written with schema v1
    current = codec.encode("changefeed.ApiAction", codec.decode(old, "changefeed.ApiAction"))
    records = [Record(0, 5, old), Record(3, 2**40, current), Record(1, 0, current)]
    path = tmp_path / "a.avro"
    writer = open_writer("avro", path, codec, "changefeed.ApiAction", avro_codec=compression)
    for record in records:
        writer.write(record)
    writer.close()
    with path.open("rb") as f:
        reader = fastavro.reader(f)
        assert reader.metadata["avro.codec"] == compression
        rows = list(reader)
    assert [(r["partition"], r["offset"]) for r in rows] == [(0, 5), (3, 2**40), (1, 0)]
    decoded = [codec.decode(r.value, "changefeed.ApiAction") for r in records]
    assert [r["value"] for r in rows] == decoded


def test_avro_change_events_equal_their_json_lines(tmp_path: Path) -> None:
    codec = default_codec()
    records = [
        Record(n % 3, n, codec.encode("changefeed.ChangeEvent", change_event(n))) for n in range(50)
    ]
    writer = open_writer("avro", tmp_path / "c.avro", codec, "changefeed.ChangeEvent")
    for record in records:
        writer.write(record)
    writer.close()
    with (tmp_path / "c.avro").open("rb") as f:
        rows = [json.loads(json.dumps(r, default=json_default)) for r in fastavro.reader(f)]
    assert rows == [json.loads(json_row(r, codec, "changefeed.ChangeEvent")) for r in records]


def test_avro_and_parquet_need_a_known_schema(tmp_path: Path) -> None:
    with pytest.raises(ExportFormatError, match="project topic"):
        open_writer("avro", tmp_path / "x", default_codec(), None)


def test_zigzag_varints_match_avro() -> None:
    for value in (0, -1, 1, 63, -64, 64, 2**31 - 1, -(2**31), 2**62):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, "long", value)
        assert zigzag_varint(value) == buffer.getvalue()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_only() -> None:
    assert (
        progress_line(500, 1000, 2048, 1.0)
        == "500/1,000 records, 2.0 KiB, 500 records/s, ETA 0:00:01"
    )
    assert progress_line(10, None, 10, 2.0) == "10 records, 10 B, 5 records/s"
    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = Progress(100, stream)
        progress.advance(50, 1000)
        progress.finish()
    assert "50/100 records" in terminal.getvalue()
    assert pipe.getvalue() == ""


def test_deserializers_decode_refuse_and_pass_tombstones() -> None:
    codec = default_codec()
    value = codec.encode("changefeed.ChangeEvent", change_event(7))
    assert deserialize(value, "changes")["event_id"] == "ev-acme-7"
    typed = ChangeDeserializer("tprefix.changes", typed=True)(value)
    assert typed.change_id == change_event(7)["change_id"] and typed.current_payload["amount"] == 7
    assert ChangeDeserializer("changes")(None) is None
    with pytest.raises(DeserializationError):
        ChangeDeserializer("actions")(value)  # a ChangeEvent is not an ApiAction
    returned = ChangeDeserializer("actions", on_error="return")(b"\x00garbage")
    assert isinstance(returned, Undecodable) and returned.value == b"\x00garbage"
    with pytest.raises(ValueError):
        ChangeDeserializer("actions", typed=True)
    with pytest.raises(ValueError):
        ChangeDeserializer("orders")
