"""Schema evolution: data written with any archived version stays readable by the current code.

Policy: a change to a schema in schemas/ first copies the old version, with every referenced
type inlined, to schemas/archive/<namespace>.<Name>.v<N>.avsc. The tests below walk that folder,
so a new archive file is covered without touching this file: each version must load, must be
resolvable to the current schema over data taking every union branch and enum symbol, and its
data must decode through the codec with the current defaults filled in.

tests/unit/schemas/data/ holds bytes written once with ApiAction v1. Regenerate them only for
a new fixture, never to make a failing test pass:
``python tests/unit/schemas/test_schemas_evolution.py``. Because the bytes carry v1's
fingerprint, they also prove that the types in the archived file were not edited (docs and
defaults are not part of a fingerprint).
"""

import copy
import json
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer

from schemas.codec import (
    ARCHIVE_DIR,
    SCHEMA_DIR,
    SINGLE_OBJECT_MAGIC,
    Codec,
    SchemaVersion,
    default_codec,
)
from schemas.errors import IncompatibleSchemaError, SchemaLoadError, UnknownSchemaError
from schemas.evolution import check_readable, covering_records

DATA_DIR = Path(__file__).parent / "data"
V1_FIXTURE = DATA_DIR / "changefeed.ApiAction.v1.single-object.hex"
ARCHIVED = sorted(ARCHIVE_DIR.glob("*.avsc"))
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The record in V1_FIXTURE, as written with ApiAction v1 (no subject_ref, no source).
V1_RECORD: dict[str, Any] = {
    "event_id": "3d7e4f2a-91c0-4b8e-a5d6-0c2f8e1b7a94",
    "request_id": "req-51c9",
    "tenant_id": "tenant-7",
    "action": "delete",
    "event_type": "invoice:deleted",
    "subject_type": "invoice",
    "subject_id": "INV-2024-0193",
    "version": 5,
    "occurred_at": datetime(2024, 3, 1, 8, 30, 0, 250000, tzinfo=UTC),
    "actor": {
        "user_id": "u-77",
        "application_id": None,
        "api_version": "v1",
        "api_key_fingerprint": "sha256:9be1c0d4",
    },
    "criticality": 2,
    "code": 10_001,
    "internal": False,
    "payload_content_type": "application/json",
    "payload": None,
}


def _archived_version(path: Path) -> SchemaVersion:
    return next(v for v in default_codec().versions if v.path == path)


def _current_field_defaults(name: str) -> dict[str, Any]:
    schema = default_codec().schema(name)
    return {f["name"]: f["default"] for f in schema["fields"] if "default" in f}


def _as_decoded(written: Any, decoded: Any) -> Any:
    """What the codec should return for a value written as int microseconds or as is."""
    if isinstance(decoded, datetime) and isinstance(written, int):
        return EPOCH + timedelta(microseconds=written)
    return written


def test_archive_holds_at_least_the_api_action_v1() -> None:
    assert ARCHIVE_DIR / "changefeed.ApiAction.v1.avsc" in ARCHIVED


@pytest.mark.parametrize("path", ARCHIVED, ids=lambda p: p.name)
def test_archived_version_is_loaded_as_a_writer_schema(path: Path) -> None:
    version = _archived_version(path)
    assert version.archived
    assert version.label == path.stem
    assert version.fingerprint != default_codec().fingerprint(version.full_name)


@pytest.mark.parametrize("path", ARCHIVED, ids=lambda p: p.name)
def test_archived_version_resolves_to_the_current_schema(path: Path) -> None:
    version = _archived_version(path)
    check_readable(version.schema, default_codec().schema(version.full_name))


@pytest.mark.parametrize("path", ARCHIVED, ids=lambda p: p.name)
def test_data_written_with_archived_version_decodes_with_current_defaults(path: Path) -> None:
    codec = default_codec()
    version = _archived_version(path)
    current_fields = {f["name"] for f in codec.schema(version.full_name)["fields"]}
    defaults = _current_field_defaults(version.full_name)

    for written in covering_records(version.schema):
        body = BytesIO()
        schemaless_writer(body, version.schema, written)
        frame = SINGLE_OBJECT_MAGIC + version.fingerprint + body.getvalue()

        decoded = codec.decode(frame, version.full_name)

        assert set(decoded) == current_fields
        for field_name, value in decoded.items():
            if field_name in written:
                assert value == _as_decoded(written[field_name], value)
            else:
                assert value == defaults[field_name]


def test_bytes_written_by_v1_in_the_past_still_decode() -> None:
    data = bytes.fromhex(V1_FIXTURE.read_text())

    decoded = default_codec().decode(data, "changefeed.ApiAction")

    assert decoded == {**V1_RECORD, "subject_ref": None, "source": ""}
    assert data[2:10] != default_codec().fingerprint("changefeed.ApiAction")


def test_current_data_is_still_readable_by_v1_readers() -> None:
    """Not required by the policy, but true today: consumers on v1 can read v2 data."""
    v1 = _archived_version(ARCHIVE_DIR / "changefeed.ApiAction.v1.avsc")
    check_readable(default_codec().schema("changefeed.ApiAction"), v1.schema)


# --- the check rejects breaking changes ------------------------------------------------------


def _v1_raw() -> dict[str, Any]:
    return json.loads((ARCHIVE_DIR / "changefeed.ApiAction.v1.avsc").read_text())


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def test_adding_a_required_field_without_default_is_rejected() -> None:
    reader = _v1_raw()
    reader["fields"].append({"name": "region", "type": "string"})
    with pytest.raises(IncompatibleSchemaError, match="region"):
        check_readable(_v1_raw(), reader)


def test_adding_the_same_field_with_a_default_is_accepted() -> None:
    reader = _v1_raw()
    reader["fields"].append({"name": "region", "type": "string", "default": "eu"})
    check_readable(_v1_raw(), reader)


def test_changing_a_type_inside_a_union_branch_is_rejected() -> None:
    """Only data taking the non-null branch reaches the change, so sample data must cover it."""
    reader = _v1_raw()
    _field(_field(reader, "actor")["type"], "user_id")["type"] = ["null", "long"]
    with pytest.raises(IncompatibleSchemaError, match="schema mismatch"):
        check_readable(_v1_raw(), reader)


def test_removing_an_enum_symbol_is_rejected() -> None:
    reader = _v1_raw()
    _field(reader, "action")["type"]["symbols"] = ["create", "update", "delete"]
    with pytest.raises(IncompatibleSchemaError, match="custom"):
        check_readable(_v1_raw(), reader)


def test_covering_records_take_every_enum_symbol_and_union_branch() -> None:
    records = covering_records(default_codec().schema("changefeed.ChangeEvent"))

    ops = {op["op"] for r in records for op in r["payload_changes"]}
    assert ops == {"add", "remove", "replace", "move", "copy", "test"}
    assert {r["action"] for r in records} == {"create", "update", "delete", "custom"}
    assert {r["subject_ref"] is None for r in records} == {True, False}
    assert {r["field_changes"]["k"]["old"] is None for r in records} == {True, False}


# --- archive files are checked on load -------------------------------------------------------


def _schema_copy(target: Path) -> Path:
    for path in SCHEMA_DIR.glob("*.avsc"):
        (target / path.name).write_text(path.read_text())
    (target / "archive").mkdir()
    return target


def test_archived_schema_must_inline_the_types_it_uses(tmp_path: Path) -> None:
    schemas = _schema_copy(tmp_path)
    archived = _v1_raw()
    _field(archived, "actor")["type"] = "changefeed.Actor"
    (schemas / "archive" / "changefeed.ApiAction.v1.avsc").write_text(json.dumps(archived))
    with pytest.raises(SchemaLoadError, match="must inline"):
        Codec(schemas)


@pytest.mark.parametrize(
    "file_name, message",
    [
        ("changefeed.ApiAction.avsc", "named <full name>.v<N>.avsc"),
        ("changefeed.ChangeEvent.v1.avsc", "defines changefeed.ApiAction"),
    ],
)
def test_archived_file_name_must_match_its_type(
    tmp_path: Path, file_name: str, message: str
) -> None:
    schemas = _schema_copy(tmp_path)
    (schemas / "archive" / file_name).write_text(json.dumps(_v1_raw()))
    with pytest.raises(SchemaLoadError, match=message):
        Codec(schemas)


def test_archive_of_a_type_that_no_longer_exists_is_refused(tmp_path: Path) -> None:
    schemas = _schema_copy(tmp_path)
    gone = copy.deepcopy(_v1_raw())
    gone["name"] = "OldAction"
    (schemas / "archive" / "changefeed.OldAction.v1.avsc").write_text(json.dumps(gone))
    with pytest.raises(SchemaLoadError, match="which is gone"):
        Codec(schemas)


def test_data_of_an_unresolvable_archived_version_raises_unknown_schema_error(
    tmp_path: Path,
) -> None:
    schemas = _schema_copy(tmp_path)
    archived = _v1_raw()
    _field(archived, "action")["type"]["symbols"].append("archive")
    (schemas / "archive" / "changefeed.ApiAction.v1.avsc").write_text(json.dumps(archived))
    codec = Codec(schemas)
    version = next(v for v in codec.versions if v.archived)
    body = BytesIO()
    schemaless_writer(body, version.schema, {**V1_RECORD, "action": "archive"})

    with pytest.raises(IncompatibleSchemaError, match="archive"):
        check_readable(version.schema, codec.schema("changefeed.ApiAction"))
    with pytest.raises(UnknownSchemaError, match="cannot be resolved"):
        frame = SINGLE_OBJECT_MAGIC + version.fingerprint + body.getvalue()
        codec.decode(frame, "changefeed.ApiAction")


def write_v1_fixture() -> None:
    """Write V1_FIXTURE from V1_RECORD with the archived v1 schema (run once per fixture)."""
    version = _archived_version(ARCHIVE_DIR / "changefeed.ApiAction.v1.avsc")
    body = BytesIO()
    schemaless_writer(body, version.schema, V1_RECORD)
    frame = SINGLE_OBJECT_MAGIC + version.fingerprint + body.getvalue()
    DATA_DIR.mkdir(exist_ok=True)
    V1_FIXTURE.write_text(frame.hex() + "\n")


if __name__ == "__main__":
    write_v1_fixture()
