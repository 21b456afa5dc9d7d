"""The difference between two states of a subject, as a JSON Patch and per-field changes.

A processor calls :func:`diff_payloads` once per API action, so it is on the hot path: it
walks both documents once, builds a path string only where something changed (or where it
descends into a container), and never copies the input. The values in the result are the
very objects of the inputs: treat inputs and result as read-only.

Contract of the result:

* ``operations`` is an RFC 6902 patch (only ``add``, ``remove`` and ``replace``) that turns
  ``previous`` into ``current``; paths are RFC 6901 JSON Pointers (``~`` -> ``~0``,
  ``/`` -> ``~1``).
* ``fields`` has one :class:`FieldChange` per operation, under the same pointer: a changed
  leaf, or a whole subtree where a key or array element appeared or disappeared or a value
  changed type (object to array, number to string, ...).

Choices, each of which a consumer may rely on:

* **Absent documents.** ``None`` for ``previous`` (create) or ``current`` (delete) means
  "no document" and is diffed as the empty object ``{}``. A create is therefore one ``add``
  per top-level field and ``apply_patch({}, operations) == current``; a delete is one
  ``remove`` per top-level field and leaves ``{}``. (A JSON ``null`` document cannot be told
  apart from an absent one; subjects are objects.) Should the present side not be an object,
  the patch is a single ``replace`` of the root pointer ``""``.
* **Equality** follows RFC 6902 section 4.6: numbers are equal when numerically equal, so
  ``1`` and ``1.0`` are the same value and produce no operation, while booleans are never
  equal to numbers (``True`` -> ``1`` is a change, although Python says ``True == 1``).
  ``NaN`` is not JSON; should one arrive, it is treated as equal to itself so that an
  untouched field does not show up as changed on every update.
* **Arrays** are compared by position: elements of the common prefix are diffed
  recursively, extra elements of ``current`` are added at explicit ascending indices, and
  surplus elements of ``previous`` are removed from the highest index down, so each index
  is valid when its operation applies. An insertion at the front thus shows as a run of
  replaces plus one add: larger than a minimal edit script, but exact and cheap.

:func:`to_avro_changes` turns a :class:`Diff` into the ``payload_changes`` and
``field_changes`` fields of ``changefeed.ChangeEvent``, where each value is JSON text and an
absent side is ``None`` (so JSON ``null`` is the text ``"null"``).
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring_ascii as _encode_json_string
from typing import Any, Literal, NamedTuple, TypeAlias

from processors.errors import ProcessingError

JsonValue: TypeAlias = Any
"""A value as :func:`json.loads` returns it: dict, list, str, int, float, bool or None."""

PatchOpName: TypeAlias = Literal["add", "remove", "replace"]
PatchOperation: TypeAlias = dict[str, Any]
"""``{"op": ..., "path": ..., "value": ...}``; ``remove`` has no ``"value"``."""

AvroPatchOperation: TypeAlias = dict[str, str | None]
"""A ``changefeed.PatchOperation`` record: ``op``, ``path``, ``from`` and ``value`` (JSON text)."""

AvroFieldChange: TypeAlias = dict[str, str | None]
"""A ``changefeed.FieldChange`` record: ``old`` and ``new`` as JSON text, ``None`` if absent."""


class FieldChange(NamedTuple):
    """Old and new value at one pointer; ``op`` says which sides exist.

    ``op`` is the operation recorded at this pointer: ``"add"`` means there was no old value
    (``old`` is then ``None`` and meaningless), ``"remove"`` means there is no new value,
    ``"replace"`` means both exist. This keeps an absent side distinct from a JSON ``null``
    without a sentinel object leaking into callers.
    """

    old: JsonValue
    new: JsonValue
    op: PatchOpName

    @property
    def old_present(self) -> bool:
        return self.op != "add"

    @property
    def new_present(self) -> bool:
        return self.op != "remove"


class Diff(NamedTuple):
    """The changes between two documents; see the module docstring for the contract."""

    operations: list[PatchOperation]
    fields: dict[str, FieldChange]

    @property
    def changed(self) -> bool:
        """False when the documents are equal, so the caller can skip a no-op update."""
        return bool(self.operations)


class AvroChanges(NamedTuple):
    """The two diff-bearing fields of a ``changefeed.ChangeEvent``, ready for fastavro."""

    payload_changes: list[AvroPatchOperation]
    field_changes: dict[str, AvroFieldChange]


class _Missing:
    """Marks a key absent from an object inside the walk; never returned to callers."""


_MISSING = _Missing()
_NUMBER_TYPES = frozenset((int, float))
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def diff_payloads(previous: JsonValue, current: JsonValue) -> Diff:
    """Diff two parsed JSON documents; ``None`` on either side means "no document"."""
    operations: list[PatchOperation] = []
    fields: dict[str, FieldChange] = {}
    _diff_value(
        {} if previous is None else previous,
        {} if current is None else current,
        "",
        operations,
        fields,
    )
    return Diff(operations, fields)


def escape_pointer_token(key: str) -> str:
    """One reference token of an RFC 6901 pointer: ``~`` -> ``~0``, then ``/`` -> ``~1``."""
    if "~" in key or "/" in key:
        return key.replace("~", "~0").replace("/", "~1")
    return key


def to_avro_changes(diff: Diff) -> AvroChanges:
    """Serialise a :class:`Diff` into the shapes of ``changefeed.ChangeEvent``.

    Values become compact JSON text (non-ASCII escaped, so any string the parser accepted
    encodes as UTF-8, lone surrogates included). Raises :class:`ProcessingError` for a
    value that is not JSON, such as ``NaN``, an infinity or a set.
    """
    payload_changes: list[AvroPatchOperation] = [
        {
            "op": operation["op"],
            "path": operation["path"],
            "from": None,
            "value": _json_text(operation["value"]) if "value" in operation else None,
        }
        for operation in diff.operations
    ]
    field_changes: dict[str, AvroFieldChange] = {
        pointer: {
            "old": _json_text(change.old) if change.op != "add" else None,
            "new": _json_text(change.new) if change.op != "remove" else None,
        }
        for pointer, change in diff.fields.items()
    }
    return AvroChanges(payload_changes, field_changes)


def _json_text(value: JsonValue) -> str:
    """``value`` as compact JSON text, scalars without the encoder's per-call set-up.

    The scalar branches produce exactly what :mod:`json` does (it uses the same ``repr``
    functions); changed values are mostly scalars, so this halves the conversion's cost.
    """
    value_type = type(value)
    try:
        if value_type is str:
            return _encode_json_string(value)
        if value_type is int:
            return int.__repr__(value)
        if value_type is float and math.isfinite(value):
            return float.__repr__(value)
        if value is None:
            return "null"
        if value_type is bool:
            return "true" if value else "false"
        return _JSON_ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise ProcessingError(f"changed value is not JSON: {exc}") from exc


def _is_same_scalar(old: JsonValue, new: JsonValue) -> bool:
    """Whether two non-container values are equal in the sense of RFC 6902 section 4.6."""
    old_type = type(old)
    new_type = type(new)
    if old_type is new_type:
        # ``old != old`` holds only for NaN, which is kept equal to itself (module docstring).
        return bool(old == new) or (old_type is float and old != old and new != new)
    return old_type in _NUMBER_TYPES and new_type in _NUMBER_TYPES and bool(old == new)


def _diff_value(
    old: JsonValue,
    new: JsonValue,
    path: str,
    operations: list[PatchOperation],
    fields: dict[str, FieldChange],
) -> None:
    value_type = type(old)
    if value_type is type(new):
        if value_type is dict:
            _diff_object(old, new, path, operations, fields)
            return
        if value_type is list:
            _diff_array(old, new, path, operations, fields)
            return
    if not _is_same_scalar(old, new):
        operations.append({"op": "replace", "path": path, "value": new})
        fields[path] = FieldChange(old, new, "replace")


def _diff_object(
    old: dict[str, JsonValue],
    new: dict[str, JsonValue],
    path: str,
    operations: list[PatchOperation],
    fields: dict[str, FieldChange],
) -> None:
    shared_keys = 0
    for key, new_value in new.items():
        old_value = old.get(key, _MISSING)
        if old_value is _MISSING:
            child_path = f"{path}/{escape_pointer_token(key)}"
            operations.append({"op": "add", "path": child_path, "value": new_value})
            fields[child_path] = FieldChange(None, new_value, "add")
            continue
        shared_keys += 1
        value_type = type(old_value)
        # Inline fast path for the common case, an unchanged scalar of the same type.
        if (
            value_type is type(new_value)
            and value_type is not dict
            and value_type is not list
            and old_value == new_value
        ):
            continue
        _diff_value(old_value, new_value, f"{path}/{escape_pointer_token(key)}", operations, fields)
    if shared_keys == len(old):
        return
    for key, old_value in old.items():
        if key not in new:
            child_path = f"{path}/{escape_pointer_token(key)}"
            operations.append({"op": "remove", "path": child_path})
            fields[child_path] = FieldChange(old_value, None, "remove")


def _diff_array(
    old: list[JsonValue],
    new: list[JsonValue],
    path: str,
    operations: list[PatchOperation],
    fields: dict[str, FieldChange],
) -> None:
    old_length = len(old)
    new_length = len(new)
    for index in range(min(old_length, new_length)):
        old_item = old[index]
        new_item = new[index]
        item_type = type(old_item)
        if (
            item_type is type(new_item)
            and item_type is not dict
            and item_type is not list
            and old_item == new_item
        ):
            continue
        _diff_value(old_item, new_item, f"{path}/{index}", operations, fields)
    for index in range(old_length, new_length):
        child_path = f"{path}/{index}"
        operations.append({"op": "add", "path": child_path, "value": new[index]})
        fields[child_path] = FieldChange(None, new[index], "add")
    for index in range(old_length - 1, new_length - 1, -1):
        child_path = f"{path}/{index}"
        operations.append({"op": "remove", "path": child_path})
        fields[child_path] = FieldChange(old[index], None, "remove")
