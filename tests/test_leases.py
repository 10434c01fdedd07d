"""Leases in the running bot (SQLite: one process, so never contested, same code).

The bot that starts a job claims it in the ledger under its instance id, renews the
lease while it works, lets it go when the job ends and at a clean stop; the next start
resumes it at once. Two instances contending for jobs are tested in tests/core
(test_leases.py) and, on PostgreSQL, with several processes.
"""

from __future__ import annotations

import time

from tests.conftest import ledger, running, wait_until
from tests.test_reliability import generate

USER = 611


async def test_a_job_is_held_by_the_bot_running_it_and_let_go_at_a_clean_stop(
    telegram, segmind, make_settings, database
):
    telegram.private_chat(USER)
    segmind.processing_seconds = 60  # at Segmind until the clock is moved
    async with running(make_settings()) as application:
        await generate(telegram, USER)
        await wait_until(
            lambda: ledger(database) and ledger(database)[0]["state"] in ("queued", "processing"),
            what="the job at Segmind",
        )
        [job] = ledger(database)
        assert job["owner"] == application.bot_data["runtime"].instance
        assert job["lease_until"] > time.time()
    [stopped] = ledger(database)
    assert stopped["state"] in ("queued", "processing")
    assert (stopped["owner"], stopped["lease_until"]) == (None, None)

    segmind.advance(60)
    async with running(make_settings()) as application:
        await telegram.wait_for_call("sendVideo", chat_id=USER)
        await wait_until(lambda: ledger(database)[0]["state"] == "delivered", what="delivered")
        [delivered] = ledger(database)
        assert (delivered["owner"], delivered["lease_until"]) == (None, None)  # ended
    assert len(telegram.calls_of("sendVideo")) == 1
    assert len(segmind.submits) == 1
