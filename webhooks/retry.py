"""The retry schedule and what an attempt's outcome means, as pure functions.

An attempt succeeds on any 2xx answer. ``410 Gone`` means the receiver wants no more: the
job quits and the subscription is paused (``paused_reason`` says so). Anything else (other
statuses, redirects, which are never followed, timeouts, refused or failed connections,
addresses the guard refuses) is a failure: the job is queued for its next retry after the
delay the schedule gives for its retry number, times a random factor in
``[1 - JITTER, 1 + JITTER]`` so that receivers coming back are not hit by every worker at
the same instant; past the last delay, the job quits.

Default schedule (``CHANGEFEED_WEBHOOK_RETRY_SCHEDULE``): 5 s, 30 s, 2 m, 10 m, 30 m, 1 h,
3 h, 6 h, 12 h, 24 h: eleven attempts over about 47 hours, past a day and within the 7-day
retention.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from enum import StrEnum

from webhooks.jobs import FailedJob, JobState, quit_job

JITTER = 0.2
MAX_ERROR = 300


class Outcome(StrEnum):
    DELIVERED = "delivered"
    GONE = "gone"
    FAILED = "failed"


def classify(status: int | None) -> Outcome:
    if status is not None and 200 <= status < 300:
        return Outcome.DELIVERED
    if status == 410:
        return Outcome.GONE
    return Outcome.FAILED


def retry_delay_s(schedule: Sequence[float], retries: int, rng: random.Random) -> float | None:
    """The delay before retry number ``retries`` (1 = the first retry); None: no more."""
    if retries < 1 or retries > len(schedule):
        return None
    return schedule[retries - 1] * rng.uniform(1 - JITTER, 1 + JITTER)


def describe_failure(status: int | None, error: str | None) -> str:
    if error:
        return error[:MAX_ERROR]
    if status is not None and 300 <= status < 400:
        return f"HTTP {status}: redirects are not followed"
    return f"HTTP {status}"


def after_failure(
    job: FailedJob,
    status: int | None,
    error: str | None,
    now_us: int,
    schedule: Sequence[float],
    rng: random.Random,
) -> FailedJob:
    """``job`` after a failed attempt: queued for its next retry, or quit."""
    retries = job.retries + 1
    failed = replace(
        job,
        failure_count=job.failure_count + 1,
        retries=retries,
        last_status=status,
        last_error=describe_failure(status, error),
        updated_us=now_us,
        request=None,
    )
    delay = retry_delay_s(schedule, retries, rng)
    if delay is None:
        return quit_job(failed, None, now_us)
    return replace(failed, state=JobState.QUEUED, next_attempt_us=now_us + int(delay * 1e6))


def after_gone(job: FailedJob, now_us: int) -> FailedJob:
    failed = replace(
        job,
        failure_count=job.failure_count + 1,
        retries=job.retries + 1,
        last_status=410,
        last_error="HTTP 410 Gone: the receiver asked for no more deliveries",
    )
    return quit_job(failed, None, now_us)


def should_pause(failing_since_us: int | None, now_us: int, pause_after_s: float) -> bool:
    """Whether an endpoint failing without success since ``failing_since_us`` is paused."""
    return failing_since_us is not None and now_us - failing_since_us >= pause_after_s * 1e6
