"""The status message through a job's life, stepped with the fake clock: queued → being
made (a coarse clock, and what such videos usually take) → sending → a summary; shown
only when it changes, and a bounded number of times whatever the polls do."""

from __future__ import annotations

import asyncio
import random

import pytest

from bot.core.errors import SendFailed
from bot.core.jobs import JobState
from bot.core.progress import (
    Progress,
    Status,
    coarse_elapsed,
    max_status_edits,
    status_for,
    usual_seconds,
)
from bot.core.tracker import TrackerConfig
from tests.core.conftest import INTERVAL, Harness, run_until_settled
from tests.core.doubles import GatedBody
from tests.core.test_schedule_learning import RUN_SECONDS, learn_from_history

S = JobState
P = Progress
DEADLINE = TrackerConfig().deadline_seconds


async def drive(h: Harness, job_id: int, timeline: dict[float, str]) -> float:
    """Step the job until it is delivered, Segmind reporting ``timeline`` (status from
    each time after the submit); returns the submit time."""
    delay = await h.step(job_id)  # PREPARING → QUEUED
    submitted_at = (await h.job(job_id)).submitted_at
    assert submitted_at is not None
    request = h.segmind.jobs[(await h.job(job_id)).request_id or ""]
    for _ in range(1000):
        if delay is None:
            return submitted_at
        h.clock.advance(delay)
        elapsed = h.clock.now - submitted_at
        request.status = [status for at, status in sorted(timeline.items()) if at <= elapsed][-1]
        delay = await h.step(job_id)
    raise AssertionError("not delivered")


async def test_a_learnt_job_says_queued_then_its_clock_then_sending_then_a_summary(h: Harness):
    await learn_from_history(h)  # ~50 s jobs: "usually about 50 s"
    # A fresh tracker (nothing cached) that says "sending" at once, as for a slow download.
    h.configure(sending_status_after=0.0)
    job = await h.new_job()
    h.clock.advance(1.5)  # the user pressed Generate 1.5 s before the submit
    await drive(h, job.id, {0: "QUEUED", 8: "PROCESSING", 53: "COMPLETED"})
    assert (await h.job(job.id)).state is S.DELIVERED
    assert h.messenger.statuses(job.id) == [
        Status(P.QUEUED, None, 50),
        # Looked at after 4 s (queued) and 8 s: processing. No poll then until just
        # before the learnt 50 s (bot.core.schedule); the clock moves without polls.
        Status(P.PROCESSING, None, 50),
        Status(P.PROCESSING, 10, 50),
        Status(P.PROCESSING, 20, 50),
        Status(P.PROCESSING, 30, 50),
        Status(P.PROCESSING, 40, 50),
        Status(P.PROCESSING, 50, 50),
        Status(P.SENDING),
        Status(P.DONE, 54),  # from Generate to the video, exact
    ]
    # Sending goes out before the video, the summary after it.
    methods = [m for m in h.messenger.methods() if m != "fetch_photo"]
    assert methods[-3:] == ["show_progress", "send_video", "show_progress"]


async def test_without_history_it_does_not_guess_how_long(h: Harness):
    job = await h.new_job()
    await drive(h, job.id, {0: "PROCESSING", 25: "COMPLETED"})
    statuses = h.messenger.statuses(job.id)
    assert all(status.usual is None for status in statuses)
    # The download was quick: no "sending" line to hold the video up.
    assert [s.progress for s in statuses] == [P.QUEUED, *[P.PROCESSING] * 3, P.DONE]
    assert [s.elapsed for s in statuses[1:4]] == [None, 10, 20]


async def test_polls_within_one_step_of_the_clock_edit_nothing(h: Harness):
    job, _ = await h.processing_job()
    h.clock.advance(11)
    await h.step(job.id)
    shown = len(h.messenger.statuses())
    for _ in range(4):  # 13, 15, 17, 19 s: still "10 s so far"
        h.clock.advance(INTERVAL)
        assert await h.step(job.id) == INTERVAL
    assert len(h.messenger.statuses()) == shown
    h.clock.advance(INTERVAL)  # 21 s
    await h.step(job.id)
    assert h.messenger.statuses()[-1] == Status(P.PROCESSING, 20, None)


async def test_edits_are_bounded_however_often_it_is_polled(h: Harness):
    """A job that runs to its deadline, polled every interval: 450 polls, few edits."""
    job = await h.new_job()
    await h.step(job.id)
    request = h.segmind.jobs["req-1"]
    request.status = "PROCESSING"
    delays = await run_until_settled(h, job.id, max_steps=1000)
    assert len(delays) > 400
    assert (await h.job(job.id)).state is S.TIMED_OUT
    statuses = h.messenger.statuses(job.id)
    assert len(statuses) <= max_status_edits(DEADLINE)
    assert [status.elapsed for status in statuses] == [
        None,  # queued
        None,  # processing, under 10 s
        *range(10, 60, 10),
        *range(60, 600, 60),
        600,
        900,  # the last poll, at the deadline itself; the next step ends it
    ]


async def test_a_paced_out_edit_is_tried_again_at_the_next_step(h: Harness):
    job, _ = await h.processing_job()
    h.clock.advance(10)
    h.messenger.paced_out = 1  # the chat's slot was taken (a keyboard just went out)
    await h.step(job.id)
    h.clock.advance(INTERVAL)
    await h.step(job.id)
    assert h.messenger.statuses() == [Status(P.PROCESSING, 10, None)] * 2
    h.clock.advance(INTERVAL)
    await h.step(job.id)
    assert len(h.messenger.statuses()) == 2  # shown now: not again


async def test_a_newly_learnt_figure_costs_no_extra_edit(h: Harness):
    """What the message says a video usually takes is fixed at its first status."""
    job, _ = await h.processing_job()
    h.clock.advance(3)
    await h.step(job.id)
    assert h.messenger.statuses(job.id) == [Status(P.PROCESSING, None, None)]
    await learn_from_history(h)  # other jobs finish meanwhile
    for _ in range(30):  # past the tracker's cache of the ledger
        h.clock.advance(INTERVAL)
        await h.step(job.id)
    assert (await h.tracker._learn(job)).usual == RUN_SECONDS  # learnt by now
    assert h.messenger.statuses(job.id) == [
        Status(P.PROCESSING, None, None),
        Status(P.PROCESSING, 10, None),
        Status(P.PROCESSING, 20, None),
        Status(P.PROCESSING, 30, None),
        Status(P.PROCESSING, 40, None),
        Status(P.PROCESSING, 50, None),
        Status(P.PROCESSING, 60, None),
    ]


async def test_after_a_restart_the_status_is_shown_once_from_the_ledger(h: Harness):
    await learn_from_history(h)
    job, _ = await h.processing_job()
    h.clock.advance(34)
    await h.step(job.id)
    h.configure()  # the process restarted: what was shown is forgotten
    h.clock.advance(INTERVAL)
    await h.step(job.id)
    assert h.messenger.statuses(job.id) == [Status(P.PROCESSING, 30, int(RUN_SECONDS))] * 2
    h.clock.advance(INTERVAL)
    await h.step(job.id)
    assert len(h.messenger.statuses(job.id)) == 2


async def test_a_group_gets_whole_minutes_and_no_sending_line(h: Harness):
    job = await h.new_job()
    await h.ledger.db.execute("UPDATE jobs SET chat_type='supergroup' WHERE id=?", (job.id,))
    await h.ledger.db.commit()
    await drive(h, job.id, {0: "PROCESSING", 130: "COMPLETED"})
    assert h.messenger.statuses(job.id) == [
        Status(P.QUEUED),
        Status(P.PROCESSING),
        Status(P.PROCESSING, 60),
        Status(P.PROCESSING, 120),
        Status(P.DONE, 130),
    ]
    assert len(h.messenger.statuses(job.id)) <= max_status_edits(DEADLINE, group=True)


async def test_a_failing_summary_does_not_touch_the_delivery(h: Harness):
    job, _ = await h.completed_job()
    h.messenger.fail("show_progress", SendFailed("network"), SendFailed("network"))
    assert await h.step(job.id) is None
    assert (await h.job(job.id)).state is S.DELIVERED
    assert h.messenger.methods() == ["send_video", "show_progress"]


async def test_a_slow_download_says_sending_while_a_quick_one_does_not(h: Harness):
    """The "sending" edit takes the chat's slot, and the video would wait for it: it is
    made only while a download is still running after ``sending_status_after``."""
    h.configure(sending_status_after=0.01)
    job, request = await h.completed_job()
    gate = asyncio.Event()
    request.video_body = GatedBody(request.video, gate)
    step = asyncio.create_task(h.step(job.id))
    await request.video_body.started.wait()
    await h.messenger.called("show_progress")  # the download hangs: the edit comes
    assert h.messenger.stages() == [P.SENDING]
    gate.set()
    assert await step is None
    assert h.messenger.methods() == ["show_progress", "send_video", "show_progress"]
    assert h.messenger.stages() == [P.SENDING, P.DONE]
    assert h.messenger.videos == [request.video]


# -- the pure rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "private", "group"),
    [
        (0, 0, 0),
        (9.9, 0, 0),
        (10, 10, 0),
        (59, 50, 0),
        (60, 60, 60),
        (119, 60, 60),
        (599, 540, 540),
        (600, 600, 600),
        (899, 600, 600),
        (900, 900, 900),
        (-3, 0, 0),
    ],
)
def test_the_clock_is_coarse(seconds: float, private: int, group: int):
    assert coarse_elapsed(seconds) == private
    assert coarse_elapsed(seconds, group=True) == group


def test_the_shown_clock_only_moves_forward():
    rng = random.Random(1)
    times = sorted(rng.uniform(0, 2000) for _ in range(500))
    shown = [coarse_elapsed(t) for t in times]
    assert shown == sorted(shown)


def test_the_bound_on_edits():
    assert max_status_edits(900) == len(Progress) + 6 + 9 + 2
    assert max_status_edits(900, group=True) == len(Progress) + 10 + 2


def test_usual_seconds_is_the_median_rounded_to_ten_and_needs_three_samples():
    assert usual_seconds([48.0, 51.0]) is None
    assert usual_seconds([48.0, 51.0, 90.0]) == 50
    assert usual_seconds([40.0, 44.0, 60.0, 61.0]) == 50
    assert usual_seconds([1.0, 2.0, 3.0]) == 10
    assert usual_seconds([0.0, -1.0, 50.0, 50.0]) is None  # only real runs count


def test_sending_and_the_summary_carry_no_estimate():
    assert status_for(P.SENDING, elapsed=40, usual=50, group=False) == Status(P.SENDING)
    assert status_for(P.SENDING, elapsed=40, usual=50, group=True) is None
    assert status_for(P.DONE, elapsed=52.4, usual=50, group=False) == Status(P.DONE, 52)
