"""The demo API's business objects (after seed 003, Kantata): projects, expense reports, expenses.

Each tenant has its own in-memory objects (it is a demo: nothing survives a restart). Every
write increments the object's ``version`` and returns the :class:`Change` objects it made,
which the service turns into ApiActions. One operation may change several objects, as in
Kantata where approving an expense report updates the report and each of its expenses.

Rules, enforced here so the HTTP layer stays thin:
    * an expense report belongs to an existing project, an expense to an existing report;
      neither moves to another parent;
    * a report's ``status`` is draft, submitted or rejected through updates; only
      :meth:`TenantObjects.approve_report` makes it approved, and an approved report and its
      expenses are locked (409);
    * deleting a report deletes its expenses; a project with reports cannot be deleted (409).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from producers.demo_api.fields import (
    FieldInvalid,
    Parser,
    amount,
    boolean,
    choice,
    currency,
    identifier,
    non_negative_int,
    text,
)
from producers.errors import ProducerError

ChangeKind = Literal["create", "update", "delete"]
Clock = Callable[[], datetime]

# URL resource name -> subject type (the singular, as in Kantata's "expense_report:updated").
RESOURCES = {"projects": "project", "expense_reports": "expense_report", "expenses": "expense"}
PARENT_FIELD = {"expense_report": "project_id", "expense": "expense_report_id"}
PARENT_TYPE = {"expense_report": "project", "expense": "expense_report"}
EXPENSE_CATEGORIES = ("travel", "meals", "lodging", "supplies", "software", "other")


class DomainError(ProducerError):
    """A request the domain refuses; ``status`` is the HTTP status it maps to."""

    status = 400


class NotFound(DomainError):
    status = 404


class Invalid(DomainError):
    status = 422

    def __init__(self, message: str, *, field_name: str | None = None) -> None:
        super().__init__(f"{field_name}: {message}" if field_name else message)
        self.field_name = field_name


class Conflict(DomainError):
    status = 409


@dataclass(frozen=True)
class FieldSpec:
    parse: Parser
    required: bool = False
    default: Any = None
    mutable: bool = True


FIELDS: dict[str, dict[str, FieldSpec]] = {
    "project": {
        "name": FieldSpec(text(200), required=True),
        "client": FieldSpec(text(200, allow_empty=True), default=""),
        "status": FieldSpec(choice("active", "archived"), default="active"),
        "budget_cents": FieldSpec(non_negative_int, default=None),
        "currency": FieldSpec(currency, default="USD"),
    },
    "expense_report": {
        "project_id": FieldSpec(identifier, required=True, mutable=False),
        "title": FieldSpec(text(200), required=True),
        "status": FieldSpec(choice("draft", "submitted", "rejected"), default="draft"),
    },
    "expense": {
        "expense_report_id": FieldSpec(identifier, required=True, mutable=False),
        "amount": FieldSpec(amount, required=True),
        "currency": FieldSpec(currency, default="USD"),
        "category": FieldSpec(choice(*EXPENSE_CATEGORIES), default="other"),
        "notes": FieldSpec(text(2000, allow_empty=True), default=""),
        "receipt": FieldSpec(boolean, default=False),
    },
}


@dataclass
class StoredObject:
    subject_type: str
    id: str
    version: int
    fields: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    def snapshot(self) -> dict[str, Any]:
        """The object as the API shows it, and as the action's payload carries it."""
        return {
            "id": self.id,
            **self.fields,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    @property
    def parent(self) -> tuple[str, str] | None:
        """``(parent subject type, parent id)``, the action's ``subject_ref``."""
        parent_field = PARENT_FIELD.get(self.subject_type)
        if parent_field is None:
            return None
        return PARENT_TYPE[self.subject_type], self.fields[parent_field]


@dataclass(frozen=True)
class Change:
    """One object changed by an operation; ``payload`` is None for a deletion."""

    kind: ChangeKind
    subject_type: str
    subject_id: str
    version: int
    payload: dict[str, Any] | None
    parent: tuple[str, str] | None
    occurred_at: datetime


@dataclass
class TenantObjects:
    """The objects of one tenant and the operations on them."""

    clock: Clock
    objects: dict[str, dict[str, StoredObject]] = field(
        default_factory=lambda: {subject_type: {} for subject_type in FIELDS}
    )
    next_ids: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIELDS, 1))

    # -- reads ------------------------------------------------------------------------------
    def get(self, subject_type: str, object_id: str) -> StoredObject:
        found = self.objects[subject_type].get(object_id)
        if found is None:
            raise NotFound(f"{subject_type} {object_id} does not exist")
        return found

    def children(self, subject_type: str, parent_id: str) -> list[StoredObject]:
        """Objects of ``subject_type`` whose parent is ``parent_id``, oldest first."""
        parent_field = PARENT_FIELD[subject_type]
        return [
            o for o in self.objects[subject_type].values() if o.fields[parent_field] == parent_id
        ]

    # -- writes -----------------------------------------------------------------------------
    def create(self, subject_type: str, body: Mapping[str, Any]) -> list[Change]:
        values = _parse_body(subject_type, body, creating=True)
        self._check_parent(subject_type, values)
        now = self.clock()
        object_id = str(self.next_ids[subject_type])
        self.next_ids[subject_type] += 1
        stored = StoredObject(subject_type, object_id, 1, values, now, now)
        if subject_type == "expense":
            stored.fields["status"] = "pending"
        self.objects[subject_type][object_id] = stored
        return [_change("create", stored)]

    def update(self, subject_type: str, object_id: str, body: Mapping[str, Any]) -> list[Change]:
        stored = self.get(subject_type, object_id)
        self._check_unlocked(stored)
        values = _parse_body(subject_type, body, creating=False)
        if not values:
            raise Invalid("an update must change at least one field")
        stored.fields.update(values)
        return [self._touch(stored)]

    def delete(self, subject_type: str, object_id: str) -> list[Change]:
        stored = self.get(subject_type, object_id)
        self._check_unlocked(stored)
        changes: list[Change] = []
        if subject_type == "project" and self.children("expense_report", object_id):
            raise Conflict(f"project {object_id} still has expense reports")
        if subject_type == "expense_report":
            changes += [self._remove(e) for e in self.children("expense", object_id)]
        changes.append(self._remove(stored))
        return changes

    def approve_report(self, report_id: str, approved_by: str | None) -> list[Change]:
        """Approve a report: one change for it, then one for each of its expenses."""
        report = self.get("expense_report", report_id)
        if report.fields["status"] == "approved":
            raise Conflict(f"expense_report {report_id} is already approved")
        now = self.clock()
        report.fields.update(
            status="approved", approved_by=approved_by, approved_at=now.isoformat()
        )
        changes = [self._touch(report, now)]
        for expense in self.children("expense", report_id):
            expense.fields["status"] = "approved"
            changes.append(self._touch(expense, now))
        return changes

    # -- internals --------------------------------------------------------------------------
    def _touch(self, stored: StoredObject, now: datetime | None = None) -> Change:
        stored.version += 1
        stored.updated_at = now or self.clock()
        return _change("update", stored)

    def _remove(self, stored: StoredObject) -> Change:
        del self.objects[stored.subject_type][stored.id]
        stored.version += 1
        stored.updated_at = self.clock()
        return _change("delete", stored)

    def _check_parent(self, subject_type: str, values: Mapping[str, Any]) -> None:
        parent_field = PARENT_FIELD.get(subject_type)
        if parent_field is None:
            return
        parent_type = PARENT_TYPE[subject_type]
        parent = self.objects[parent_type].get(values[parent_field])
        if parent is None:
            raise Invalid(
                f"{parent_type} {values[parent_field]} does not exist", field_name=parent_field
            )
        self._check_unlocked(parent)

    def _check_unlocked(self, stored: StoredObject) -> None:
        report = stored
        if stored.subject_type == "expense":
            report = self.get("expense_report", stored.fields["expense_report_id"])
        if report.subject_type == "expense_report" and report.fields["status"] == "approved":
            raise Conflict(f"expense_report {report.id} is approved and locked")


def _parse_body(subject_type: str, body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise Invalid("the body must be a JSON object")
    specs = FIELDS[subject_type]
    unknown = sorted(set(body) - set(specs))
    if unknown:
        raise Invalid(f"unknown or read-only field(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if name not in body:
            if creating and spec.required:
                raise Invalid("is required", field_name=name)
            if creating:
                values[name] = spec.default
            continue
        if not creating and not spec.mutable:
            raise Invalid("cannot be changed", field_name=name)
        try:
            values[name] = spec.parse(body[name])
        except FieldInvalid as exc:
            raise Invalid(str(exc), field_name=name) from exc
    return values


def _change(kind: ChangeKind, stored: StoredObject) -> Change:
    return Change(
        kind=kind,
        subject_type=stored.subject_type,
        subject_id=stored.id,
        version=stored.version,
        payload=None if kind == "delete" else stored.snapshot(),
        parent=stored.parent,
        occurred_at=stored.updated_at,
    )
