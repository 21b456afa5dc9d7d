"""The demo domain without HTTP: whatever JSON arrives, the answer is a result or a 4xx."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers.actions import Caller
from producers.demo_api.domain import Conflict, DomainError, Invalid, NotFound
from producers.demo_api.service import DemoService
from producers.envelope import ActionEncoder
from schemas.codec import default_codec

CALLER = Caller(tenant_id="acme", api_version="v1", user_id="u", api_key_fingerprint="fp")
ENCODER = ActionEncoder("actions", default_codec(), "/x")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "name",
        "client",
        "status",
        "budget_cents",
        "currency",
        "project_id",
        "title",
        "expense_report_id",
        "amount",
        "category",
        "notes",
        "receipt",
        "code",
        "criticality",
        "subject_type",
        "subject_id",
        "data",
        "content_type",
        "other",
    ]
)
bodies = st.one_of(json_values, st.dictionaries(field_names, json_values, max_size=6))


def seeded_service() -> DemoService:
    service = DemoService("/x", clock=lambda: datetime(2024, 1, 1, tzinfo=UTC))
    service.create(CALLER, "r", "projects", {"name": "P"})
    service.create(CALLER, "r", "expense_reports", {"project_id": "1", "title": "T"})
    service.create(CALLER, "r", "expenses", {"expense_report_id": "1", "amount": 5})
    return service


@settings(max_examples=300, deadline=None)
@given(
    operation=st.sampled_from(["create", "update", "event"]),
    resource=st.sampled_from(["projects", "expense_reports", "expenses", "nope"]),
    body=bodies,
)
def test_any_body_gives_a_result_with_valid_actions_or_a_domain_error(
    operation: str, resource: str, body: Any
) -> None:
    service = seeded_service()
    try:
        if operation == "create":
            result = service.create(CALLER, "r", resource, body)
        elif operation == "update":
            result = service.update(CALLER, "r", resource, "1", body)
        else:
            result = service.generate_event(CALLER, "r", body)
    except DomainError as exc:
        assert 400 <= exc.status < 500
        return
    assert result.status in (200, 201)
    for action in result.actions:
        ENCODER.encode(action)  # every action the domain accepts fits the schema


def test_versions_count_every_write_of_an_object() -> None:
    service = seeded_service()
    service.update(CALLER, "r", "expenses", "1", {"notes": "a"})
    service.update(CALLER, "r", "expenses", "1", {"amount": 7})
    result = service.approve_report(CALLER, "r", "1")
    assert [a["version"] for a in result.actions] == [2, 4]  # report 1 -> 2, expense 3 -> 4
    assert service.get(CALLER, "expenses", "1").body["version"] == 4


def test_error_kinds_map_to_statuses() -> None:
    service = seeded_service()
    with pytest.raises(NotFound):
        service.get(CALLER, "expenses", "2")
    with pytest.raises(Invalid):
        service.create(CALLER, "r", "expenses", {"expense_report_id": "1", "amount": -1})
    with pytest.raises(Conflict):
        service.delete(CALLER, "r", "projects", "1")
    assert (NotFound.status, Invalid.status, Conflict.status) == (404, 422, 409)


def test_deleting_the_last_report_frees_its_project() -> None:
    service = seeded_service()
    service.delete(CALLER, "r", "expense_reports", "1")
    result = service.delete(CALLER, "r", "projects", "1")
    assert [a["event_type"] for a in result.actions] == ["project:deleted"]
    assert result.actions[0]["version"] == 2
