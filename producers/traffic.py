"""What realistic traffic on the demo API looks like: tenants, callers, and the next request.

:class:`TrafficPlanner` keeps a view of each tenant's objects (what exists, which reports are
approved and therefore locked) and draws the next request from a mix that is mostly updates
of existing objects, with creates, deletes, approvals (one request, many events) and
generated custom events. It knows nothing of HTTP or Kafka: the load generator executes a
:class:`PlannedRequest` either over HTTP or against the in-process service, then reports
created ids back with :meth:`TrafficPlanner.created`.

Deletes and approvals update the view when planned (so nothing is planned on an object about
to disappear or lock), creates when their id is known.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, TypeVar

from producers.demo_api.domain import EXPENSE_CATEGORIES

Operation = Literal["create", "update", "delete", "approve", "event"]
T = TypeVar("T")

TENANT_NAMES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka")
CLIENTS = ("Northwind", "Contoso", "Fabrikam", "Tailspin", "Litware", "Adventure Works")
PROJECT_WORDS = ("Migration", "Rollout", "Audit", "Redesign", "Onboarding", "Integration")
CURRENCIES = ("USD", "EUR", "GBP")
NOTES = ("client dinner", "taxi to airport", "hotel, 2 nights", "conference pass", "team lunch")
CUSTOM_CODES = (10_001, 10_002, 10_500, 20_000)
# Soft cap of open expenses per tenant: above it, creates give way to deletes and approvals.
OPEN_EXPENSES_CAP = 300


@dataclass(frozen=True)
class TenantProfile:
    """A tenant and the people, applications and API keys that call on its behalf."""

    tenant_id: str
    users: tuple[str, ...]
    applications: tuple[str, ...]
    api_keys: tuple[str, ...]


@dataclass(frozen=True)
class PlannedRequest:
    """One request to make. ``late``: deliver its events after the next request's."""

    tenant: TenantProfile
    user_id: str
    application_id: str
    api_key: str
    operation: Operation
    resource: str | None
    object_id: str | None
    body: dict[str, Any] | None
    duplicate: bool = False
    late: bool = False


class Pool(Generic[T]):
    """A set with O(1) add, remove and uniform random choice (swap-remove on a list)."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._index: dict[T, int] = {}

    def add(self, item: T) -> None:
        if item not in self._index:
            self._index[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: T) -> None:
        position = self._index.pop(item, None)
        if position is None:
            return
        last = self._items.pop()
        if position < len(self._items):
            self._items[position] = last
            self._index[last] = position

    def choice(self, rng: random.Random) -> T:
        return self._items[rng.randrange(len(self._items))]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: object) -> bool:
        return item in self._index


@dataclass
class TenantView:
    """What the planner believes one tenant has."""

    profile: TenantProfile
    projects: Pool[str] = field(default_factory=Pool)
    open_reports: Pool[str] = field(default_factory=Pool)  # not approved: still editable
    open_expenses: Pool[str] = field(default_factory=Pool)
    report_expenses: dict[str, set[str]] = field(default_factory=dict)
    expense_report: dict[str, str] = field(default_factory=dict)


def tenant_profiles(count: int, rng: random.Random) -> list[TenantProfile]:
    profiles = []
    for n in range(count):
        name = TENANT_NAMES[n] if n < len(TENANT_NAMES) else f"tenant-{n + 1}"
        profiles.append(
            TenantProfile(
                tenant_id=name,
                users=tuple(f"{name}-user-{k}" for k in range(1, 4)),
                applications=("web", "mobile", f"{name}-integration"),
                api_keys=tuple(f"sk_{name}_{rng.getrandbits(96):024x}" for _ in range(2)),
            )
        )
    return profiles


class TrafficPlanner:
    """Draws requests; ``duplicate_rate``/``out_of_order_rate`` mark requests for the executor."""

    def __init__(
        self,
        rng: random.Random,
        tenants: int,
        *,
        duplicate_rate: float = 0.0,
        out_of_order_rate: float = 0.0,
    ) -> None:
        self._rng = rng
        self._duplicate_rate = duplicate_rate
        self._out_of_order_rate = out_of_order_rate
        self.views = [TenantView(profile) for profile in tenant_profiles(tenants, rng)]
        # Tenants are not equally busy: weights 1, 1/2, 1/3, ... (a Zipf-like spread).
        self._tenant_weights = [1 / (n + 1) for n in range(tenants)]

    def next_requests(self) -> list[PlannedRequest]:
        """The next request, or a pair of updates of one subject whose first is ``late``."""
        view = self._rng.choices(self.views, self._tenant_weights)[0]
        if self._rng.random() < self._out_of_order_rate:
            pair = self._late_pair(view)
            if pair:
                return pair
        return [self._one(view)]

    def created(self, request: PlannedRequest, object_id: str) -> None:
        """Record the id the API gave to the object ``request`` created."""
        view = self._view(request.tenant)
        body = request.body or {}
        if request.resource == "projects":
            view.projects.add(object_id)
        elif request.resource == "expense_reports":
            view.open_reports.add(object_id)
            view.report_expenses[object_id] = set()
        elif request.resource == "expenses":
            report_id = str(body["expense_report_id"])
            if report_id in view.open_reports:
                view.open_expenses.add(object_id)
                view.expense_report[object_id] = report_id
                view.report_expenses[report_id].add(object_id)

    # -- drawing ----------------------------------------------------------------------------
    def _one(self, view: TenantView) -> PlannedRequest:
        choices = self._possible(view)
        draw: Callable[[TenantView], PlannedRequest] = self._rng.choices(
            [c for c, _ in choices], [w for _, w in choices]
        )[0]
        return draw(view)

    def _possible(
        self, view: TenantView
    ) -> list[tuple[Callable[[TenantView], PlannedRequest], float]]:
        crowded = len(view.open_expenses) >= OPEN_EXPENSES_CAP
        options: list[tuple[Callable[[TenantView], PlannedRequest], float]] = [
            (self._create_project, 2 if len(view.projects) else 100)
        ]
        if len(view.projects):
            options += [(self._create_report, 1 if crowded else 6), (self._update_project, 4)]
        if len(view.open_reports):
            options += [
                (self._create_expense, 2 if crowded else 22),
                (self._update_report, 8),
                (self._approve, 12 if crowded else 4),
                (self._delete_report, 2),
                (self._custom_event, 3),
            ]
        if len(view.open_expenses):
            options += [(self._update_expense, 40), (self._delete_expense, 12 if crowded else 5)]
        return options

    def _late_pair(self, view: TenantView) -> list[PlannedRequest]:
        if len(view.open_expenses):
            expense_id = view.open_expenses.choice(self._rng)
            first = self._update_expense(view, expense_id)
            second = self._update_expense(view, expense_id)
        elif len(view.open_reports):
            report_id = view.open_reports.choice(self._rng)
            first = self._update_report(view, report_id)
            second = self._update_report(view, report_id)
        else:
            return []
        return [replace(first, late=True, duplicate=False), second]

    def _request(
        self,
        view: TenantView,
        operation: Operation,
        resource: str | None,
        object_id: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> PlannedRequest:
        rng, profile = self._rng, view.profile
        return PlannedRequest(
            tenant=profile,
            user_id=rng.choice(profile.users),
            application_id=rng.choice(profile.applications),
            api_key=rng.choice(profile.api_keys),
            operation=operation,
            resource=resource,
            object_id=object_id,
            body=body,
            duplicate=rng.random() < self._duplicate_rate,
        )

    # -- one function per kind of request ---------------------------------------------------
    def _create_project(self, view: TenantView) -> PlannedRequest:
        rng = self._rng
        body = {
            "name": f"{rng.choice(CLIENTS)} {rng.choice(PROJECT_WORDS)}",
            "client": rng.choice(CLIENTS),
            "budget_cents": rng.randrange(100_000, 50_000_000, 100),
            "currency": rng.choice(CURRENCIES),
        }
        return self._request(view, "create", "projects", body=body)

    def _update_project(self, view: TenantView) -> PlannedRequest:
        rng = self._rng
        body: dict[str, Any] = rng.choice(
            [
                {"budget_cents": rng.randrange(100_000, 50_000_000, 100)},
                {"status": rng.choice(["active", "archived"])},
                {"client": rng.choice(CLIENTS)},
            ]
        )
        return self._request(view, "update", "projects", view.projects.choice(rng), body)

    def _create_report(self, view: TenantView) -> PlannedRequest:
        rng = self._rng
        month = rng.choice(["January", "February", "March", "April", "May", "June"])
        body = {"project_id": view.projects.choice(rng), "title": f"{month} expenses"}
        return self._request(view, "create", "expense_reports", body=body)

    def _update_report(self, view: TenantView, report_id: str | None = None) -> PlannedRequest:
        rng = self._rng
        report_id = report_id or view.open_reports.choice(rng)
        body = rng.choice(
            [{"status": "submitted"}, {"status": "draft"}, {"title": f"Trip {rng.randint(1, 99)}"}]
        )
        return self._request(view, "update", "expense_reports", report_id, body)

    def _approve(self, view: TenantView) -> PlannedRequest:
        report_id = view.open_reports.choice(self._rng)
        view.open_reports.discard(report_id)
        # Sorted: the order of discards shapes open_expenses, and a set of strings iterates
        # in an order that changes from process to process (hash randomisation).
        for expense_id in sorted(view.report_expenses.get(report_id, ())):
            view.open_expenses.discard(expense_id)
        return self._request(view, "approve", "expense_reports", report_id)

    def _delete_report(self, view: TenantView) -> PlannedRequest:
        report_id = view.open_reports.choice(self._rng)
        view.open_reports.discard(report_id)
        for expense_id in sorted(view.report_expenses.pop(report_id, set())):
            view.open_expenses.discard(expense_id)
            view.expense_report.pop(expense_id, None)
        return self._request(view, "delete", "expense_reports", report_id)

    def _create_expense(self, view: TenantView) -> PlannedRequest:
        rng = self._rng
        body = {
            "expense_report_id": view.open_reports.choice(rng),
            "amount": round(rng.uniform(4, 900), 2),
            "currency": rng.choice(CURRENCIES),
            "category": rng.choice(EXPENSE_CATEGORIES),
            "notes": rng.choice(NOTES),
            "receipt": rng.random() < 0.6,
        }
        return self._request(view, "create", "expenses", body=body)

    def _update_expense(self, view: TenantView, expense_id: str | None = None) -> PlannedRequest:
        rng = self._rng
        expense_id = expense_id or view.open_expenses.choice(rng)
        body: dict[str, Any] = rng.choice(
            [
                {"amount": round(rng.uniform(4, 900), 2)},
                {"notes": rng.choice(NOTES)},
                {"receipt": True},
                {"category": rng.choice(EXPENSE_CATEGORIES)},
            ]
        )
        return self._request(view, "update", "expenses", expense_id, body)

    def _delete_expense(self, view: TenantView) -> PlannedRequest:
        expense_id = view.open_expenses.choice(self._rng)
        view.open_expenses.discard(expense_id)
        report_id = view.expense_report.pop(expense_id, None)
        if report_id is not None:
            view.report_expenses.get(report_id, set()).discard(expense_id)
        return self._request(view, "delete", "expenses", expense_id)

    def _custom_event(self, view: TenantView) -> PlannedRequest:
        rng = self._rng
        body = {
            "code": rng.choice(CUSTOM_CODES),
            "criticality": rng.randint(0, 5),
            "subject_type": "expense_report",
            "subject_id": view.open_reports.choice(rng),
            "data": {"message": "policy check", "score": rng.randint(0, 100)},
        }
        return self._request(view, "event", None, body=body)

    def _view(self, profile: TenantProfile) -> TenantView:
        return next(v for v in self.views if v.profile.tenant_id == profile.tenant_id)
