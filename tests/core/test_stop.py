"""Tracker.stop() cancels every job task and returns once each has ended: a restart (or a
SIGTERM) never waits for a job that carries on."""

from __future__ import annotations

import asyncio
import contextlib

from bot.core.jobs import Job
from bot.core.progress import Status
from tests.core.conftest import Harness


async def test_a_stop_ends_a_job_whose_step_dropped_the_cancel(h: Harness, monkeypatch):
    """A cancel lost inside a step (Python 3.11's ``asyncio.wait_for`` dropped one that
    came as a status edit was answered; a library may too) used to leave the job task
    sleeping until its next step and driving on: the stop waited for it for ever."""
    job = await h.new_job()
    showing = asyncio.Event()

    async def show_progress_dropping_the_cancel(job: Job, status: Status) -> bool:
        showing.set()
        # The edit on its way; its answer comes with the cancel, and the answer wins.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return True

    monkeypatch.setattr(h.messenger, "show_progress", show_progress_dropping_the_cancel)
    h.tracker.track(job.id)
    await showing.wait()
    stopping = asyncio.create_task(h.tracker.stop())
    # A bound on the failure only: the stop ends as soon as the step has returned.
    await asyncio.wait({stopping}, timeout=10)
    try:
        assert stopping.done()
        assert not h.tracker.holds(job.id)  # its lease let go: the next start resumes it
    finally:
        stopping.cancel()
