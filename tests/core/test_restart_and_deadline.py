"""A restart does not stampede Segmind, and no wait carries a job past its deadline."""

from __future__ import annotations

from typing import Any

import pytest

from bot.core.jobs import JobState
from bot.core.tracker import (
    DEADLINE_SLACK_SECONDS,
    RESUME_POLLS_PER_SECOND,
    Tracker,
    TrackerConfig,
)
from tests.core.conftest import Harness
from tests.core.doubles import error

S = JobState


def fresh_tracker(h: Harness, **config: Any) -> Tracker:
    """What a restarted process builds: a new Tracker on the same ledger."""
    return h.new_tracker(config, seed=7)


async def test_a_restart_with_many_jobs_in_flight_spreads_their_first_polls(h: Harness):
    queued = [(await h.queued_job())[0] for _ in range(400)]
    telling = await h.finished_job(S.REJECTED)
    plan = dict(await fresh_tracker(h).resume_plan())
    assert set(plan) == {job.id for job in queued} | {telling.id}
    assert plan[telling.id] == 0.0  # a user waiting to hear is told at once
    delays = sorted(plan[job.id] for job in queued)
    # However their schedules bunch, first polls are at least 1/rate apart: no second
    # holds more than RESUME_POLLS_PER_SECOND of them.
    closest = min(later - earlier for earlier, later in zip(delays, delays[1:], strict=False))
    assert closest >= 1 / RESUME_POLLS_PER_SECOND - 1e-9, closest
    assert delays[-1] <= 400 / RESUME_POLLS_PER_SECOND + TrackerConfig().poll_interval


async def test_a_resumed_job_that_cannot_be_done_yet_waits_for_its_schedule(h: Harness):
    for _ in range(3):  # learnt: jobs like this take 50 s
        job, request = await h.queued_job()
        h.clock.advance(50)
        await h.ledger.transition(
            job.id,
            S.QUEUED,
            S.COMPLETED,
            output_url=request.video_url,
            completed_at=h.clock(),
        )
    young, _ = await h.processing_job()  # submitted a moment before the restart
    waiting, _ = await h.queued_job()  # not yet seen at work
    h.clock.advance(5)
    plan = dict(await fresh_tracker(h).resume_plan())
    interval = TrackerConfig().poll_interval
    # No poll while it cannot be finished (50 s learnt: the first just before it).
    assert plan[young.id] >= 50 - interval / 2 - 5
    # One still queued is looked at when it is twice as old (its status line says when
    # it is being made), not polled every interval.
    assert 5 <= plan[waiting.id] <= 5 + interval


@pytest.mark.parametrize("retry_after", [None, 600])
async def test_no_backoff_or_retry_after_carries_a_job_past_its_deadline(
    h: Harness, retry_after: int | None
):
    deadline = 60.0
    h.tracker = fresh_tracker(h, deadline_seconds=deadline)
    job, _ = await h.queued_job("PROCESSING")
    h.segmind.fail(
        "status", *[error(503 if retry_after is None else 429, retry_after=retry_after)] * 50
    )
    while (await h.job(job.id)).state is not S.TIMED_OUT:
        delay = await h.step(job.id)
        assert delay is not None
        h.clock.advance(delay)
    ended = await h.job(job.id)
    assert ended.finished_at is not None
    assert ended.submitted_at is not None
    late = ended.finished_at - ended.submitted_at - deadline
    assert 0 < late <= DEADLINE_SLACK_SECONDS + 1e-6, late
