"""diff_payloads / to_avro_changes: exact patches, consistent field changes, Avro-ready text.

The property tests check the contract against independent implementations: ``jsonpatch``
applies our patch, ``jsonpointer`` resolves our pointers, and :func:`json_equal` (RFC 6902
section 4.6 equality, written out here) judges the result. Plain ``==`` would not do: Python
says ``True == 1`` and so would accept a patch that turns a boolean into a number.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import jsonpatch
import jsonpointer
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.diff import (
    Diff,
    FieldChange,
    diff_payloads,
    escape_pointer_token,
    to_avro_changes,
)
from processors.errors import ProcessingError

_UNRESOLVED = object()


def json_equal(left: Any, right: Any) -> bool:
    """RFC 6902 4.6: numbers equal by value, booleans only to booleans, containers deeply."""
    left_is_number = type(left) in (int, float)
    right_is_number = type(right) in (int, float)
    if left_is_number or right_is_number:
        return left_is_number and right_is_number and left == right
    if type(left) is not type(right):
        return False
    if type(left) is dict:
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if type(left) is list:
        return len(left) == len(right) and all(map(json_equal, left, right))
    return bool(left == right)


def resolve(document: Any, pointer: str) -> Any:
    return jsonpointer.resolve_pointer(document, pointer, _UNRESOLVED)


def as_document(payload: Any) -> Any:
    """The documented reading of an absent payload: the empty object."""
    return {} if payload is None else payload


# --- strategies -------------------------------------------------------------------------

KEYS = st.one_of(
    st.sampled_from(["", "/", "~", "~0", "~1", "a/b", "a~b", "~/~", "*", "-", "0", "01", "é"]),
    st.text(max_size=4),
)
# Values Python's == confuses with one another but JSON does not (or, for 1/1.0, does).
LOOKALIKE_SCALARS = st.sampled_from([0, 1, 0.0, 1.0, -0.0, True, False, None, "", "1"])
SCALARS = st.one_of(
    LOOKALIKE_SCALARS,
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=25,
)
PAYLOADS = st.one_of(st.none(), st.dictionaries(KEYS, JSON_VALUES, max_size=6))


def _mutate(draw: st.DrawFn, value: Any) -> Any:
    """A realistic successor of ``value``: mostly the same, a few edits, fresh objects."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(JSON_VALUES)
    if type(value) is dict:
        return _mutate_object(draw, value)
    if type(value) is list:
        return _mutate_array(draw, value)
    if choice <= 2:
        return draw(LOOKALIKE_SCALARS)
    return value


def _mutate_object(draw: st.DrawFn, value: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in value.items():
        action = draw(st.sampled_from(["keep", "keep", "keep", "mutate", "drop"]))
        if action == "keep":
            result[key] = copy.deepcopy(item)
        elif action == "mutate":
            result[key] = _mutate(draw, item)
    for key in draw(st.lists(KEYS, max_size=2)):
        result.setdefault(key, draw(JSON_VALUES))
    if draw(st.booleans()):  # key order must not matter
        result = dict(reversed(list(result.items())))
    return result


def _mutate_array(draw: st.DrawFn, value: list[Any]) -> list[Any]:
    result = [
        _mutate(draw, item) if draw(st.integers(0, 3)) == 0 else copy.deepcopy(item)
        for item in value
    ]
    edit = draw(st.sampled_from(["none", "append", "truncate", "prepend"]))
    if edit == "append":
        result.extend(draw(st.lists(JSON_VALUES, min_size=1, max_size=3)))
    elif edit == "truncate":
        del result[draw(st.integers(0, len(result))) :]
    elif edit == "prepend":
        result.insert(0, draw(JSON_VALUES))
    return result


@st.composite
def payload_and_successor(draw: st.DrawFn) -> tuple[Any, Any]:
    previous = draw(st.dictionaries(KEYS, JSON_VALUES, max_size=8))
    return previous, _mutate_object(draw, previous)


# --- the contract, checked on any pair ----------------------------------------------------


def assert_diff_contract(previous: Any, current: Any) -> Diff:
    before = (copy.deepcopy(previous), copy.deepcopy(current))
    diff = diff_payloads(previous, current)
    assert (previous, current) == before, "diff_payloads must not modify its input"

    old_document, new_document = as_document(previous), as_document(current)
    patched = jsonpatch.apply_patch(old_document, diff.operations)
    assert json_equal(patched, new_document)
    assert diff.changed is (not json_equal(old_document, new_document))

    assert_fields_match_operations(diff, old_document, new_document)
    assert_avro_shapes_match(diff)
    return diff


def assert_fields_match_operations(diff: Diff, old_document: Any, new_document: Any) -> None:
    assert [op["path"] for op in diff.operations] == list(diff.fields)
    for operation, (pointer, change) in zip(diff.operations, diff.fields.items(), strict=True):
        assert change.op == operation["op"]
        assert ("value" in operation) is change.new_present
        if change.new_present:
            assert operation["value"] is change.new
        if change.old_present:
            assert json_equal(resolve(old_document, pointer), change.old)
        else:
            assert change.old is None
            assert resolve(old_document, pointer) is _UNRESOLVED
        if change.new_present:
            assert json_equal(resolve(new_document, pointer), change.new)
        else:
            assert change.new is None
            assert resolve(new_document, pointer) is _UNRESOLVED
        if change.op == "replace":
            both_objects = type(change.old) is dict and type(change.new) is dict
            both_arrays = type(change.old) is list and type(change.new) is list
            assert not (both_objects or both_arrays), "same-typed containers must be recursed"


def assert_avro_shapes_match(diff: Diff) -> None:
    avro = to_avro_changes(diff)
    assert len(avro.payload_changes) == len(diff.operations)
    for record, operation in zip(avro.payload_changes, diff.operations, strict=True):
        assert record["op"] == operation["op"]
        assert record["path"] == operation["path"]
        assert record["from"] is None
        assert_json_text(record["value"], operation.get("value"), "value" in operation)
    assert avro.field_changes.keys() == diff.fields.keys()
    for pointer, change in diff.fields.items():
        texts = avro.field_changes[pointer]
        assert_json_text(texts["old"], change.old, change.old_present)
        assert_json_text(texts["new"], change.new, change.new_present)


def assert_json_text(text: str | None, value: Any, present: bool) -> None:
    if not present:
        assert text is None
        return
    assert text is not None and text.isascii()
    assert json_equal(json.loads(text), value)
    assert type(json.loads(text)) is type(value)


# --- properties ---------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(PAYLOADS, PAYLOADS)
def test_any_two_payloads(previous: Any, current: Any) -> None:
    assert_diff_contract(previous, current)


@PROPERTY_SETTINGS
@given(JSON_VALUES, JSON_VALUES)
def test_any_two_json_values_at_the_root(previous: Any, current: Any) -> None:
    assert_diff_contract(previous, current)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload_and_successor())
def test_a_payload_and_its_edited_successor(pair: tuple[Any, Any]) -> None:
    previous, current = pair
    assert_diff_contract(previous, current)
    assert_diff_contract(current, previous)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PAYLOADS)
def test_a_payload_against_an_equal_copy_is_no_change(payload: Any) -> None:
    diff = diff_payloads(payload, copy.deepcopy(payload))
    assert diff == Diff([], {})
    assert not diff.changed


@given(st.text())
def test_pointer_tokens_round_trip_through_jsonpointer(key: str) -> None:
    token = escape_pointer_token(key)
    assert jsonpointer.JsonPointer("/" + token).parts == [key]


# --- examples -----------------------------------------------------------------------------


def test_a_nested_leaf_change_is_one_replace_at_its_pointer() -> None:
    previous = {"id": 7, "customer": {"name": "Ada", "address": {"city": "London", "zip": "N1"}}}
    current = {"id": 7, "customer": {"name": "Ada", "address": {"city": "Paris", "zip": "N1"}}}

    diff = diff_payloads(previous, current)

    assert diff.operations == [
        {"op": "replace", "path": "/customer/address/city", "value": "Paris"}
    ]
    assert diff.fields == {
        "/customer/address/city": FieldChange("London", "Paris", "replace"),
    }
    assert diff.changed


def test_array_append_adds_at_ascending_indices() -> None:
    diff = diff_payloads({"tags": ["a", "b"]}, {"tags": ["a", "b", "c", "d"]})
    assert diff.operations == [
        {"op": "add", "path": "/tags/2", "value": "c"},
        {"op": "add", "path": "/tags/3", "value": "d"},
    ]
    assert diff.fields["/tags/3"] == FieldChange(None, "d", "add")


def test_array_shrink_removes_from_the_end_backwards() -> None:
    previous = {"tags": ["a", "b", "c", "d"]}
    diff = diff_payloads(previous, {"tags": ["a", "b"]})
    assert diff.operations == [
        {"op": "remove", "path": "/tags/3"},
        {"op": "remove", "path": "/tags/2"},
    ]
    assert diff.fields == {
        "/tags/3": FieldChange("d", None, "remove"),
        "/tags/2": FieldChange("c", None, "remove"),
    }
    assert jsonpatch.apply_patch(previous, diff.operations) == {"tags": ["a", "b"]}


def test_array_elements_are_diffed_in_place() -> None:
    previous = {"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}]}
    current = {"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 3}]}
    diff = diff_payloads(previous, current)
    assert diff.operations == [{"op": "replace", "path": "/items/1/qty", "value": 3}]


def test_keys_with_slash_tilde_and_empty_name_are_escaped() -> None:
    diff = diff_payloads({"a/b": 1, "m~n": 1, "": 1, "~1": 1}, {"a/b": 2, "m~n": 2, "": 2, "~1": 2})
    assert sorted(op["path"] for op in diff.operations) == ["/", "/a~1b", "/m~0n", "/~01"]


@pytest.mark.parametrize(
    ("old", "new"),
    [(1, True), (0, False), (True, 1), (1.0, True), ([1], [True]), ({"x": 0}, {"x": False})],
)
def test_a_boolean_is_never_equal_to_a_number(old: Any, new: Any) -> None:
    assert old == new  # Python's view, which the diff must not share
    diff = diff_payloads({"flag": old}, {"flag": new})
    assert diff.changed
    patched = jsonpatch.apply_patch({"flag": old}, diff.operations)
    assert json_equal(patched, {"flag": new})


def test_an_integer_and_the_equal_float_are_the_same_json_number() -> None:
    assert not diff_payloads({"amount": 1, "list": [2]}, {"amount": 1.0, "list": [2.0]}).changed
    assert diff_payloads({"amount": 1}, {"amount": 1.5}).changed


def test_an_unchanged_nan_is_not_reported_as_a_change() -> None:
    assert not diff_payloads({"ratio": math.nan}, {"ratio": math.nan}).changed


def test_no_change_yields_an_empty_unchanged_diff() -> None:
    payload = {"id": 1, "tags": ["a"], "nested": {"n": None}}
    diff = diff_payloads(payload, copy.deepcopy(payload))
    assert diff.operations == []
    assert diff.fields == {}
    assert not diff.changed
    assert to_avro_changes(diff) == ([], {})


def test_create_adds_each_top_level_field_onto_the_empty_object() -> None:
    current = {"id": 1, "name": "Ada", "tags": []}
    diff = diff_payloads(None, current)
    assert diff.operations == [
        {"op": "add", "path": "/id", "value": 1},
        {"op": "add", "path": "/name", "value": "Ada"},
        {"op": "add", "path": "/tags", "value": []},
    ]
    assert all(not change.old_present for change in diff.fields.values())
    assert jsonpatch.apply_patch({}, diff.operations) == current


def test_delete_removes_each_top_level_field_leaving_the_empty_object() -> None:
    previous = {"id": 1, "name": "Ada"}
    diff = diff_payloads(previous, None)
    assert diff.operations == [{"op": "remove", "path": "/id"}, {"op": "remove", "path": "/name"}]
    assert diff.fields["/name"] == FieldChange("Ada", None, "remove")
    assert jsonpatch.apply_patch(previous, diff.operations) == {}


def test_nothing_to_nothing_is_no_change() -> None:
    assert diff_payloads(None, None) == Diff([], {})


def test_a_type_change_replaces_the_whole_subtree() -> None:
    diff = diff_payloads({"address": {"city": "London"}}, {"address": ["London"]})
    assert diff.operations == [{"op": "replace", "path": "/address", "value": ["London"]}]
    assert diff.fields == {"/address": FieldChange({"city": "London"}, ["London"], "replace")}


def test_a_non_object_root_is_replaced_at_the_root_pointer() -> None:
    diff = diff_payloads(None, [1, 2])
    assert diff.operations == [{"op": "replace", "path": "", "value": [1, 2]}]
    assert jsonpatch.apply_patch({}, diff.operations) == [1, 2]


def test_null_is_a_value_while_absence_is_none_in_the_avro_shapes() -> None:
    diff = diff_payloads({"note": None, "gone": None}, {"note": "hi", "new": None})
    avro = to_avro_changes(diff)
    assert avro.field_changes == {
        "/note": {"old": "null", "new": '"hi"'},
        "/new": {"old": None, "new": "null"},
        "/gone": {"old": "null", "new": None},
    }
    assert avro.payload_changes == [
        {"op": "replace", "path": "/note", "from": None, "value": '"hi"'},
        {"op": "add", "path": "/new", "from": None, "value": "null"},
        {"op": "remove", "path": "/gone", "from": None, "value": None},
    ]


def test_avro_text_is_compact_ascii_json() -> None:
    diff = diff_payloads({}, {"city": "Zürich", "geo": {"lat": 47.37, "tags": [True, 1]}})
    texts = {change["new"] for change in to_avro_changes(diff).field_changes.values()}
    assert texts == {'"Z\\u00fcrich"', '{"lat":47.37,"tags":[true,1]}'}


@pytest.mark.parametrize("bad_value", [math.nan, math.inf, {1, 2}])
def test_a_changed_value_that_is_not_json_cannot_be_serialised(bad_value: Any) -> None:
    diff = diff_payloads({"x": 1}, {"x": bad_value})
    with pytest.raises(ProcessingError, match="not JSON"):
        to_avro_changes(diff)
