"""A restart does not stampede Segmind: the requests to its API for the jobs a process
resumed (at its start, or taken over from a dead instance) reach it at most
SEGMIND_API_PER_SECOND in a second. At most API_REQUESTS_PER_SECOND leave in any second
(counted as each goes, by the bot's clock) and at most SEGMIND_API_IN_FLIGHT are on
their way at once, with a thousand jobs in flight and whatever the event loop does.

Jobs started in this process (a user's Generate) are not paced: they poll on their own
schedule, as they would with no restart."""

from __future__ import annotations

import asyncio
import heapq
import random
from collections import Counter
from collections.abc import Callable

import pytest

from bot.core.jobs import Job, JobState
from bot.core.leases import LEASE_SECONDS
from bot.core.schedule import ApiPace
from bot.core.tracker import (
    API_REQUESTS_PER_SECOND,
    SEGMIND_API_IN_FLIGHT,
    SEGMIND_API_PER_SECOND,
    Tracker,
)
from tests.core.conftest import INTERVAL, Harness
from tests.core.doubles import API_ROUTES

S = JobState
GAP = 1 / API_REQUESTS_PER_SECOND


def restarted(h: Harness, pace: ApiPace | None = None) -> Tracker:
    """What a restarted process builds: a new Tracker on the same ledger."""
    return h.new_tracker(seed=7, pace=pace)


def api_times(h: Harness, jobs: list[Job] | None = None) -> list[float]:
    """When each request to Segmind's API arrived (only those for ``jobs``, if given)."""
    wanted = None if jobs is None else {job.request_id for job in jobs}
    return sorted(
        seen.at
        for seen in h.segmind.requests
        if seen.route in API_ROUTES and (wanted is None or seen.request_id in wanted)
    )


def busiest_second(times: list[float]) -> int:
    """The most of ``times`` in any half-open window ``[t, t + 1)``."""
    return max((sum(1 for u in times if t <= u < t + 1) for t in times), default=0)


async def drive_late(h: Harness, plan: list[tuple[int, float]], late: random.Random) -> int:
    """Step every job from ``plan`` (job id, first delay) to its end, in the order they
    fall due, each woken up to 0.3 s late (a busy event loop); returns the steps taken."""
    started_at = h.clock.now
    due = [(started_at + delay + late.uniform(0, 0.3), job_id) for job_id, delay in plan]
    heapq.heapify(due)
    steps = 0
    while due:
        at, job_id = heapq.heappop(due)
        h.clock.now = max(h.clock.now, at)
        delay = await h.step(job_id)
        steps += 1
        if delay is not None:
            heapq.heappush(due, (h.clock.now + delay + late.uniform(0, 0.3), job_id))
    return steps


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run (yielding: no time passes) until ``condition`` holds."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def test_the_limit_is_the_pace_and_the_cap_together():
    assert API_REQUESTS_PER_SECOND + SEGMIND_API_IN_FLIGHT == SEGMIND_API_PER_SECOND == 50
    assert SEGMIND_API_IN_FLIGHT == 10


async def test_a_restart_with_hundreds_of_jobs_keeps_to_the_pace_through_a_busy_loop(
    h: Harness,
):
    """Every job is done at Segmind when the new process starts: each needs a status
    poll and a result fetch, 400 requests that take 10 s at the pace. The event loop
    wakes every job up to 0.3 s late, in any order (it is busy sending the videos):
    still no second holds more than API_REQUESTS_PER_SECOND requests, no two polls go
    less than half a gap apart, and every user gets one video. (Two hundred jobs, not
    the bench's thousand: each costs the test's ledger a dozen synced writes.)"""
    jobs = [(await h.queued_job("COMPLETED"))[0] for _ in range(200)]
    h.tracker = restarted(h)
    restart_at = h.clock.now
    plan = await h.tracker.resume_plan()
    assert {job_id for job_id, _ in plan} == {job.id for job in jobs}
    steps = await drive_late(h, plan, random.Random(3))

    sent = api_times(h)
    assert len(sent) == 2 * len(jobs)  # one status poll and one result fetch a job
    assert busiest_second(sent) <= API_REQUESTS_PER_SECOND
    polls = [seen.at for seen in h.segmind.requests if seen.route == "status"]
    assert min(b - a for a, b in zip(polls, polls[1:], strict=False)) >= GAP / 2 - 1e-9
    # The pace's turns cost a few steps, not a thundering herd.
    assert steps <= 4 * len(jobs)
    # Paced, not stalled: at the pace they take len(sent) / API_REQUESTS_PER_SECOND.
    assert max(sent) - restart_at <= 2 * len(sent) / API_REQUESTS_PER_SECOND
    videos = Counter(call.job_id for call in h.messenger.calls_to("send_video"))
    assert videos == {job.id: 1 for job in jobs}
    assert {(await h.job(job.id)).state for job in jobs} == {S.DELIVERED}


async def test_no_more_than_the_cap_are_on_their_way_and_those_let_go_together_are_spaced(
    h: Harness,
):
    """Twenty polls due one gap apart while Segmind does not answer: ten reach it, ten
    wait for a slot. Then every answer comes back at once (the loop stalled for 5 s): of
    the ten let go together, one goes; the others come back one gap apart."""
    jobs = [(await h.queued_job("PROCESSING"))[0] for _ in range(20)]
    pace = ApiPace(API_REQUESTS_PER_SECOND, SEGMIND_API_IN_FLIGHT)
    h.tracker = restarted(h, pace)
    h.segmind.api_gate = asyncio.Event()
    assert len(await h.tracker.resume_plan()) == len(jobs)
    resumed = [await h.job(job.id) for job in jobs]  # read: no ledger in the steps
    steps: list[asyncio.Task[float | None]] = []
    for number, job in enumerate(resumed, start=1):
        steps.append(asyncio.create_task(h.tracker.step(job)))
        out = min(number, SEGMIND_API_IN_FLIGHT)

        def reached(out: int = out, number: int = number) -> bool:
            """This step's poll is on its way or waiting for a slot."""
            return (
                h.segmind.api_in_flight == out and pace.in_flight + pace.waiting_for_slot == number
            )

        await until(reached)
        h.clock.advance(GAP)
    assert (h.segmind.api_in_flight, pace.waiting_for_slot) == (10, 10)
    assert h.segmind.count("status") == 10

    h.clock.advance(5.0)
    stalled_at = h.clock.now
    h.segmind.api_gate.set()
    delays = await asyncio.gather(*steps)
    assert h.segmind.api_most_in_flight == SEGMIND_API_IN_FLIGHT
    assert h.segmind.count("status") == 11  # one of the ten let go at once
    polled_at_stall = [seen for seen in h.segmind.seen("status") if seen.at == stalled_at]
    assert len(polled_at_stall) == 1
    held = sorted(delay for delay in delays if delay is not None and delay < INTERVAL)
    assert held == pytest.approx([GAP / 2 + k * GAP for k in range(9)], abs=1e-5)


async def test_a_result_held_back_by_the_pace_is_fetched_next_without_polling_again(
    h: Harness,
):
    """The status poll that finds the video made takes the second's last place: its
    result waits for the next second, is fetched without a second status poll, and the
    job is recorded as finished when the poll saw it, not when the result came."""
    job, _ = await h.processing_job("COMPLETED")
    pace = ApiPace(API_REQUESTS_PER_SECOND, SEGMIND_API_IN_FLIGHT)
    h.tracker = restarted(h, pace)
    assert [job_id for job_id, _ in await h.tracker.resume_plan()] == [job.id]
    for other in range(-39, 0):  # 39 requests of other jobs went half a second ago
        assert pace.start(other, h.clock.now - 0.5, in_line=False) == 0.0
    seen_at = h.clock.now
    delay = await h.step(job.id)
    assert delay is not None
    assert delay == pytest.approx(0.5, abs=1e-5)  # when the window has room
    assert (h.segmind.count("status"), h.segmind.count("result")) == (1, 0)
    assert (await h.job(job.id)).state is S.PROCESSING
    h.clock.advance(delay)
    assert await h.step(job.id) is None  # the result, the video, the summary
    assert (h.segmind.count("status"), h.segmind.count("result")) == (1, 1)
    done = await h.job(job.id)
    assert done.state is S.DELIVERED
    assert done.completed_at == seen_at


async def test_jobs_started_during_a_restart_go_out_at_once_ahead_of_the_resumed_ones(
    h: Harness,
):
    """A hundred resumed jobs, all due now, hold the pace's line for the next seconds:
    one poll goes, the others are given turns. Then two hundred users' jobs (started in
    this process) fall due in the same instant: each is polled at once, none waits for
    the pace, nor behind the resumed jobs. They are new work users asked for, polled as
    they would be with no restart."""
    resumed_jobs = [(await h.processing_job())[0] for _ in range(100)]
    pace = ApiPace(API_REQUESTS_PER_SECOND, SEGMIND_API_IN_FLIGHT)
    h.tracker = restarted(h, pace)
    assert len(await h.tracker.resume_plan()) == len(resumed_jobs)
    held = [await h.step(job.id) for job in resumed_jobs]  # all woken at once
    assert h.segmind.count("status") == 1
    assert held[1:] == pytest.approx([k * GAP for k in range(1, len(resumed_jobs))], abs=1e-4)

    own_jobs = [(await h.processing_job())[0] for _ in range(200)]
    delays = [await h.step(job.id) for job in own_jobs]
    assert delays == [INTERVAL] * len(own_jobs)  # polled, next poll in an interval
    assert api_times(h, own_jobs) == [h.clock.now] * len(own_jobs)
    assert h.segmind.count("status") == 1 + len(own_jobs)  # the resumed ones still wait
    assert all(pace.in_line(job.id) for job in resumed_jobs[1:])
    assert not any(pace.in_line(job.id) for job in own_jobs)


async def test_jobs_taken_over_from_a_dead_instance_are_paced(
    h: Harness, monkeypatch: pytest.MonkeyPatch
):
    """Instance B drove 120 jobs and died; A's takeover scan claims them when their
    leases lapse. Their videos are all made: 240 status polls and result fetches, which
    A sends through the pace (never more than API_REQUESTS_PER_SECOND in a second,
    through a busy loop), while a job a user starts on A meanwhile polls at once. Every
    video is delivered once."""
    b = h.new_tracker(seed=1, owner="instance-B")
    theirs = [(await h.queued_job("COMPLETED"))[0] for _ in range(120)]
    for job in theirs:
        assert await b.claim(job.id) is not None
    h.clock.advance(LEASE_SECONDS + 1)  # B is gone

    planned: list[tuple[int, float]] = []

    def track(job_id: int, *, delay: float = 0.0) -> None:
        planned.append((job_id, delay))  # stepped by hand below, not by a task

    monkeypatch.setattr(h.tracker, "track", track)
    assert await h.tracker.take_over() == len(theirs)
    assert {job_id for job_id, _ in planned} == {job.id for job in theirs}

    # All due at once: the pace lets one go, and a job started on A is not held by it.
    held = [await h.step(job.id) for job in theirs]
    assert h.segmind.count("status") == 1
    assert held[1:] == pytest.approx([k * GAP for k in range(1, len(theirs))], abs=1e-4)
    mine, _ = await h.processing_job()
    assert await h.step(mine.id) == INTERVAL
    assert h.segmind.count("status") == 2

    await drive_late(h, [(job.id, 0.0) for job in theirs], random.Random(5))
    sent = api_times(h, theirs)
    assert len(sent) == 2 * len(theirs)
    assert busiest_second(sent) <= API_REQUESTS_PER_SECOND
    videos = Counter(call.job_id for call in h.messenger.calls_to("send_video"))
    assert videos == {job.id: 1 for job in theirs}


async def test_a_job_of_its_own_taken_back_after_its_lease_lapsed_stays_unpaced(h: Harness):
    """Under load a renewal came late: the lease of a job this instance drives lapsed,
    and its own takeover scan claims it back beside a dead instance's jobs. That job
    was started here and is still driven by its task: it is not paced like them."""
    mine, _ = await h.processing_job()
    assert await h.tracker.claim(mine.id) is not None
    h.tracker.track(mine.id, delay=3600)  # its task waits for its next step
    b = h.new_tracker(seed=1, owner="instance-B")
    theirs = [(await h.processing_job())[0] for _ in range(50)]
    for job in theirs:
        assert await b.claim(job.id) is not None
    h.clock.advance(LEASE_SECONDS + 1)
    try:
        plan = await h.tracker.resume_plan()
        assert {job_id for job_id, _ in plan} == {mine.id} | {job.id for job in theirs}
        for job in theirs:  # all due at once: one goes, the others wait their turns
            await h.step(job.id)
        assert h.segmind.count("status") == 1
        assert await h.step(mine.id) == INTERVAL
        assert h.segmind.count("status") == 2
    finally:
        await h.tracker.stop()
