"""The poll schedule the tracker learns from its own ledger, and a whole job's life."""

from __future__ import annotations

from bot.core.jobs import JobState
from bot.core.ports import Progress
from bot.core.schedule import FIRST_LOOK_INTERVALS
from tests.core.conftest import INTERVAL, Harness, run_until_settled

S = JobState
RUN_SECONDS = 50.0  #: submit → COMPLETED of the learnt jobs
PROCESSING_SECONDS = 40.0  #: PROCESSING seen → COMPLETED of the learnt jobs


async def learn_from_history(h: Harness, count: int = 3) -> None:
    """Jobs like the next one that took ~50 s (40 s of it processing), in the ledger."""
    for index in range(count):
        job, _ = await h.queued_job()
        submitted = job.submitted_at
        assert submitted is not None
        jitter = index * 0.5  # ~50 s each; the lowest is the learnt figure
        await h.ledger.transition(
            job.id,
            S.QUEUED,
            S.PROCESSING,
            processing_at=submitted + RUN_SECONDS - PROCESSING_SECONDS,
        )
        await h.ledger.transition(
            job.id, S.PROCESSING, S.COMPLETED, completed_at=submitted + RUN_SECONDS + jitter
        )
    runs = await h.ledger.run_seconds("540p", 5)
    assert min(runs.total) == RUN_SECONDS
    assert min(runs.processing) == PROCESSING_SECONDS


async def test_without_history_the_first_poll_is_one_interval_after_the_submit(h: Harness):
    await learn_from_history(h, count=2)  # two samples are not trusted yet
    job = await h.new_job()
    assert await h.step(job.id) == INTERVAL


async def test_a_learnt_job_is_looked_at_once_then_polled_just_before_its_earliest_finish(
    h: Harness,
):
    await learn_from_history(h)
    job = await h.new_job()
    submitted_at = h.clock.now
    delay = await h.step(job.id)
    assert (await h.job(job.id)).state is S.QUEUED
    # One look after two intervals, so the status line can say it is being made.
    assert delay == FIRST_LOOK_INTERVALS * INTERVAL
    request = h.segmind.jobs["req-1"]
    request.status = "PROCESSING"
    polled_at, steps = [], 0
    while h.clock.now - submitted_at < RUN_SECONDS:
        assert delay is not None
        h.clock.advance(delay)
        before = request.status_polls
        delay = await h.step(job.id)
        steps += 1
        if request.status_polls > before:
            polled_at.append(round(h.clock.now - submitted_at, 2))
    # Then no poll until just before the learnt 50 s: the steps between only move the
    # status line's clock (10, 20, 30, 40 s), with no request to Segmind.
    assert polled_at == [FIRST_LOOK_INTERVALS * INTERVAL, RUN_SECONDS - INTERVAL / 2, 51.0]
    assert steps == len(polled_at) + 4
    clocks = [status.elapsed for status in h.messenger.statuses(job.id)]
    assert clocks == [None, None, 10, 20, 30, 40, 50]


async def test_a_learnt_job_costs_a_handful_of_polls(h: Harness):
    await learn_from_history(h)
    job = await h.new_job()
    submitted_at = h.clock.now
    delay = await h.step(job.id)
    request = h.segmind.jobs["req-1"]
    while (await h.job(job.id)).state is not S.DELIVERED:
        assert delay is not None
        assert request.status_polls < 30
        h.clock.advance(delay)
        elapsed = h.clock.now - submitted_at
        # This run: 10 s in Segmind's queue, done after 52 s.
        request.status = (
            "QUEUED" if elapsed < 10 else "PROCESSING" if elapsed < 52 else "COMPLETED"
        )
        delay = await h.step(job.id)
    # Polling every interval would take 27 polls. Here: looks at 4 and 8 s (queued) and
    # 16 s (being made: the status line says so), then 49 and 51 s (still processing
    # after its 10 s in the queue), 53 s.
    assert request.status_polls <= 6, request.status_polls
    assert h.clock.now - submitted_at < 52 + INTERVAL  # and the video is still seen promptly


async def test_a_job_still_queued_pushes_its_earliest_finish_out(h: Harness):
    await learn_from_history(h)
    queued, _ = await h.queued_job("QUEUED")
    processing, _ = await h.queued_job("PROCESSING")
    h.clock.advance(60)  # past the usual 50 s

    # Seen PROCESSING at 60 s: it may finish any moment, poll every interval.
    assert await h.step(processing.id) == INTERVAL
    # Seen QUEUED at 60 s: it cannot finish before 60 + 40 s; no poll until then.
    delay = await h.step(queued.id)
    assert delay == PROCESSING_SECONDS - INTERVAL / 2
    assert delay is not None
    assert delay > 5 * INTERVAL


async def test_a_whole_job_from_generate_to_video(h: Harness):
    job = await h.new_job()
    h.segmind.next_timeline = ["QUEUED", "PROCESSING", "PROCESSING", "COMPLETED"]
    delays = await run_until_settled(h, job.id)
    done = await h.job(job.id)
    assert done.state is S.DELIVERED
    assert done.notified_at is not None
    assert delays == [INTERVAL] * 4
    assert h.moved(job.id) == [
        (S.PREPARING, S.SUBMITTING),
        (S.SUBMITTING, S.QUEUED),
        (S.QUEUED, S.PROCESSING),
        (S.PROCESSING, S.COMPLETED),
        (S.COMPLETED, S.DELIVERED),
    ]
    assert h.segmind.accepted == ["req-1"]
    assert h.messenger.stages() == [
        Progress.QUEUED,
        Progress.PROCESSING,
        Progress.DONE,
    ]
    assert h.messenger.videos == [h.segmind.jobs["req-1"].video]
    assert done.poll_count == 4
