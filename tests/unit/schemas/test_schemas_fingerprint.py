"""The single-object header is checked against the Avro specification, not against fastavro.

The specification defines CRC-64-AVRO as a Rabin fingerprint with a 256-entry table built from
the constant EMPTY = 0xc15d213aa4d7a795, and the single-object header as C3 01 followed by the
fingerprint in little-endian order. The function below implements that definition on its own,
is pinned to reference fingerprints published with Avro's shared test data, and is then compared
with what the codec writes.
"""

import struct
from pathlib import Path

import pytest

from schemas.codec import SINGLE_OBJECT_MAGIC, Codec, SchemaVersion, default_codec

EMPTY_64 = 0xC15D213AA4D7A795
MASK_64 = (1 << 64) - 1


def _fingerprint_table() -> list[int]:
    table = []
    for byte in range(256):
        fp = byte
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY_64 if fp & 1 else 0)
        table.append(fp)
    return table


FP_TABLE = _fingerprint_table()


def crc64_avro(data: bytes) -> int:
    fp = EMPTY_64
    for byte in data:
        fp = ((fp >> 8) ^ FP_TABLE[(fp ^ byte) & 0xFF]) & MASK_64
    return fp


def header_per_spec(canonical_form: str) -> bytes:
    return b"\xc3\x01" + struct.pack("<Q", crc64_avro(canonical_form.encode("utf-8")))


# Parsing Canonical Form -> fingerprint as a signed 64-bit integer (Java long), from Avro's
# share/test/data/schema-tests.txt.
SPEC_VECTORS = [
    ('"null"', 7195948357588979594),
    ('"int"', 8247732601305521295),
    ('"string"', -8142146995180207161),
    ('{"name":"x.y.foo","type":"record","fields":[]}', 5916914534497305771),
    ('{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}', -4448647247586288245),
    ('{"type":"map","values":"string"}', -8732877298790414990),
]


@pytest.mark.parametrize("canonical_form, expected", SPEC_VECTORS)
def test_independent_crc64_matches_avro_reference_vectors(
    canonical_form: str, expected: int
) -> None:
    assert crc64_avro(canonical_form.encode()) == expected & MASK_64


@pytest.mark.parametrize("version", default_codec().versions, ids=lambda v: v.label)
def test_every_known_fingerprint_is_the_spec_crc64_of_the_canonical_form(
    version: SchemaVersion,
) -> None:
    assert SINGLE_OBJECT_MAGIC + version.fingerprint == header_per_spec(version.canonical_form)


MINIMAL_RECORDS: dict[str, dict[str, object]] = {
    "changefeed.ApiAction": {
        "event_id": "e",
        "request_id": "r",
        "tenant_id": "t",
        "action": "create",
        "event_type": "a:created",
        "subject_type": "a",
        "subject_id": "1",
        "occurred_at": 0,
        "actor": {},
    },
    "changefeed.SubjectRef": {"key": "workspace", "id": "7"},
}


@pytest.mark.parametrize("name", sorted(MINIMAL_RECORDS))
def test_encoded_header_is_magic_then_little_endian_fingerprint(name: str) -> None:
    codec = default_codec()
    version = next(v for v in codec.versions if v.label == name)

    data = codec.encode(name, MINIMAL_RECORDS[name])

    assert data[:10] == header_per_spec(version.canonical_form)
    assert codec.fingerprint(name) == data[2:10]


def test_canonical_form_drops_docs_and_uses_full_names() -> None:
    canonical = next(v for v in default_codec().versions if v.label == "changefeed.ApiAction")
    form = canonical.canonical_form
    assert '"doc"' not in form and '"default"' not in form
    assert form.startswith('{"name":"changefeed.ApiAction","type":"record","fields":[')
    # A referenced type is inlined at its first use, so the fingerprint covers it too.
    assert '{"name":"changefeed.Actor","type":"record"' in form


def test_doc_changes_keep_the_fingerprint_and_type_changes_do_not(tmp_path: Path) -> None:
    base = default_codec().fingerprint("changefeed.SubjectRef")
    (tmp_path / "changefeed.SubjectRef.avsc").write_text(
        '{"type": "record", "name": "SubjectRef", "namespace": "changefeed", "doc": "other",'
        ' "fields": [{"name": "key", "type": "string", "doc": "k"},'
        ' {"name": "id", "type": "string"}]}'
    )
    assert Codec(tmp_path).fingerprint("changefeed.SubjectRef") == base

    (tmp_path / "changefeed.SubjectRef.avsc").write_text(
        '{"type": "record", "name": "SubjectRef", "namespace": "changefeed",'
        ' "fields": [{"name": "key", "type": "string"}, {"name": "id", "type": "long"}]}'
    )
    assert Codec(tmp_path).fingerprint("changefeed.SubjectRef") != base
