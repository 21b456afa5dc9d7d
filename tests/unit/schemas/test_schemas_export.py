"""``changefeed schemas export``: standalone Avro schemas, JSON Schemas, fingerprints."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import jsonschema
from change_events import change_event

from changefeed.export_formats import json_default
from schemas.codec import default_codec
from schemas.schema_export import export_schemas


def test_exported_schemas_read_records_and_validate_json(tmp_path: Path) -> None:
    codec = default_codec()
    export_schemas(codec, tmp_path)
    value = codec.encode("changefeed.ChangeEvent", change_event(3))
    fingerprints = json.loads((tmp_path / "fingerprints.json").read_text())
    entry = fingerprints[value[2:10].hex()]  # the writer schema, from the record's header
    assert entry["schema"] == "changefeed.ChangeEvent"
    schema = fastavro.parse_schema(json.loads((tmp_path / entry["file"]).read_text()))
    record = fastavro.schemaless_reader(io.BytesIO(value[10:]), schema)
    assert record == codec.decode(value, "changefeed.ChangeEvent")
    document = json.loads((tmp_path / "changefeed.ChangeEvent.schema.json").read_text())
    as_json = json.loads(json.dumps(record, default=json_default))
    jsonschema.validate(as_json, document)
    as_json["late"] = "no"
    try:
        jsonschema.validate(as_json, document)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("a wrong type must not validate")
    assert (tmp_path / "archive" / "changefeed.ApiAction.v1.avsc").exists()
