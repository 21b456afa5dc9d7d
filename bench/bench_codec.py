"""Encode and decode rates of the changefeed codec, against bare fastavro and json.

Run ``python bench/bench_codec.py``. The publisher must sustain 30,000 actions/s in one process
including the Kafka send, so the codec's encode rate has to sit well above that; the bare
fastavro figures show what the framing and checks cost, the json figures give context.

"codec" is the codec as the processes build it: with the native reader and writer
(``schemas/native.py``) when installed; "no native" is the same codec without them
(``Codec(use_native=False)``: the specialised Python writer of ``schemas/fast_writer.py``,
fastavro's reader). The native writer takes timestamps given as int microseconds (as the
processors give them); a datetime goes to the Python writer, hence the "int micros" rows.

The last tables give, for each record type the pipeline writes and reads, the microseconds per
record of the codec, of the codec without the native side, and of bare fastavro. The
ChangeEvent is what a processor derives from the realistic update action below: its payload
diffed against the previous one.

Each figure is the best of several timed rounds, because on a shared machine the best round is
the one least disturbed by other processes; ratios are to the bare fastavro call.
"""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from processors.diff import diff_payloads, to_avro_changes
from schemas.codec import SINGLE_OBJECT_HEADER_SIZE, Codec, default_codec

NAME = "changefeed.ApiAction"


def realistic_action() -> dict[str, Any]:
    """An update action as producers/ publish it: ten-field JSON payload, full actor."""
    payload = {
        "id": "123456",
        "title": "Client visit, Lyon",
        "status": "submitted",
        "amount_cents": 48_250,
        "currency": "EUR",
        "submitted_by": "u-4821",
        "approver_id": None,
        "line_items": 7,
        "tags": ["travel", "q3"],
        "updated_at": "2024-09-18T14:03:11.402113Z",
    }
    return {
        "event_id": "0b4c2b8e-5a0e-4d7f-9d1e-3f1c2a7b9e10",
        "request_id": "req-7d3f9a2c41e84b0f",
        "tenant_id": "tenant-0042",
        "action": "update",
        "event_type": "expense_report:updated",
        "subject_type": "expense_report",
        "subject_id": "123456",
        "subject_ref": {"key": "workspace", "id": "77"},
        "version": 12,
        "occurred_at": datetime(2024, 9, 18, 14, 3, 11, 402113, tzinfo=UTC),
        "actor": {
            "user_id": "u-4821",
            "application_id": "app-9",
            "api_version": "v2",
            "api_key_fingerprint": "sha256:3f2a9c1e",
        },
        "criticality": 3,
        "code": 1204,
        "internal": True,
        "payload_content_type": "application/json",
        "payload": json.dumps(payload, separators=(",", ":")),
        "source": "https://api.example.com/v2/expense_reports",
    }


def realistic_change_event() -> dict[str, Any]:
    """The ChangeEvent of :func:`realistic_action`: a draft submitted, with its amount fixed."""
    action = realistic_action()
    current = json.loads(action["payload"])
    previous = {
        **current,
        "status": "draft",
        "amount_cents": 47_100,
        "line_items": 6,
        "tags": ["travel"],
        "updated_at": "2024-09-18T09:41:52.118020Z",
    }
    changes = to_avro_changes(diff_payloads(previous, current))
    shared = ("event_id", "request_id", "tenant_id", "action", "event_type", "subject_type")
    shared += ("subject_id", "subject_ref", "version", "actor", "criticality", "code")
    shared += ("internal", "payload_content_type", "source")
    return {
        "change_id": "6f1d1f5e-2c1b-5d39-9d0e-0f4a6d1c2b3a",
        **{key: action[key] for key in shared},
        "previous_payload": json.dumps(previous, separators=(",", ":")),
        "current_payload": action["payload"],
        "payload_changes": changes.payload_changes,
        "field_changes": changes.field_changes,
        "late": False,
        "subject_sequence": 11,
        "subject_changed_at": action["occurred_at"],
        "created_at": 1_726_668_191_455_032,  # processors write int micros
    }


def realistic_dead_letter() -> dict[str, Any]:
    """An undecodable action parked by a processor, with the original bytes and headers."""
    return {
        "reason_code": "undecodable",
        "reason": "changefeed.ApiAction body is undecodable: EOFError()",
        "topic": "changefeed.actions",
        "partition": 5,
        "offset": 18_734_201,
        "timestamp_ms": 1_726_668_191_402,
        "key": b"tenant-0042/expense_report/123456",
        "value": b"\xc3\x01" + bytes(range(200)),
        "headers": {"ce_id": b"0b4c2b8e-5a0e-4d7f", "ce_type": b"expense_report:updated"},
        "failed_at": datetime(2024, 9, 18, 14, 3, 11, 455032, tzinfo=UTC),
    }


RECORD_TYPES: dict[str, Callable[[], dict[str, Any]]] = {
    "changefeed.ChangeEvent": realistic_change_event,
    "changefeed.ApiAction": realistic_action,
    "changefeed.DeadLetter": realistic_dead_letter,
}


def best_rates(
    candidates: dict[str, Callable[[], object]], number: int, rounds: int
) -> dict[str, float]:
    """Operations per second of each candidate's best round.

    Rounds of the candidates are interleaved, so a burst of load from other processes hits
    all of them alike instead of skewing the ratio.
    """
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(rounds):
        for label, operation in candidates.items():
            best[label] = min(best[label], timeit.timeit(operation, number=number))
    return {label: number / seconds for label, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--number", type=int, default=20_000, help="operations per round")
    parser.add_argument("-r", "--rounds", type=int, default=7, help="rounds; the best counts")
    args = parser.parse_args()

    codec = default_codec()
    plain = Codec(use_native=False)
    schema = codec.schema(NAME)
    record = realistic_action()
    record_micros = {
        **record,
        "occurred_at": codec.decode(codec.encode(NAME, record), NAME, timestamps="micros")[
            "occurred_at"
        ],
    }
    framed = codec.encode(NAME, record)
    body = framed[SINGLE_OBJECT_HEADER_SIZE:]
    json_record = {**record, "occurred_at": record["occurred_at"].isoformat()}
    json_text = json.dumps(json_record)

    def bare_encode() -> bytes:
        buffer = BytesIO()
        schemaless_writer(buffer, schema, record)
        return buffer.getvalue()

    def bare_decode() -> object:
        return schemaless_reader(BytesIO(body), schema, None)

    encode_rates = best_rates(
        {
            "codec.encode": lambda: codec.encode(NAME, record),
            "codec.encode, int micros": lambda: codec.encode(NAME, record_micros),
            "no native, int micros": lambda: plain.encode(NAME, record_micros),
            "fastavro schemaless_writer": bare_encode,
            "json.dumps": lambda: json.dumps(json_record),
        },
        args.number,
        args.rounds,
    )
    decode_rates = best_rates(
        {
            "codec.decode": lambda: codec.decode(framed, NAME),
            "codec.decode, int micros": lambda: codec.decode(framed, NAME, timestamps="micros"),
            "no native": lambda: plain.decode(framed, NAME),
            "fastavro schemaless_reader": bare_decode,
            "json.loads": lambda: json.loads(json_text),
        },
        args.number,
        args.rounds,
    )

    by_type = by_record_type(codec, plain, args.number, args.rounds)

    print(f"{NAME}: {len(framed)} bytes framed Avro, {len(json_text)} bytes JSON")
    print(f"best of {args.rounds} rounds x {args.number:,} operations")
    for title, rates, baseline in (
        ("encode", encode_rates, "fastavro schemaless_writer"),
        ("decode", decode_rates, "fastavro schemaless_reader"),
    ):
        print(f"\n{title}")
        for label, value in rates.items():
            ratio = value / rates[baseline]
            print(f"  {label:<28} {value:>10,.0f} records/s  {1e6 / value:6.2f} us  x{ratio:.2f}")

    for title, column in (("encode", 0), ("decode", 1)):
        print(f"\n{title}, us/record: codec, no native, bare fastavro")
        print(f"  {'record type':<24} {'bytes':>6} {'codec':>7} {'no native':>10} {'fastavro':>9}")
        for name, (size, figures) in by_type.items():
            mine, plain_us, bare = figures[column]
            print(f"  {name:<24} {size:>6} {mine:>7.2f} {plain_us:>10.2f} {bare:>9.2f}")


Figures = tuple[float, float, float]


def by_record_type(
    codec: Codec, plain: Codec, number: int, rounds: int
) -> dict[str, tuple[int, tuple[Figures, Figures]]]:
    """Per record type: framed size, then us/record of encode and of decode, each by the
    codec, by the codec without the native side, and by bare fastavro."""
    results = {}
    for name, make in RECORD_TYPES.items():
        schema = codec.schema(name)
        framed = codec.encode(name, make())
        # As the processors write it: timestamps as int micros.
        record = codec.decode(framed, name, timestamps="micros")
        body = framed[SINGLE_OBJECT_HEADER_SIZE:]

        def bare_encode(schema: Any = schema, record: dict[str, Any] = record) -> bytes:
            buffer = BytesIO()
            schemaless_writer(buffer, schema, record)
            return buffer.getvalue()

        def bare_decode(schema: Any = schema, body: bytes = body) -> object:
            return schemaless_reader(BytesIO(body), schema, None)

        assert codec.encode(name, record) == plain.encode(name, record) == framed, name
        assert bare_encode() == body, f"{name}: bytes differ"
        rates = best_rates(
            {
                "encode": lambda name=name, record=record: codec.encode(name, record),
                "encode plain": lambda name=name, record=record: plain.encode(name, record),
                "encode bare": bare_encode,
                "decode": lambda name=name, framed=framed: codec.decode(framed, name),
                "decode plain": lambda name=name, framed=framed: plain.decode(framed, name),
                "decode bare": bare_decode,
            },
            number,
            rounds,
        )
        us = {label: 1e6 / rate for label, rate in rates.items()}
        results[name] = (
            len(framed),
            (
                (us["encode"], us["encode plain"], us["encode bare"]),
                (us["decode"], us["decode plain"], us["decode bare"]),
            ),
        )
    return results


if __name__ == "__main__":
    main()
