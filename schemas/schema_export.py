"""The record schemas as files for readers in other languages: Avro and JSON Schema.

:func:`export_schemas` writes, for each record a topic holds (``ApiAction`` on
``actions``, ``ChangeEvent`` on ``changes``, ``DeadLetter`` on ``actions.dlq``):

* ``<full name>.avsc``: the current Avro schema, standalone (every named type inlined), the
  reader schema for any Avro library;
* ``<full name>.schema.json``: a JSON Schema (draft 2020-12) of the record as the JSON
  exports write it (timestamps as RFC 3339 strings, bytes as hex, payloads as JSON text);
* ``archive/<label>.avsc``: every older version the codec still reads;
* ``fingerprints.json``: the CRC-64-AVRO fingerprint (hex, as in the single-object header
  ``C3 01`` + 8 bytes little-endian) of every version, so a reader in any language can pick
  the writer schema of a record from its first ten bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastavro.schema import expand_schema

from schemas.codec import Codec

TOPIC_RECORDS = {
    "actions": "changefeed.ApiAction",
    "changes": "changefeed.ChangeEvent",
    "actions.dlq": "changefeed.DeadLetter",
}
JSON_SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def standalone(schema: Any) -> Any:
    """A parsed schema with named types inlined and fastavro's bookkeeping keys dropped."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not k.startswith("__")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(expand_schema(schema))


def json_schema(avro: Any) -> dict[str, Any]:
    """The JSON Schema of records of the (standalone) Avro schema ``avro``, as exported."""
    if isinstance(avro, list):
        return {"anyOf": [json_schema(branch) for branch in avro]}
    if isinstance(avro, str):
        return {
            "null": {"type": "null"},
            "boolean": {"type": "boolean"},
            "int": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
            "long": {"type": "integer"},
            "float": {"type": "number"},
            "double": {"type": "number"},
            "string": {"type": "string"},
            "bytes": {"type": "string", "pattern": "^([0-9a-f]{2})*$"},
        }[avro]
    kind = avro["type"]
    if avro.get("logicalType", "").startswith("timestamp-"):
        return {"type": "string", "format": "date-time"}
    if kind == "record":
        out: dict[str, Any] = {
            "type": "object",
            "title": avro.get("name"),
            "properties": {f["name"]: _field(f) for f in avro["fields"]},
            "required": [f["name"] for f in avro["fields"] if "default" not in f],
            "additionalProperties": False,
        }
        if avro.get("doc"):
            out["description"] = avro["doc"]
        return out
    if kind == "enum":
        return {"type": "string", "enum": list(avro["symbols"])}
    if kind == "array":
        return {"type": "array", "items": json_schema(avro["items"])}
    if kind == "map":
        return {"type": "object", "additionalProperties": json_schema(avro["values"])}
    if kind == "fixed":
        return {"type": "string", "pattern": f"^[0-9a-f]{{{2 * avro['size']}}}$"}
    return json_schema(kind)


def _field(field: dict[str, Any]) -> dict[str, Any]:
    schema = json_schema(field["type"])
    if field.get("doc"):
        schema = {**schema, "description": field["doc"]}
    return schema


def export_schemas(codec: Codec, directory: Path) -> list[Path]:
    """Write the files above into ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    fingerprints: dict[str, dict[str, str]] = {}
    for topic, name in TOPIC_RECORDS.items():
        avro = standalone(codec.schema(name))
        avsc = directory / f"{name}.avsc"
        avsc.write_text(json.dumps(avro, indent=2) + "\n")
        document = {"$schema": JSON_SCHEMA_DRAFT, "$id": f"{name}.schema.json", **json_schema(avro)}
        document["description"] = f"A record of the {topic} topic. " + document.get(
            "description", ""
        )
        js = directory / f"{name}.schema.json"
        js.write_text(json.dumps(document, indent=2) + "\n")
        written += [avsc, js]
    for version in codec.versions:
        if version.full_name not in TOPIC_RECORDS.values():
            continue
        fingerprints[version.fingerprint.hex()] = {
            "schema": version.full_name,
            "label": version.label,
            "file": f"archive/{version.label}.avsc"
            if version.archived
            else f"{version.full_name}.avsc",
        }
        if version.archived:
            archived = directory / "archive" / f"{version.label}.avsc"
            archived.parent.mkdir(exist_ok=True)
            archived.write_text(json.dumps(standalone(version.schema), indent=2) + "\n")
            written.append(archived)
    index = directory / "fingerprints.json"
    index.write_text(json.dumps(fingerprints, indent=2, sort_keys=True) + "\n")
    written.append(index)
    return written
