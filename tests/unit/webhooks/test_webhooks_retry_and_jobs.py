"""The retry schedule, outcomes, failed-job transitions and the commit position."""

from __future__ import annotations

import random

from changefeed.config import DEFAULT_RETRY_SCHEDULE_S, Settings
from webhooks.jobs import FailedJob, JobState, resumed_job, waiting_job
from webhooks.progress import PartitionProgress
from webhooks.retry import (
    JITTER,
    Outcome,
    after_failure,
    after_gone,
    classify,
    retry_delay_s,
    should_pause,
)


def _job() -> FailedJob:
    return waiting_job(
        subscription_id="wh_0123456789abcdef",
        tenant_id="acme",
        change_id="c1",
        subject="acme/t/1",
        partition=0,
        offset=7,
        body="{}",
        reason="",
        now_us=1_000,
    )


def test_the_default_schedule_reaches_past_a_day_within_retention() -> None:
    total = sum(DEFAULT_RETRY_SCHEDULE_S)
    assert (
        total * (1 - JITTER) > 24 * 3600 and total * (1 + JITTER) < Settings().retention_ms / 1000
    )
    assert list(DEFAULT_RETRY_SCHEDULE_S) == sorted(DEFAULT_RETRY_SCHEDULE_S)


def test_delays_follow_the_schedule_with_bounded_jitter() -> None:
    rng = random.Random(1)
    schedule = (5.0, 30.0)
    delays = [retry_delay_s(schedule, 1, rng) for _ in range(200)]
    assert all(d is not None and 4.0 <= d <= 6.0 for d in delays)
    assert len({round(d or 0, 3) for d in delays}) > 50  # jittered, not all equal
    assert retry_delay_s(schedule, 3, rng) is None


def test_outcomes() -> None:
    assert classify(200) is classify(204) is Outcome.DELIVERED
    assert classify(410) is Outcome.GONE
    for status in (None, 301, 302, 400, 404, 429, 500, 503):
        assert classify(status) is Outcome.FAILED


def test_failures_queue_then_quit_and_resume_restarts_the_schedule() -> None:
    rng = random.Random(2)
    schedule = (1.0, 2.0)
    job = after_failure(_job(), 500, None, 10_000_000, schedule, rng)
    assert (job.state, job.failure_count, job.last_status) == (JobState.QUEUED, 1, 500)
    assert job.next_attempt_us is not None and job.next_attempt_us > 10_000_000
    job = after_failure(job, None, "timed out after 5s", 20_000_000, schedule, rng)
    assert job.state is JobState.QUEUED and job.last_error == "timed out after 5s"
    job = after_failure(job, 302, None, 30_000_000, schedule, rng)
    assert job.state is JobState.QUIT and job.failure_count == 3
    assert "redirects are not followed" in (job.last_error or "")
    resumed = resumed_job(job, 40_000_000)
    assert (resumed.state, resumed.retries, resumed.failure_count) == (JobState.QUEUED, 0, 3)
    again = after_failure(resumed, 500, None, 50_000_000, schedule, rng)
    assert again.state is JobState.QUEUED and again.failure_count == 4


def test_gone_quits_at_once() -> None:
    job = after_gone(_job(), 5)
    assert (job.state, job.last_status, job.failure_count) == (JobState.QUIT, 410, 1)


def test_jobs_round_trip_and_show_no_body() -> None:
    job = after_failure(_job(), 500, None, 10, (1.0,), random.Random(0))
    assert FailedJob.decode(job.encode()) == job
    public = job.public()
    assert "body" not in public and public["state"] == "queued"


def test_pause_after_the_failing_period() -> None:
    assert not should_pause(None, 10**12, 60)
    assert not should_pause(0, 59_000_000, 60)
    assert should_pause(0, 60_000_000, 60)


def test_commit_position_never_passes_a_held_offset() -> None:
    progress = PartitionProgress(10)
    progress.read(10, holds=2)
    progress.read(11)
    progress.read(12, holds=1)
    assert progress.committable() == 10
    progress.resolve(10)
    assert progress.committable() == 10
    progress.resolve(10)
    assert progress.committable() == 12
    progress.resolve(12)
    assert progress.committable() == 13
