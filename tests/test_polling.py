"""Issue 7: the poll schedule learnt from the ledger, through the real bot and fake Segmind.

The decisions themselves are unit-tested in ``test_schedule.py``; here the bot has to
learn job times from its own ledger and act on what Segmind reports.
"""

from __future__ import annotations

import pytest

from tests.conftest import ledger, wait_until
from tests.test_reliability import generate

INTERVAL = 0.05  # POLL_INTERVAL_SECONDS in tests.conftest.bot_env


async def run_job(telegram, segmind, database, user):
    """One job from photo to video; returns its ledger row and its status polls."""
    telegram.private_chat(user)
    await generate(telegram, user)
    await telegram.wait_for_call("sendVideo", chat_id=user)
    row = await wait_until(
        lambda: next(
            (r for r in ledger(database) if r["user_id"] == user and r["notified_at"]), None
        ),
        what=f"job of {user} delivered",
    )
    return row, segmind.jobs[row["request_id"]].status_polls


async def learn_from_three_jobs(telegram, segmind, database):
    """Three jobs delivered; returns how many of them were seen PROCESSING (a job first
    polled when already done never is: its processing time is not learnt)."""
    seen_processing = 0
    for user in (701, 702, 703):
        row, _ = await run_job(telegram, segmind, database, user)
        assert row["state"] == "delivered"
        seen_processing += row["processing_at"] is not None
    return seen_processing


@pytest.mark.long
async def test_once_it_has_learnt_a_job_costs_a_few_polls(telegram, segmind, bot, database):
    segmind.queued_seconds, segmind.processing_seconds = 0.05, 1.0
    _, first_polls = await run_job(telegram, segmind, database, 700)
    # Nothing learnt yet: one poll per interval.
    assert first_polls >= 1.05 / INTERVAL * 0.7
    await learn_from_three_jobs(telegram, segmind, database)
    row, polls = await run_job(telegram, segmind, database, 704)
    assert row["state"] == "delivered"
    assert polls <= 4, polls  # a loop every interval makes about 21


@pytest.mark.long
async def test_a_backlog_at_segmind_is_waited_out_with_few_polls(telegram, segmind, bot, database):
    segmind.queued_seconds, segmind.processing_seconds = 0.05, 1.0
    # Nothing learnt before them: each is polled every interval, seen PROCESSING.
    assert await learn_from_three_jobs(telegram, segmind, database) == 3
    segmind.queued_seconds = 3.0  # Segmind is busy: the job waits in its queue
    row, polls = await run_job(telegram, segmind, database, 705)
    assert row["state"] == "delivered"
    # Polling every interval once the usual ~1 s had passed would make about 60 polls.
    assert polls <= 35, polls
