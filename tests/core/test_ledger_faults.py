"""A ledger that cannot be reached for a moment (PostgreSQL restarting) does not drop a
job: the tracker's task claims (reads) it again after a backoff and carries on."""

from __future__ import annotations

from typing import Any

from bot.core.errors import LedgerWriteFailed
from bot.core.jobs import JobState
from tests.conftest import wait_until
from tests.core.conftest import Harness


async def test_a_job_whose_ledger_read_failed_is_driven_on(h: Harness, monkeypatch):
    h.configure(poll_interval=0.01)  # the backoff after the failed read: 10-20 ms
    job = await h.new_job()
    real_claim = h.ledger.claim_job
    failures: list[int] = []

    async def claim_failing_once(job_id: int, *args: Any) -> Any:
        # The task's first read of its job is its claim (leases): that one fails.
        if not failures:
            failures.append(job_id)
            raise LedgerWriteFailed("cannot be reached (connection refused)")
        return await real_claim(job_id, *args)

    monkeypatch.setattr(h.ledger, "claim_job", claim_failing_once)
    h.tracker.track(job.id)
    try:
        # The background task (real time) goes on past its failed read: uploaded, submitted.
        await wait_until(lambda: h.segmind.accepted, timeout=5, what="the submit")
        await wait_until(
            lambda: any(target is JobState.QUEUED for _, _, target in h.ledger.moves),
            timeout=5,
            what="queued",
        )
    finally:
        await h.tracker.stop()
    assert failures == [job.id]
    assert len(h.segmind.accepted) == 1
