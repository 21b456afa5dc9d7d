"""The specialised writer against fastavro: same bytes, and the same errors through the codec."""

from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
from avro_values import (
    INT_MAX,
    INT_MIN,
    LONG_MAX,
    LONG_MIN,
    RECORD_TYPES,
    fastavro_body,
    records,
    values,
)
from fastavro import parse_schema
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Codec, default_codec
from schemas.errors import EncodeError
from schemas.fast_writer import (
    FastWriter,
    _unsigned_varint,
    _varint,
    build_writer,
)


def _fastavro_only(schema: Any, prefix: bytes = b"") -> FastWriter:
    return FastWriter(name="fastavro only", source="", encode=lambda record: None)


@pytest.fixture(scope="module")
def codec() -> Codec:
    return default_codec()


@pytest.fixture(scope="module")
def fastavro_codec() -> Codec:
    """The codec as it was before the specialised writer: fastavro writes every record."""
    with mock.patch("schemas.codec.build_writer", _fastavro_only):
        return Codec(use_native=False)


@pytest.fixture(scope="module")
def writers(codec: Codec) -> dict[str, FastWriter]:
    return {name: build_writer(codec.schema(name)) for name in RECORD_TYPES}


# --- the changefeed schemas, byte for byte ---------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(named_record=records())
def test_every_record_type_is_written_as_fastavro_writes_it(
    named_record: tuple[str, dict[str, Any]],
) -> None:
    name, record = named_record
    codec = default_codec()
    writer = build_writer(codec.schema(name), prefix=b"HEAD")

    assert writer.encode(record) == b"HEAD" + fastavro_body(codec.schema(name), record)


@settings(max_examples=100, deadline=None)
@given(named_record=records())
def test_codec_encode_frames_the_writer_output_like_before(
    named_record: tuple[str, dict[str, Any]],
) -> None:
    name, record = named_record
    codec = default_codec()
    body = fastavro_body(codec.schema(name), record)
    assert codec.encode(name, record) == b"\xc3\x01" + codec.fingerprint(name) + body


@pytest.mark.parametrize("size", [0, 1, 63, 64, 1023, 1024, 3000])
def test_large_arrays_and_maps(codec: Codec, writers: dict[str, FastWriter], size: int) -> None:
    name = "changefeed.ChangeEvent"
    ops = ["add", "remove", "replace", "move", "copy", "test"]
    record = _change_event(
        payload_changes=[
            {"op": ops[i % 6], "path": f"/a/{i}", "from": None, "value": str(i)}
            for i in range(size)
        ],
        field_changes={f"/a/{i}": {"old": None, "new": "é" * (i % 5)} for i in range(size)},
    )
    assert writers[name].encode(record) == fastavro_body(codec.schema(name), record)


@pytest.mark.parametrize("size", [0, 1, 2047, 2048, 70_000])
def test_long_strings_and_bytes(codec: Codec, writers: dict[str, FastWriter], size: int) -> None:
    record = _dead_letter(reason="r" * size, value=b"v" * size, headers={"h" * size: b"x"})
    name = "changefeed.DeadLetter"
    assert writers[name].encode(record) == fastavro_body(codec.schema(name), record)


_POWERS_OF_TWO = [2**k + d for k in range(65) for d in (-1, 0, 1)]


@given(n=st.integers(0, 2**64 - 1) | st.sampled_from(_POWERS_OF_TWO[1:]))
def test_varint_matches_a_byte_at_a_time(n: int) -> None:
    assert _varint(n) == _unsigned_varint(n)


def test_the_generated_source_is_stable_and_readable(codec: Codec) -> None:
    schema = codec.schema("changefeed.ChangeEvent")
    writer = build_writer(schema)

    assert writer.source == build_writer(schema).source
    compile(writer.source, "<test>", "exec")
    assert "# record changefeed.PatchOperation" in writer.source
    assert "# payload_changes: array<record changefeed.PatchOperation>" in writer.source


# --- the same errors as before ---------------------------------------------------------------

OCCURRED = datetime(2024, 9, 18, 14, 3, 11, 402113, tzinfo=UTC)
REF = {"key": "workspace", "id": "77"}


def _api_action(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": "0b4c2b8e-5a0e-4d7f-9d1e-3f1c2a7b9e10",
        "request_id": "req-7d3f",
        "tenant_id": "tenant-42",
        "action": "update",
        "event_type": "expense_report:updated",
        "subject_type": "expense_report",
        "subject_id": "123456",
        "subject_ref": {"key": "workspace", "id": "77"},
        "version": 12,
        "occurred_at": OCCURRED,
        "actor": {
            "user_id": "u-1",
            "application_id": None,
            "api_version": "v2",
            "api_key_fingerprint": "sha256:3f2a9c1e",
        },
        "criticality": 3,
        "code": 1204,
        "internal": True,
        "payload_content_type": "application/json",
        "payload": '{"id":"123456","status":"submitted"}',
        "source": "https://api.example.com/v2",
    }
    return {**record, **changes}


def _change_event(**changes: Any) -> dict[str, Any]:
    action = _api_action()
    record = {
        **{k: v for k, v in action.items() if k not in ("occurred_at", "payload")},
        "change_id": "6f1d1f5e-2c1b-5d39-9d0e-0f4a6d1c2b3a",
        "previous_payload": '{"status":"draft"}',
        "current_payload": '{"status":"submitted"}',
        "payload_changes": [
            {"op": "replace", "path": "/status", "from": None, "value": '"submitted"'},
            {"op": "move", "path": "/b", "from": "/a", "value": None},
        ],
        "field_changes": {"/status": {"old": '"draft"', "new": '"submitted"'}},
        "late": False,
        "subject_sequence": 4,
        "subject_changed_at": OCCURRED,
        "created_at": 1_726_668_192_000_005,
    }
    return {**record, **changes}


def _dead_letter(**changes: Any) -> dict[str, Any]:
    record = {
        "reason_code": "undecodable",
        "reason": "body is undecodable",
        "topic": "changefeed.actions",
        "partition": 2,
        "offset": 81_234,
        "timestamp_ms": 1_726_668_191_402,
        "key": b"tenant-42",
        "value": b"\xc3\x01garbage",
        "headers": {"ce_id": b"0b4c2b8e"},
        "failed_at": OCCURRED,
    }
    return {**record, **changes}


EXAMPLES: dict[str, Callable[..., dict[str, Any]]] = {
    "changefeed.ApiAction": _api_action,
    "changefeed.ChangeEvent": _change_event,
    "changefeed.DeadLetter": _dead_letter,
}


def _outcome(codec: Codec, name: str, record: Any) -> tuple[Any, ...]:
    """What ``encode`` does with a record: its bytes, or its error as the caller sees it."""
    try:
        return ("bytes", codec.encode(name, record))
    except EncodeError as exc:
        return ("EncodeError", str(exc), exc.field, type(exc.__cause__))
    except Exception as exc:  # whatever it is, it must be the same
        return (type(exc), str(exc))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_realistic_records_take_the_specialised_writer(
    writers: dict[str, FastWriter], fastavro_codec: Codec, codec: Codec, name: str
) -> None:
    record = EXAMPLES[name]()
    assert writers[name].encode(record) is not None
    assert codec.encode(name, record) == fastavro_codec.encode(name, record)


# The error cases of test_schemas_codec, and more that the specialised writer hands over.
_BAD_RECORDS = [
    ("changefeed.ApiAction", {k: v for k, v in _api_action().items() if k != "event_id"}),
    ("changefeed.ApiAction", {k: v for k, v in _api_action().items() if k != "actor"}),
    ("changefeed.ApiAction", _api_action(tenant_id=None)),
    ("changefeed.ApiAction", _api_action(criticality="high")),
    ("changefeed.ApiAction", _api_action(action="explode")),
    ("changefeed.ApiAction", _api_action(occurred_at="today")),
    ("changefeed.ApiAction", _api_action(occurred_at=datetime(2024, 9, 18, 14, 3))),
    ("changefeed.ApiAction", _api_action(occurred_at=2**63)),
    ("changefeed.ApiAction", _api_action(payload=b"{}")),
    ("changefeed.ApiAction", _api_action(payload="\ud800")),
    ("changefeed.ApiAction", _api_action(version=1.5)),
    ("changefeed.ApiAction", _api_action(version=True)),
    ("changefeed.ApiAction", _api_action(version=2**63)),
    ("changefeed.ApiAction", _api_action(actor={"user_id": 5})),
    ("changefeed.ApiAction", _api_action(actor=None)),
    ("changefeed.ApiAction", _api_action(subject_ref={"key": "k"})),
    ("changefeed.ApiAction", _api_action(subject_ref={"-type": "x", "key": "k", "id": "i"})),
    ("changefeed.ApiAction", _api_action(internal="false")),
    ("changefeed.ApiAction", _api_action(internal=1)),
    ("changefeed.ApiAction", _api_action(code=2**31)),
    ("changefeed.ApiAction", None),
    ("changefeed.ApiAction", ["event_id"]),
    ("changefeed.ApiAction", "text"),
    ("changefeed.DeadLetter", _dead_letter(partition=-(2**31) - 1)),
    ("changefeed.DeadLetter", _dead_letter(offset=2**64)),
    ("changefeed.DeadLetter", _dead_letter(value="text")),
    ("changefeed.DeadLetter", _dead_letter(headers={"a": "text"})),
    ("changefeed.DeadLetter", _dead_letter(headers={1: b"x"})),
    ("changefeed.DeadLetter", _dead_letter(headers=[("a", b"x")])),
    ("changefeed.ChangeEvent", _change_event(payload_changes=[{"op": "patch", "path": "/a"}])),
    ("changefeed.ChangeEvent", _change_event(payload_changes=[{"op": "add"}])),
    ("changefeed.ChangeEvent", _change_event(payload_changes=[None])),
    ("changefeed.ChangeEvent", _change_event(payload_changes=None)),
    ("changefeed.ChangeEvent", _change_event(field_changes={"/a": {"old": 1}})),
    ("changefeed.ChangeEvent", _change_event(field_changes={"/a": None})),
    ("changefeed.ChangeEvent", _change_event(created_at=datetime(2024, 9, 18))),
]


@pytest.mark.parametrize("name, record", _BAD_RECORDS)
def test_records_that_do_not_fit_raise_the_same_encode_error_as_before(
    codec: Codec, fastavro_codec: Codec, name: str, record: Any
) -> None:
    before = _outcome(fastavro_codec, name, record)
    assert before[0] == "EncodeError"
    assert _outcome(codec, name, record) == before


class _Text(str):
    pass


class _Moment(datetime):
    pass


# Values the specialised writer hands to fastavro although fastavro may accept them.
_HANDED_OVER = [
    ("changefeed.ApiAction", _api_action(event_id=_Text("subclass of str"))),
    ("changefeed.ApiAction", _api_action(payload=("string", "tuple notation of a union"))),
    ("changefeed.ApiAction", _api_action(subject_ref=OrderedDict(key="k", id="i"))),
    ("changefeed.ApiAction", _api_action(subject_ref={"-type": "changefeed.SubjectRef", **REF})),
    ("changefeed.ApiAction", _api_action(occurred_at=_Moment(2024, 1, 1, tzinfo=UTC))),
    ("changefeed.ApiAction", OrderedDict(_api_action())),
    ("changefeed.DeadLetter", _dead_letter(key=bytearray(b"k"), headers={"a": memoryview(b"x")})),
    ("changefeed.DeadLetter", _dead_letter(headers=OrderedDict(a=b"x"))),
    ("changefeed.ChangeEvent", _change_event(payload_changes=())),
    ("changefeed.ChangeEvent", _change_event(payload_changes=iter([]))),
    ("changefeed.ChangeEvent", _change_event(subject_sequence=False)),
    ("changefeed.ChangeEvent", _change_event(late=None)),
    ("changefeed.ApiAction", _api_action(code=True)),
]


@pytest.mark.parametrize("name, record", _HANDED_OVER)
def test_values_outside_the_subset_are_handed_to_fastavro(
    writers: dict[str, FastWriter], codec: Codec, fastavro_codec: Codec, name: str, record: Any
) -> None:
    assert writers[name].encode(record) is None
    assert _outcome(codec, name, record) == _outcome(fastavro_codec, name, record)


_MISSING = object()  # the key is removed
_ODD = [
    _MISSING,
    None,
    True,
    False,
    0,
    -1,
    INT_MAX + 1,
    INT_MIN - 1,
    LONG_MAX + 1,
    LONG_MIN - 1,
    1.5,
    float("nan"),
    "",
    "text",
    "update",
    "\udc80",
    _Text("x"),
    b"",
    b"bytes",
    bytearray(b"x"),
    (),
    ("string", "x"),
    ("null", None),
    [],
    ["a"],
    {},
    {1: {}},
    {"key": "k", "id": "i"},
    {"-type": "changefeed.SubjectRef", "key": "k", "id": "i"},
    OrderedDict(key="k", id="i"),
    {"old": None, "new": "1"},
    datetime(2024, 9, 18, 14, 3),
    OCCURRED,
    _Moment(2024, 1, 1, tzinfo=UTC),
]
_ODD_VALUES = st.sampled_from(_ODD)
NESTED_EXAMPLES: dict[str, dict[str, Any]] = {
    "changefeed.Actor": {"user_id": None, "application_id": "a", "api_version": None},
    "changefeed.SubjectRef": REF,
    "changefeed.PatchOperation": {"op": "test", "path": "/a/0", "from": None, "value": "1"},
    "changefeed.FieldChange": {"old": None, "new": "[1,2]"},
}


def _places(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path (keys and indexes) of every value inside a record, nested ones included."""
    if isinstance(value, dict | list):
        for key, inner in value.items() if isinstance(value, dict) else enumerate(value):
            yield (*path, key)
            yield from _places(inner, (*path, key))


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of ``value`` with ``new`` at ``path``; ``_MISSING`` removes what is there."""
    key, rest = path[0], path[1:]
    inner = _replaced(value[key], rest, new) if rest else new
    if isinstance(value, list):
        return [*value[:key], *([] if inner is _MISSING else [inner]), *value[key + 1 :]]
    if inner is _MISSING:
        return {k: v for k, v in value.items() if k != key}
    return {**value, key: inner}


@pytest.mark.parametrize("name", sorted(RECORD_TYPES))
def test_an_odd_value_anywhere_encodes_or_fails_exactly_as_before(
    codec: Codec, fastavro_codec: Codec, name: str
) -> None:
    example = EXAMPLES[name]() if name in EXAMPLES else NESTED_EXAMPLES[name]
    differences = []
    for path in _places(example):
        for odd in _ODD:
            record = _replaced(example, path, odd)
            now, before = _outcome(codec, name, record), _outcome(fastavro_codec, name, record)
            if now != before:
                differences.append((path, odd, now, before))
    assert differences == []


def _mutated(data: st.DataObject, value: Any) -> Any:
    """``value`` with one place in it (maybe itself) replaced, or removed from its record."""
    if isinstance(value, dict) and value and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(value)))
        new = _mutated(data, value[key])
        rest = {k: v for k, v in value.items() if k != key}
        return rest if new is _MISSING else {**rest, key: new}
    if isinstance(value, list) and value and data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(value) - 1))
        new = _mutated(data, value[index])
        return [*value[:index], *([] if new is _MISSING else [new]), *value[index + 1 :]]
    return data.draw(_ODD_VALUES)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), named_record=records())
def test_any_record_encodes_or_fails_exactly_as_before(
    fastavro_codec: Codec, data: st.DataObject, named_record: tuple[str, dict[str, Any]]
) -> None:
    name, record = named_record
    record = _mutated(data, record)
    if record is _MISSING:
        return
    assert _outcome(default_codec(), name, record) == _outcome(fastavro_codec, name, record)


# --- the rest of the subset, on a schema of its own ------------------------------------------

EVERYTHING = parse_schema(
    {
        "type": "record",
        "name": "Everything",
        "namespace": "test",
        "fields": [
            {"name": "f", "type": "float"},
            {"name": "d", "type": "double"},
            {"name": "d_default", "type": "double", "default": 1},
            {"name": "fixed", "type": {"type": "fixed", "name": "Hash", "size": 4}},
            {"name": "maybe_fixed", "type": ["null", "Hash"], "default": None},
            {"name": "millis", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {
                "name": "maybe_micros",
                "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}],
            },
            {"name": "null_last", "type": ["string", "null"]},
            {"name": "maybe_int", "type": ["null", "int"]},
            {"name": "maybe_boolean", "type": ["null", "boolean"]},
            {"name": "maybe_bytes", "type": ["null", "bytes"]},
            {"name": "maybe_float", "type": ["null", "float"]},
            {"name": "maybe_double", "type": ["double", "null"]},
            {
                "name": "maybe_enum",
                "type": ["null", {"type": "enum", "name": "Color", "symbols": ["red", "green"]}],
            },
            {"name": "maybe_array", "type": ["null", {"type": "array", "items": "Color"}]},
            {"name": "maybe_map", "type": ["null", {"type": "map", "values": "long"}]},
            {"name": "wrapped", "type": {"type": "string"}},
            {"name": "int_micros", "type": {"type": "int", "logicalType": "timestamp-micros"}},
            {"name": "own_logical", "type": {"type": "string", "logicalType": "shouting"}},
            {
                "name": "tree",
                "type": [
                    "null",
                    {
                        "type": "record",
                        "name": "Node",
                        "fields": [
                            {"name": "label", "type": "string"},
                            {"name": "children", "type": {"type": "array", "items": "Node"}},
                            {"name": "next", "type": ["null", "Node"], "default": None},
                        ],
                    },
                ],
            },
            {"name": "null", "type": "null", "default": None},
            {"name": "general", "type": ["null", "string", "long"], "default": None},
            {"name": "uuid", "type": ["null", {"type": "string", "logicalType": "uuid"}]},
        ],
    }
)
_EVERYTHING_NAMED = {
    "test.Hash": {"type": "fixed", "size": 4},
    "test.Color": {"type": "enum", "symbols": ["red", "green"]},
    "test.Node": next(f for f in EVERYTHING["fields"] if f["name"] == "tree")["type"][1],
}
# Fields whose non-null values always go to fastavro: the test gives them None.
_ALWAYS_HANDED_OVER = {"general", "uuid"}


@st.composite
def _everything(draw: st.DrawFn) -> dict[str, Any]:
    fields = [f for f in EVERYTHING["fields"] if f["name"] not in _ALWAYS_HANDED_OVER]
    record = draw(values({**EVERYTHING, "fields": fields}, _EVERYTHING_NAMED))
    return {**record, **dict.fromkeys(_ALWAYS_HANDED_OVER)}


@settings(max_examples=200, deadline=None)
@given(record=_everything())
def test_the_whole_subset_is_written_as_fastavro_writes_it(record: dict[str, Any]) -> None:
    writer = build_writer(EVERYTHING)
    assert writer.encode(record) == fastavro_body(EVERYTHING, record)


@pytest.mark.parametrize(
    "changes",
    [
        {"general": "x"},
        {"general": 5},
        {"uuid": "3f2a9c1e-0000-4000-8000-000000000000"},
        {"f": 1e300},  # beyond a C float: fastavro writes an infinity, struct.pack refuses
        {"f": 1},
        {"fixed": b"12345"},
        {"null": 0},
    ],
)
def test_values_fastavro_must_judge_in_the_rest_of_the_subset(changes: dict[str, Any]) -> None:
    record = {**_everything_example(), **changes}
    assert build_writer(EVERYTHING).encode(record) is None


def _everything_example() -> dict[str, Any]:
    return {
        "f": 1.5,
        "d": -2.25,
        "fixed": b"abcd",
        "millis": OCCURRED,
        "maybe_micros": None,
        "null_last": "x",
        "maybe_int": None,
        "maybe_boolean": True,
        "maybe_bytes": None,
        "maybe_float": None,
        "maybe_double": 0.1,
        "maybe_enum": "green",
        "maybe_array": ["red"],
        "maybe_map": {"a": 1},
        "wrapped": "w",
        "int_micros": 7,
        "own_logical": "LOUD",
        "tree": {"label": "root", "children": [{"label": "leaf", "children": []}]},
        "general": None,
        "uuid": None,
    }


def test_the_example_of_the_rest_of_the_subset_is_handled() -> None:
    record = _everything_example()
    assert build_writer(EVERYTHING).encode(record) == fastavro_body(EVERYTHING, record)


def test_an_odd_value_anywhere_in_the_rest_of_the_subset_is_written_right_or_handed_over() -> None:
    writer, example = build_writer(EVERYTHING), _everything_example()
    wrong = []
    for path in _places(example):
        for odd in [*_ODD, 1e300, b"1234", "red", ["red", "blue"], {"a": 2**63}]:
            record = _replaced(example, path, odd)
            try:
                expected = fastavro_body(EVERYTHING, record)
            except Exception:  # fastavro refuses it, so must the writer
                expected = None
            written = writer.encode(record)
            if written is not None and written != expected:
                wrong.append((path, odd, written, expected))
    assert wrong == []


def test_unions_without_null_always_go_to_fastavro() -> None:
    writer = build_writer(parse_schema(["string", "long"]))
    assert writer.encode("x") is None
    assert writer.encode(None) is None


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": "Nope"}]},
        {"type": {"type": "string"}},
        {"type": "request"},
        7,
    ],
)
def test_schemas_fastavro_could_not_have_parsed_are_refused(schema: Any) -> None:
    with pytest.raises(ValueError, match="not a fastavro-parsed schema"):
        build_writer(schema)


def test_recursive_types_get_a_function(codec: Codec) -> None:
    source = build_writer(EVERYTHING).source
    assert "def write_test_Node_0(record, out):" in source
    assert "def write_" not in build_writer(codec.schema("changefeed.ChangeEvent")).source
