"""Throughput of :func:`processors.diff.diff_payloads` against ``jsonpatch.make_patch``.

Run from the repository root with ``.venv/bin/python bench/bench_diff.py``. Both diffs run
in the same process on the same documents, so the ratio holds across machines even when the
absolute figures do not. Each figure is the best of three timed rounds of a fixed number of
diffs (best, because slower rounds measure interference, not the code).

Cases:

* ``flat``: a 10-field object with 2 fields changed, the typical update.
* ``nested``: an order with ~30 leaves in nested objects and arrays, a few changes
  (a quantity, a total, an appended tag).
* ``nested+avro``: the same, including the conversion of each change to the Avro-ready JSON
  text of ``changefeed.ChangeEvent`` (for ``jsonpatch``: serialising each operation's value
  and looking up and serialising the old value at its path).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

import jsonpatch
import jsonpointer

from processors.diff import diff_payloads, to_avro_changes

ROUNDS = 3
BASELINE_ITERATIONS = 3_000
OURS_ITERATIONS = 30_000
_ABSENT = object()


def flat_pair() -> tuple[dict[str, Any], dict[str, Any]]:
    previous = {
        "id": "cus_8f14e45f",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "status": "active",
        "balance": 1250.75,
        "orders": 17,
        "verified": True,
        "created_at": "2024-03-01T09:00:00Z",
        "updated_at": "2024-05-02T10:11:12Z",
        "note": None,
    }
    current = dict(previous, status="suspended", updated_at="2024-05-03T08:00:00Z")
    return previous, current


def nested_pair() -> tuple[dict[str, Any], dict[str, Any]]:
    previous: dict[str, Any] = {
        "id": "ord_1",
        "status": "open",
        "customer": {
            "id": "cus_1",
            "name": "Ada Lovelace",
            "address": {"street": "1 Main St", "city": "London", "zip": "N1", "country": "GB"},
        },
        "line_items": [
            {"sku": f"SKU-{n}", "quantity": n, "price": 9.5 * n, "gift": False} for n in range(1, 5)
        ],
        "tags": ["priority", "b2b"],
        "totals": {"subtotal": 95.0, "tax": 19.0, "total": 114.0},
        "flags": {"express": False, "fragile": True},
    }
    current = copy.deepcopy(previous)
    current["line_items"][2]["quantity"] = 5
    current["totals"]["total"] = 123.5
    current["tags"].append("reviewed")
    return previous, current


def baseline_patch(previous: Any, current: Any) -> Any:
    return jsonpatch.make_patch(previous, current).patch


def baseline_patch_as_avro(previous: Any, current: Any) -> Any:
    """The same shapes from ``jsonpatch``: value text per operation, old value looked up."""
    payload_changes = []
    field_changes = {}
    for operation in jsonpatch.make_patch(previous, current).patch:
        path = operation["path"]
        value = json.dumps(operation["value"]) if "value" in operation else None
        payload_changes.append({"op": operation["op"], "path": path, "from": None, "value": value})
        old = jsonpointer.resolve_pointer(previous, path, _ABSENT)
        field_changes[path] = {"old": None if old is _ABSENT else json.dumps(old), "new": value}
    return payload_changes, field_changes


def ours_diff(previous: Any, current: Any) -> Any:
    return diff_payloads(previous, current)


def ours_diff_as_avro(previous: Any, current: Any) -> Any:
    return to_avro_changes(diff_payloads(previous, current))


def diffs_per_second(
    function: Callable[[Any, Any], Any], previous: Any, current: Any, iterations: int
) -> float:
    """Best of :data:`ROUNDS` rounds of ``iterations`` calls, as calls per second."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(iterations):
            function(previous, current)
        best = min(best, time.perf_counter() - started)
    return iterations / best


def main() -> None:
    flat = flat_pair()
    nested = nested_pair()
    cases = [
        ("flat (10 fields, 2 changed)", flat, baseline_patch, ours_diff),
        ("nested (~30 leaves, 3 changes)", nested, baseline_patch, ours_diff),
        ("nested + Avro-ready shapes", nested, baseline_patch_as_avro, ours_diff_as_avro),
    ]
    print(f"{'case':<32}{'jsonpatch/s':>14}{'ours/s':>14}{'ratio':>9}")
    for name, (previous, current), baseline, ours in cases:
        baseline_rate = diffs_per_second(baseline, previous, current, BASELINE_ITERATIONS)
        ours_rate = diffs_per_second(ours, previous, current, OURS_ITERATIONS)
        print(
            f"{name:<32}{baseline_rate:>14,.0f}{ours_rate:>14,.0f}"
            f"{ours_rate / baseline_rate:>8.1f}x"
        )


if __name__ == "__main__":
    main()
