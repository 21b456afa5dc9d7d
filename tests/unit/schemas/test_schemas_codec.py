import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from changefeed.errors import ChangefeedError
from schemas.codec import SCHEMA_DIR, SINGLE_OBJECT_MAGIC, Codec, default_codec
from schemas.errors import (
    DecodeError,
    EncodeError,
    IncompatibleSchemaError,
    SchemaError,
    SchemaLoadError,
    SchemaNotFoundError,
    UnknownSchemaError,
)

OCCURRED = datetime(2024, 9, 18, 14, 3, 11, 402113, tzinfo=UTC)
CREATED = datetime(2024, 9, 18, 14, 3, 12, 5, tzinfo=UTC)


def api_action(**changes: Any) -> dict[str, Any]:
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
            "application_id": "app-9",
            "api_version": "v2",
            "api_key_fingerprint": "sha256:3f2a9c1e",
        },
        "criticality": 3,
        "code": 1204,
        "internal": True,
        "payload_content_type": "application/json",
        "payload": json.dumps({"id": "123456", "status": "submitted", "amount_cents": 48250}),
        "source": "https://api.example.com/v2",
    }
    record.update(changes)
    return record


def change_event(**changes: Any) -> dict[str, Any]:
    action = api_action()
    record: dict[str, Any] = {
        "change_id": "6f1d1f5e-2c1b-5d39-9d0e-0f4a6d1c2b3a",
        **{k: action[k] for k in ("event_id", "request_id", "tenant_id", "action", "actor")},
        **{k: action[k] for k in ("event_type", "subject_type", "subject_id", "subject_ref")},
        "version": 12,
        "criticality": 3,
        "code": 1204,
        "internal": True,
        "payload_content_type": "application/json",
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
        "created_at": CREATED,
        "source": "https://api.example.com/v2",
    }
    record.update(changes)
    return record


def dead_letter(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "reason_code": "undecodable",
        "reason": "body is undecodable",
        "topic": "changefeed.actions",
        "partition": 2,
        "offset": 81_234,
        "timestamp_ms": 1_726_668_191_402,
        "key": b"tenant-42",
        "value": b"\xc3\x01garbage",
        "headers": {"ce_id": b"0b4c2b8e", "ce_type": b"expense_report:updated"},
        "failed_at": CREATED,
        "sealed": None,
    }
    record.update(changes)
    return record


EXAMPLES: dict[str, Callable[..., dict[str, Any]]] = {
    "changefeed.ApiAction": api_action,
    "changefeed.ChangeEvent": change_event,
    "changefeed.DeadLetter": dead_letter,
}
NESTED_EXAMPLES: dict[str, dict[str, Any]] = {
    "changefeed.Actor": {
        "user_id": None,
        "application_id": "a",
        "api_version": None,
        "api_key_fingerprint": None,
    },
    "changefeed.SubjectRef": {"key": "workspace", "id": "77"},
    "changefeed.PatchOperation": {"op": "test", "path": "/a/0", "from": None, "value": "1"},
    "changefeed.FieldChange": {"old": None, "new": "[1,2]"},
}


@pytest.fixture(scope="module")
def codec() -> Codec:
    return default_codec()


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_top_level_records_round_trip(codec: Codec, name: str) -> None:
    record = EXAMPLES[name]()
    assert codec.decode(codec.encode(name, record), name) == record


@pytest.mark.parametrize("name", sorted(NESTED_EXAMPLES))
def test_nested_record_types_round_trip_on_their_own(codec: Codec, name: str) -> None:
    record = NESTED_EXAMPLES[name]
    assert codec.decode(codec.encode(name, record), name) == record


def test_every_record_type_has_an_example() -> None:
    schemas = [json.loads(path.read_text()) for path in SCHEMA_DIR.glob("*.avsc")]
    record_types = {f"{s['namespace']}.{s['name']}" for s in schemas if s["type"] == "record"}
    assert record_types == set(EXAMPLES) | set(NESTED_EXAMPLES)


def test_omitted_fields_decode_to_their_defaults(codec: Codec) -> None:
    required = {"event_id", "request_id", "tenant_id", "action", "event_type"}
    required |= {"subject_type", "subject_id", "occurred_at", "actor"}
    record = {k: v for k, v in api_action().items() if k in required}

    decoded = codec.decode(codec.encode("changefeed.ApiAction", record), "changefeed.ApiAction")

    assert decoded["subject_ref"] is None and decoded["version"] is None
    assert (decoded["criticality"], decoded["code"], decoded["internal"]) == (0, 0, True)
    assert decoded["payload_content_type"] == "application/json"
    assert (decoded["payload"], decoded["source"]) == (None, "")


def test_body_is_plain_schemaless_avro_after_the_header(codec: Codec) -> None:
    record = api_action()
    body = BytesIO()
    schemaless_writer(body, codec.schema("changefeed.ApiAction"), record)

    data = codec.encode("changefeed.ApiAction", record)

    assert data == SINGLE_OBJECT_MAGIC + codec.fingerprint("changefeed.ApiAction") + body.getvalue()


def test_default_codec_is_built_once() -> None:
    assert default_codec() is default_codec()


def test_decode_accepts_bytearray_and_memoryview(codec: Codec) -> None:
    data = codec.encode("changefeed.DeadLetter", dead_letter())
    assert codec.decode(bytearray(data), "changefeed.DeadLetter") == dead_letter()
    assert codec.decode(memoryview(data), "changefeed.DeadLetter") == dead_letter()


# --- timestamps ------------------------------------------------------------------------------


def test_timestamps_accept_int_microseconds_and_decode_to_aware_utc(codec: Codec) -> None:
    micros = 1_726_668_191_402_113
    data = codec.encode("changefeed.ApiAction", api_action(occurred_at=micros))

    occurred_at = codec.decode(data, "changefeed.ApiAction")["occurred_at"]

    assert occurred_at == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    assert occurred_at.tzinfo is UTC


def test_aware_datetimes_in_other_zones_keep_their_instant(codec: Codec) -> None:
    paris_summer = timezone(timedelta(hours=2))
    local = datetime(2024, 9, 18, 16, 3, 11, 402113, tzinfo=paris_summer)
    data = codec.encode("changefeed.ApiAction", api_action(occurred_at=local))

    occurred_at = codec.decode(data, "changefeed.ApiAction")["occurred_at"]

    assert occurred_at == OCCURRED
    assert occurred_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "name, field, make",
    [
        ("changefeed.ApiAction", "occurred_at", api_action),
        ("changefeed.ChangeEvent", "created_at", change_event),
        ("changefeed.ChangeEvent", "subject_changed_at", change_event),
        ("changefeed.DeadLetter", "failed_at", dead_letter),
    ],
)
def test_naive_datetimes_are_refused(
    codec: Codec, name: str, field: str, make: Callable[..., dict[str, Any]]
) -> None:
    with pytest.raises(EncodeError, match="naive") as caught:
        codec.encode(name, make(**{field: datetime(2024, 9, 18, 14, 3)}))
    assert caught.value.field == f"{name}.{field}"


# --- records that do not fit -----------------------------------------------------------------


def _without(record: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != field}


@pytest.mark.parametrize(
    "name, record, field",
    [
        (
            "changefeed.ApiAction",
            _without(api_action(), "event_id"),
            "changefeed.ApiAction.event_id",
        ),
        ("changefeed.ApiAction", _without(api_action(), "actor"), "changefeed.ApiAction.actor"),
        ("changefeed.ApiAction", api_action(tenant_id=None), "changefeed.ApiAction.tenant_id"),
        (
            "changefeed.ApiAction",
            api_action(criticality="high"),
            "changefeed.ApiAction.criticality",
        ),
        ("changefeed.ApiAction", api_action(action="explode"), "changefeed.ApiAction.action"),
        (
            "changefeed.ApiAction",
            api_action(occurred_at="today"),
            "changefeed.ApiAction.occurred_at",
        ),
        ("changefeed.ApiAction", api_action(payload=b"{}"), "changefeed.ApiAction.payload"),
        ("changefeed.ApiAction", api_action(version=1.5), "changefeed.ApiAction.version"),
        ("changefeed.ApiAction", api_action(actor={"user_id": 5}), "changefeed.Actor.user_id"),
        ("changefeed.ApiAction", api_action(subject_ref={"key": "k"}), "changefeed.SubjectRef.id"),
        # What fastavro's writer would accept silently:
        ("changefeed.ApiAction", api_action(internal="false"), "changefeed.ApiAction.internal"),
        ("changefeed.ApiAction", api_action(code=2**31), "changefeed.ApiAction.code"),
        (
            "changefeed.DeadLetter",
            dead_letter(partition=-(2**31) - 1),
            "changefeed.DeadLetter.partition",
        ),
        ("changefeed.DeadLetter", dead_letter(offset=2**64), "changefeed.DeadLetter.offset"),
        ("changefeed.DeadLetter", dead_letter(value="text"), "changefeed.DeadLetter.value"),
        (
            "changefeed.DeadLetter",
            dead_letter(headers={"a": "text"}),
            "changefeed.DeadLetter.headers",
        ),
        (
            "changefeed.ChangeEvent",
            change_event(payload_changes=[{"op": "patch", "path": "/a"}]),
            "changefeed.PatchOperation.op",
        ),
        (
            "changefeed.ChangeEvent",
            change_event(payload_changes=[{"op": "add"}]),
            "changefeed.PatchOperation.path",
        ),
        (
            "changefeed.ChangeEvent",
            change_event(field_changes={"/a": {"old": 1}}),
            "changefeed.FieldChange.old",
        ),
    ],
)
def test_records_that_do_not_fit_raise_encode_error_naming_the_field(
    codec: Codec, name: str, record: dict[str, Any], field: str
) -> None:
    with pytest.raises(EncodeError) as caught:
        codec.encode(name, record)
    assert caught.value.field == field
    assert field in str(caught.value)
    assert caught.value.reason_code == "invalid_field"


def test_library_errors_are_chained_not_leaked(codec: Codec) -> None:
    with pytest.raises(EncodeError) as caught:
        codec.encode("changefeed.ApiAction", _without(api_action(), "event_id"))
    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.parametrize("record", [None, ["event_id"], "text"])
def test_non_mapping_records_raise_encode_error(codec: Codec, record: Any) -> None:
    with pytest.raises(EncodeError, match="must be a mapping"):
        codec.encode("changefeed.ApiAction", record)


def test_validate_accepts_good_records_and_names_nested_problems(codec: Codec) -> None:
    codec.validate("changefeed.ChangeEvent", change_event())
    bad_nested = change_event(payload_changes=[{"op": "add", "path": 7}])
    with pytest.raises(EncodeError) as caught:
        codec.validate("changefeed.ChangeEvent", bad_nested)
    assert caught.value.field == "changefeed.PatchOperation.path"


@pytest.mark.parametrize("name", ["changefeed.Nope", "changefeed.Action"])
def test_names_that_are_not_record_types_are_the_callers_bug(codec: Codec, name: str) -> None:
    data = codec.encode("changefeed.ApiAction", api_action())
    with pytest.raises(SchemaNotFoundError, match="known record types"):
        codec.encode(name, {})
    with pytest.raises(SchemaNotFoundError):
        codec.decode(data, name)
    with pytest.raises(SchemaNotFoundError):
        codec.fingerprint(name)
    assert not issubclass(SchemaNotFoundError, DecodeError)


# --- bytes that cannot be decoded ------------------------------------------------------------


def test_every_truncation_raises_decode_error(codec: Codec) -> None:
    data = codec.encode("changefeed.ChangeEvent", change_event())
    for length in range(len(data)):
        with pytest.raises(DecodeError) as caught:
            codec.decode(data[:length], "changefeed.ChangeEvent")
        assert caught.value.reason_code == "undecodable"


def test_trailing_bytes_raise_decode_error(codec: Codec) -> None:
    data = codec.encode("changefeed.ApiAction", api_action())
    with pytest.raises(DecodeError, match="1 extra bytes"):
        codec.decode(data + b"\x00", "changefeed.ApiAction")


@pytest.mark.parametrize("data", [b"", b"\xc3", b"\xc3\x02" + bytes(20), b"\x00" + bytes(20)])
def test_bad_magic_raises_decode_error(codec: Codec, data: bytes) -> None:
    with pytest.raises(DecodeError, match="single-object") as caught:
        codec.decode(data, "changefeed.ApiAction")
    assert type(caught.value) is DecodeError


def test_timestamp_beyond_datetime_range_raises_decode_error(codec: Codec) -> None:
    data = codec.encode("changefeed.ApiAction", api_action(occurred_at=2**62))
    with pytest.raises(DecodeError) as caught:
        codec.decode(data, "changefeed.ApiAction")
    assert isinstance(caught.value.__cause__, OverflowError)


@given(body=st.binary(max_size=300), name=st.sampled_from(sorted(EXAMPLES)))
def test_garbage_after_a_known_header_never_escapes_as_a_library_error(
    body: bytes, name: str
) -> None:
    codec = default_codec()
    try:
        decoded = codec.decode(SINGLE_OBJECT_MAGIC + codec.fingerprint(name) + body, name)
    except DecodeError as exc:
        assert type(exc) is DecodeError
    else:
        assert codec.decode(codec.encode(name, decoded), name) == decoded


def test_unknown_fingerprint_raises_unknown_schema_error(codec: Codec) -> None:
    data = codec.encode("changefeed.ApiAction", api_action())
    forged = SINGLE_OBJECT_MAGIC + b"\x01" * 8 + data[10:]

    with pytest.raises(UnknownSchemaError, match="0101010101010101") as caught:
        codec.decode(forged, "changefeed.ApiAction")

    assert caught.value.schema_key == b"\x01" * 8
    assert caught.value.reason_code == "unknown_schema"
    assert isinstance(caught.value, DecodeError)


def test_data_of_another_record_type_raises_unknown_schema_error(codec: Codec) -> None:
    data = codec.encode("changefeed.DeadLetter", dead_letter())
    with pytest.raises(UnknownSchemaError, match="is changefeed.DeadLetter, not a version of"):
        codec.decode(data, "changefeed.ApiAction")


# --- random records --------------------------------------------------------------------------

_text = st.text(max_size=40)
_optional_text = st.none() | _text
_aware_datetimes = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)
_int32 = st.integers(-(2**31), 2**31 - 1)
_api_actions = st.fixed_dictionaries(
    {
        "event_id": _text,
        "request_id": _text,
        "tenant_id": _text,
        "action": st.sampled_from(["create", "update", "delete", "custom"]),
        "event_type": _text,
        "subject_type": _text,
        "subject_id": _text,
        "subject_ref": st.none() | st.fixed_dictionaries({"key": _text, "id": _text}),
        "version": st.none() | st.integers(-(2**63), 2**63 - 1),
        "occurred_at": _aware_datetimes,
        "actor": st.fixed_dictionaries(
            {
                "user_id": _optional_text,
                "application_id": _optional_text,
                "api_version": _optional_text,
                "api_key_fingerprint": _optional_text,
            }
        ),
        "criticality": _int32,
        "code": _int32,
        "internal": st.booleans(),
        "payload_content_type": _text,
        "payload": st.none() | st.dictionaries(_text, st.integers() | _text).map(json.dumps),
        "source": _text,
    }
)


@given(record=_api_actions)
def test_random_api_actions_round_trip(record: dict[str, Any]) -> None:
    codec = default_codec()
    decoded = codec.decode(codec.encode("changefeed.ApiAction", record), "changefeed.ApiAction")
    assert decoded == record  # aware datetimes compare by instant
    assert decoded["occurred_at"].utcoffset() == timedelta(0)


# --- Confluent framing -----------------------------------------------------------------------

CONFLUENT_IDS = {
    "changefeed.ApiAction": 7,
    "changefeed.ApiAction.v1": 3,
    "changefeed.DeadLetter": 9,
}


@pytest.fixture(scope="module")
def confluent() -> Codec:
    return Codec(framing="confluent", schema_ids=CONFLUENT_IDS)


def test_confluent_frame_is_zero_then_big_endian_id_then_body(confluent: Codec) -> None:
    record = api_action()
    body = BytesIO()
    schemaless_writer(body, confluent.schema("changefeed.ApiAction"), record)

    data = confluent.encode("changefeed.ApiAction", record)

    assert data == b"\x00\x00\x00\x00\x07" + body.getvalue()
    assert confluent.decode(data, "changefeed.ApiAction") == record


def test_confluent_decodes_archived_versions_by_their_id(confluent: Codec) -> None:
    v1 = next(v for v in confluent.versions if v.label == "changefeed.ApiAction.v1")
    v1_record = {k: v for k, v in api_action().items() if k not in ("subject_ref", "source")}
    body = BytesIO()
    schemaless_writer(body, v1.schema, v1_record)

    decoded = confluent.decode(b"\x00\x00\x00\x00\x03" + body.getvalue(), "changefeed.ApiAction")

    assert decoded == {**v1_record, "subject_ref": None, "source": ""}


def test_confluent_unknown_id_raises_unknown_schema_error(confluent: Codec) -> None:
    data = confluent.encode("changefeed.ApiAction", api_action())
    with pytest.raises(UnknownSchemaError, match="schema id 99") as caught:
        confluent.decode(b"\x00\x00\x00\x00\x63" + data[5:], "changefeed.ApiAction")
    assert caught.value.schema_key == 99


def test_confluent_refuses_single_object_bytes_and_vice_versa(
    codec: Codec, confluent: Codec
) -> None:
    with pytest.raises(DecodeError, match="Confluent"):
        confluent.decode(codec.encode("changefeed.ApiAction", api_action()), "changefeed.ApiAction")
    with pytest.raises(DecodeError, match="single-object"):
        codec.decode(confluent.encode("changefeed.ApiAction", api_action()), "changefeed.ApiAction")


def test_confluent_cannot_encode_a_type_without_an_id(confluent: Codec) -> None:
    with pytest.raises(SchemaNotFoundError, match="no id"):
        confluent.encode("changefeed.ChangeEvent", change_event())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"framing": "confluent"}, "needs schema_ids"),
        ({"framing": "confluent", "schema_ids": {"changefeed.Nope": 1}}, "unknown schemas"),
        ({"framing": "confluent", "schema_ids": {"changefeed.ApiAction": -1}}, "must be in"),
        ({"framing": "confluent", "schema_ids": {"changefeed.ApiAction": True}}, "must be an int"),
        (
            {
                "framing": "confluent",
                "schema_ids": {"changefeed.ApiAction": 1, "changefeed.DeadLetter": 1},
            },
            "given to",
        ),
        ({"schema_ids": {"changefeed.ApiAction": 1}}, "only apply to confluent"),
        ({"framing": "avro-container"}, "unknown framing"),
    ],
)
def test_bad_codec_configuration_raises_schema_load_error(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(SchemaLoadError, match=message):
        Codec(**options)


# --- loading ---------------------------------------------------------------------------------


def _copy_schemas(target: Path) -> Path:
    for path in SCHEMA_DIR.glob("*.avsc"):
        (target / path.name).write_text(path.read_text())
    (target / "archive").mkdir()
    return target


def test_a_schema_file_must_be_named_after_its_type(tmp_path: Path) -> None:
    schemas = _copy_schemas(tmp_path)
    (schemas / "changefeed.SubjectRef.avsc").rename(schemas / "subject_ref.avsc")
    with pytest.raises(SchemaLoadError, match="SubjectRef"):
        Codec(schemas)


def test_an_empty_schema_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SchemaLoadError, match="no \\*.avsc"):
        Codec(tmp_path)


# --- errors ----------------------------------------------------------------------------------


def _dead_letter_reason_codes() -> set[str]:
    schema = json.loads((SCHEMA_DIR / "changefeed.DeadLetter.avsc").read_text())
    field = next(f for f in schema["fields"] if f["name"] == "reason_code")
    return {code.strip() for code in field["doc"].split("|")}


@pytest.mark.parametrize(
    "error_class",
    [
        SchemaError,
        SchemaLoadError,
        SchemaNotFoundError,
        EncodeError,
        DecodeError,
        UnknownSchemaError,
        IncompatibleSchemaError,
    ],
)
def test_every_error_is_ours_with_a_reason_code_dead_letters_document(
    error_class: type[SchemaError],
) -> None:
    assert issubclass(error_class, ChangefeedError)
    assert error_class.reason_code in _dead_letter_reason_codes()
