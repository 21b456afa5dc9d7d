"""Failed jobs: one model for every kind of work that failed and waits for a person.

Seed 002 lists failed scheduled jobs by state (``queued``: a retry is pending; ``quit``: no
more retries), and lets them be resumed or deleted. Scheduled emissions are one kind
(``schedule``); webhook deliveries are another (``webhook``): both are served by one API,
``/v1/failed-jobs`` (filter ``kind``, ``state``), and resumed or deleted by ``job_id``,
whose prefix names the kind (:func:`kind_of`), so the API routes a request to the owner of
that kind without a lookup table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

KINDS = ("schedule", "webhook")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(micros: int) -> str:
    moment = _EPOCH + timedelta(microseconds=micros)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def kind_of(job_id: str) -> str | None:
    """The kind a job id names (``schedule:...`` -> ``schedule``), None if none known."""
    kind = job_id.partition(":")[0]
    return kind if kind in KINDS else None


class FailedJobState(StrEnum):
    QUEUED = "queued"
    """A retry is pending (at ``retry_at``)."""
    QUIT = "quit"
    """No more automatic retries; resume or delete it."""


@dataclass(frozen=True)
class FailedJob:
    """One failed job: ``job_id`` names it (``<kind>:...``), ``owner_id`` what it belongs
    to (a schedule, a webhook subscription), ``state`` whether a retry is pending
    (``queued``, at ``retry_at``) or not (``quit``), ``failure_count`` how often it failed."""

    job_id: str
    kind: str
    owner_id: str
    tenant_id: str
    state: str
    failure_count: int
    reason: str
    occurrence_us: int
    created_at_us: int
    updated_at_us: int
    retry_at_us: int | None = None

    def public(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "owner_id": self.owner_id,
            "failed_job_state": self.state,
            "failure_count": self.failure_count,
            "reason": self.reason,
            "occurrence_time": rfc3339(self.occurrence_us),
            "retry_at": None if self.retry_at_us is None else rfc3339(self.retry_at_us),
            "created_at": rfc3339(self.created_at_us),
            "updated_at": rfc3339(self.updated_at_us),
        }
