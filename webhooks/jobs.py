"""Failed jobs (seed 002's model): deliveries that did not succeed at once.

A job is one change for one subscription. ``queued``: it waits for its next attempt
(``next_attempt_at``); ``quit``: its retries are exhausted (or an earlier change of the same
subject quit, or the receiver answered ``410 Gone``), and it waits for an admin to resume
or delete it. ``failure_count`` counts every failed attempt; ``retries`` the failures since
the job was created or last resumed, which is what the retry schedule follows.

Jobs also carry changes that were not attempted yet but cannot stay in memory: those behind
a failed change of the same subject (per-subject order), those arriving while the endpoint
is too slow to keep up, and those held while the subscription is paused. Their
``failure_count`` is 0 and ``last_error`` says why they wait.

A job holds the body it delivers (the events API's JSON of the change: secrets masked), so
it can be retried without the change. Functions here are pure: they take a job and an
outcome and return the next job.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from events_api.events import rfc3339_micros


class JobState(StrEnum):
    QUEUED = "queued"
    QUIT = "quit"


class Request(StrEnum):
    """What an admin asked of a job (written by the API, applied by the owning worker)."""

    RESUME = "resume"


@dataclass(frozen=True)
class FailedJob:
    job_id: str
    subscription_id: str
    tenant_id: str
    change_id: str
    subject: str
    partition: int
    offset: int
    state: JobState
    failure_count: int
    retries: int
    last_status: int | None
    last_error: str | None
    created_us: int
    updated_us: int
    next_attempt_us: int | None
    body: str
    request: Request | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.job_id,
            "subscription_id": self.subscription_id,
            "change_id": self.change_id,
            "state": self.state.value,
            "failure_count": self.failure_count,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "next_attempt_at": None
            if self.next_attempt_us is None or self.state is JobState.QUIT
            else rfc3339_micros(self.next_attempt_us),
            "created_at": rfc3339_micros(self.created_us),
            "updated_at": rfc3339_micros(self.updated_us),
        }

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> FailedJob:
        raw: dict[str, Any] = json.loads(data)
        raw["state"] = JobState(raw["state"])
        raw["request"] = None if raw.get("request") is None else Request(raw["request"])
        return cls(**raw)


def job_id_of(subscription_id: str, change_id: str) -> str:
    return f"{subscription_id}.{change_id}"


def waiting_job(
    *,
    subscription_id: str,
    tenant_id: str,
    change_id: str,
    subject: str,
    partition: int,
    offset: int,
    body: str,
    reason: str,
    now_us: int,
) -> FailedJob:
    """A change not attempted yet, kept as a queued job (``reason`` says why it waits)."""
    return FailedJob(
        job_id=job_id_of(subscription_id, change_id),
        subscription_id=subscription_id,
        tenant_id=tenant_id,
        change_id=change_id,
        subject=subject,
        partition=partition,
        offset=offset,
        state=JobState.QUEUED,
        failure_count=0,
        retries=0,
        last_status=None,
        last_error=reason,
        created_us=now_us,
        updated_us=now_us,
        next_attempt_us=now_us,
        body=body,
    )


def quit_job(job: FailedJob, reason: str | None, now_us: int) -> FailedJob:
    """``job`` given up: it waits for an admin (``reason`` replaces the last error if set)."""
    return replace(
        job,
        state=JobState.QUIT,
        last_error=reason if reason is not None else job.last_error,
        updated_us=now_us,
        next_attempt_us=None,
        request=None,
    )


def resumed_job(job: FailedJob, now_us: int) -> FailedJob:
    """``job`` to be attempted now, with a fresh retry schedule (an admin's resume)."""
    return replace(
        job,
        state=JobState.QUEUED,
        retries=0,
        updated_us=now_us,
        next_attempt_us=now_us,
        request=Request.RESUME,
    )


def shared_view(job: FailedJob) -> dict[str, Any]:
    """``job`` in the shape ``/v1/failed-jobs`` answers for every kind
    (:meth:`schemas.failed_jobs.FailedJob.public`): its id prefixed with ``webhook:``."""
    return {
        "job_id": f"webhook:{job.job_id}",
        "kind": "webhook",
        "owner_id": job.subscription_id,
        "failed_job_state": job.state.value,
        "failure_count": job.failure_count,
        "reason": job.last_error or "",
        "change_id": job.change_id,
        "retry_at": None
        if job.next_attempt_us is None or job.state is JobState.QUIT
        else rfc3339_micros(job.next_attempt_us),
        "created_at": rfc3339_micros(job.created_us),
        "updated_at": rfc3339_micros(job.updated_us),
    }
