"""The native reader and writer (schemas.native) against fastavro: same values, same bytes.

Whatever the native side does not take as certain it must refuse (the reader raises
ValueError, the writer returns None), never answer differently from fastavro.
"""

import math
import os
from collections import OrderedDict
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

import pytest
from avro_values import RECORD_TYPES, fastavro_body, records
from fastavro import parse_schema, schemaless_reader
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import native
from schemas.codec import Codec, default_codec
from schemas.errors import DecodeError, EncodeError

pytestmark = pytest.mark.skipif(
    os.environ.get("CHANGEFEED_NATIVE") == "0", reason="CHANGEFEED_NATIVE=0 disables it"
)

CODEC = default_codec()


def fastavro_read(schema: Any, data: bytes, start: int) -> tuple[Any, int]:
    buffer = BytesIO(data)
    buffer.seek(start)
    value = schemaless_reader(buffer, schema, None)
    return value, buffer.tell()


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down (1 == True == 1.0 would pass ``==``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        both_nan = math.isnan(a) and math.isnan(b)
        return both_nan or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, datetime):
        return a == b and a.tzinfo is b.tzinfo
    return bool(a == b)


def _holds_datetime(value: Any) -> bool:
    if isinstance(value, datetime):
        return True
    if isinstance(value, dict):
        return any(_holds_datetime(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_datetime(v) for v in value)
    return False


def test_every_changefeed_record_type_has_a_native_reader_and_writer() -> None:
    """The install built the extension and every current schema is within what it handles."""
    assert native.available(), "changefeed_native is not installed: run scripts/bootstrap.sh"
    for name in RECORD_TYPES:
        schema = CODEC.schema(name)
        assert native.reader(schema) is not None, name
        assert native.writer(schema) is not None, name


def test_the_codec_uses_them_unless_told_not_to() -> None:
    plans = CODEC._encoders.values()  # noqa: SLF001 - what the codec chose is the point
    assert all(plan.native_encode is not None for plan in plans)
    plain = Codec(use_native=False)
    assert all(plan.native_encode is None for plan in plain._encoders.values())  # noqa: SLF001
    assert all(plan.native_read is None for plan in plain._decoders.values())  # noqa: SLF001


def test_changefeed_native_0_disables_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHANGEFEED_NATIVE", "0")
    assert not native.available()
    assert native.reader(CODEC.schema("changefeed.ChangeEvent")) is None
    assert native.writer(CODEC.schema("changefeed.ChangeEvent")) is None


@settings(max_examples=400, deadline=None)
@given(named_record=records())
def test_any_record_reads_and_writes_as_fastavro_does(
    named_record: tuple[str, dict[str, Any]],
) -> None:
    name, record = named_record
    schema = CODEC.schema(name)
    body = fastavro_body(schema, record)
    framed = b"HEAD" + body

    read = native.reader(schema)
    assert read is not None
    try:
        expected, expected_end = fastavro_read(schema, framed, 4)
    except OverflowError:  # a timestamp beyond datetime's years
        with pytest.raises(ValueError, match="out of range"):
            read(framed, 4)
        return
    value, end = read(framed, 4)
    assert same(value, expected)
    assert end == expected_end == len(framed)

    write = native.writer(schema, b"HEAD")
    assert write is not None
    # A datetime, or a field left to its default, is left to the other writers...
    assert write(record) in (None, framed)
    if not _holds_datetime(record):
        assert write(record) == framed or _lacks_a_field(record, value)
    # ... and the same record in full, timestamps as int micros, is written here.
    assert write(_micros(value)) == framed


def _micros(value: Any) -> Any:
    """``value`` with every datetime (all timestamp-micros here) as int microseconds."""
    if isinstance(value, datetime):
        delta = value - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, dict):
        return {k: _micros(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_micros(v) for v in value]
    return value


def _lacks_a_field(given: Any, full: Any) -> bool:
    if isinstance(full, dict) and isinstance(given, dict):
        return any(k not in given or _lacks_a_field(given[k], full[k]) for k in full)
    if isinstance(full, list) and isinstance(given, list):
        return any(_lacks_a_field(g, f) for g, f in zip(given, full, strict=True))
    return False


def _damaged(data: st.DataObject, body: bytes) -> bytes:
    how = data.draw(st.sampled_from(["cut", "flip", "insert", "append"]))
    at = data.draw(st.integers(0, max(len(body) - 1, 0)))
    if how == "cut":
        return body[:at]
    if how == "append":
        return body + data.draw(st.binary(min_size=1, max_size=4))
    if how == "insert":
        return body[:at] + data.draw(st.binary(min_size=1, max_size=4)) + body[at:]
    if not body:
        return body
    return body[:at] + bytes([body[at] ^ data.draw(st.integers(1, 255))]) + body[at + 1 :]


@settings(max_examples=600, deadline=None)
@given(data=st.data(), named_record=records())
def test_damaged_bytes_are_read_as_fastavro_reads_them_or_refused(
    data: st.DataObject, named_record: tuple[str, dict[str, Any]]
) -> None:
    name, record = named_record
    schema = CODEC.schema(name)
    damaged = _damaged(data, fastavro_body(schema, record))
    try:
        value, end = native.reader(schema)(damaged, 0)  # type: ignore[misc]
    except ValueError:
        return  # refused: fastavro decides
    expected, expected_end = fastavro_read(schema, damaged, 0)
    assert same(value, expected)
    assert end == expected_end


def _framed(record: dict[str, Any]) -> bytes:
    return Codec(use_native=False).encode("changefeed.ApiAction", record)


ACTION = {
    "event_id": "e-1",
    "request_id": "r-1",
    "tenant_id": "acme",
    "action": "update",
    "event_type": "story.updated",
    "subject_type": "story",
    "subject_id": "42",
    "occurred_at": datetime(2024, 9, 18, 14, 3, 11, 402113, tzinfo=UTC),
    "payload": '{"title":"x"}',
    "actor": {"user_id": "u", "application_id": None, "api_version": None},
}


def _decoded_both_ways(data: bytes) -> tuple[Any, Any]:
    def outcome(codec: Codec) -> Any:
        try:
            return ("value", codec.decode(data, "changefeed.ApiAction"))
        except DecodeError as exc:
            return ("DecodeError", str(exc))

    return outcome(CODEC), outcome(Codec(use_native=False))


def _internal_flag_at(data: bytes) -> int:
    """Where the ``internal`` boolean of ACTION's encoding is (a byte of 0 or 1)."""
    flipped = _framed({**ACTION, "internal": not ACTION.get("internal", True)})
    return next(i for i, (a, b) in enumerate(zip(data, flipped, strict=True)) if a != b)


def test_what_the_native_reader_refuses_the_codec_reads_as_before() -> None:
    data = _framed(ACTION)
    at = _internal_flag_at(data)
    odd_boolean = data[:at] + b"\x02" + data[at + 1 :]  # fastavro reads any non-zero as true
    cases = {
        "odd boolean": odd_boolean,
        "truncated": data[:-3],
        "trailing": data + b"\x00",
        "invalid UTF-8": data.replace(b"story.updated", b"story.\xffpdated"),
    }
    for label, case in cases.items():
        mine, before = _decoded_both_ways(case)
        assert mine == before, label
    with pytest.raises(ValueError):
        native.reader(CODEC.schema("changefeed.ApiAction"))(odd_boolean, 10)  # type: ignore[misc]
    assert _decoded_both_ways(odd_boolean)[0][1]["internal"] is True


class _Text(str):
    pass


@pytest.mark.parametrize(
    "change",
    [
        {"event_id": _Text("subclass of str")},
        {"event_id": "\ud800"},
        {"code": True},
        {"code": 2**31},
        {"version": 2**63},
        {"version": 1.0},
        {"internal": 1},
        {"subject_ref": OrderedDict(key="k", id="i")},
        {"subject_ref": {"-type": "changefeed.SubjectRef", "key": "k", "id": "i"}},
        {"actor": {"user_id": "u"}},
        {"action": "explode"},
        {"occurred_at": 1726668191402113.0},
    ],
)
def test_the_native_writer_leaves_what_it_does_not_handle_exactly(change: dict[str, Any]) -> None:
    complete = Codec(use_native=False).decode(_framed(ACTION), "changefeed.ApiAction")
    complete["occurred_at"] = 1726668191402113  # every field given, the timestamp as an int
    write = native.writer(CODEC.schema("changefeed.ApiAction"))
    assert write is not None
    assert write(complete) == _framed(complete)[10:]
    assert write({**complete, **change}) is None


def test_other_logical_types_are_not_compiled() -> None:
    schema = parse_schema(
        {
            "type": "record",
            "name": "T",
            "fields": [{"name": "u", "type": {"type": "string", "logicalType": "uuid"}}],
        }
    )
    assert native.reader(schema) is None
    assert native.writer(schema) is None


def test_a_recursive_schema_reads_and_writes() -> None:
    schema = parse_schema(
        {
            "type": "record",
            "name": "Node",
            "fields": [
                {"name": "label", "type": "string"},
                {"name": "children", "type": {"type": "array", "items": "Node"}},
                {"name": "next", "type": ["null", "Node"]},
            ],
        }
    )
    leaf = {"label": "leaf", "children": [], "next": None}
    tree = {"label": "root", "children": [leaf, leaf], "next": {**leaf, "label": "n"}}
    body = fastavro_body(schema, tree)
    assert native.writer(schema)(tree) == body  # type: ignore[misc]
    assert native.reader(schema)(body, 0) == (tree, len(body))  # type: ignore[misc]


def test_blocks_with_byte_sizes_are_read() -> None:
    """Other writers may prefix a block's count with its size (a negative count)."""
    schema = parse_schema({"type": "array", "items": "long"})
    body = b"\x03\x04\x02\x04\x02\x06\x00"  # count -2 of 2 bytes: 1, 2; count 1: 3; end
    assert native.reader(schema)(body, 0) == ([1, 2, 3], len(body))  # type: ignore[misc]
    assert fastavro_read(schema, body, 0) == ([1, 2, 3], len(body))


@settings(max_examples=200, deadline=None)
@given(named_record=records())
def test_timestamps_read_as_micros_are_the_datetimes_in_microseconds(
    named_record: tuple[str, dict[str, Any]],
) -> None:
    """``timestamps="micros"``, native or not, equals the datetimes converted."""
    name, record = named_record
    plain = Codec(use_native=False)
    try:
        framed = plain.encode(name, record)
        as_datetimes = plain.decode(framed, name)
    except (EncodeError, DecodeError):  # a timestamp beyond datetime's years
        return
    expected = _micros(as_datetimes)
    for codec in (CODEC, plain):
        assert same(codec.decode(framed, name, timestamps="micros"), expected)


LIST = parse_schema(
    {
        "type": "record",
        "name": "Link",
        "fields": [{"name": "next", "type": ["null", "Link"]}],
    }
)


def test_values_nested_past_the_depth_limit_are_refused() -> None:
    """A recursive schema's value nested thousands deep must not exhaust the native stack
    (the changefeed schemas are not recursive; fastavro itself crashes on this one)."""
    deep: dict[str, Any] = {"next": None}
    for _ in range(5000):
        deep = {"next": deep}
    body = b"\x02" * 5001 + b"\x00"  # 5,001 links, then null
    assert native.writer(LIST)(deep) is None  # type: ignore[misc]
    with pytest.raises(ValueError, match="nested too deep"):
        native.reader(LIST)(body, 0)  # type: ignore[misc]
    shallow = {"next": {"next": None}}
    shallow_body = b"\x02\x00"  # the first link's branch, then null
    assert fastavro_body(LIST, shallow) == shallow_body
    assert native.writer(LIST)(shallow) == shallow_body  # type: ignore[misc]
    assert native.reader(LIST)(shallow_body, 0) == (shallow, 2)  # type: ignore[misc]


def test_a_forged_block_count_is_refused_at_once() -> None:
    """A count of 2**62 items (no bytes follow) must not build a list without end."""
    schema = parse_schema({"type": "array", "items": "null"})
    forged = b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f"  # zig-zag varint of 2**62 - 1
    with pytest.raises(ValueError, match="beyond the bytes left"):
        native.reader(schema)(forged, 0)  # type: ignore[misc]
    # Items of no bytes may legitimately outnumber the bytes left: fastavro reads those.
    nulls = fastavro_body(schema, [None] * 5)
    with pytest.raises(ValueError):
        native.reader(schema)(nulls, 0)  # type: ignore[misc]
    assert fastavro_read(schema, nulls, 0) == ([None] * 5, len(nulls))
