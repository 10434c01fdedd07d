"""Telling the user how a job ended: ``Tracker._notify``, and steps on finished jobs."""

from __future__ import annotations

import pytest

from bot.core.errors import ChatUnreachable, SendFailed
from bot.core.jobs import JobState, Reason
from tests.core.conftest import Harness

S = JobState

ENDINGS = [
    (S.REJECTED, Reason.BUSY),
    (S.UNCERTAIN, Reason.CONNECTION_LOST),
    (S.FAILED, Reason.CONTENT),
    (S.EXPIRED, Reason.RESULT_EXPIRED),
    (S.TIMED_OUT, Reason.DEADLINE),
]
IDS = [state.value for state, _ in ENDINGS]


@pytest.mark.parametrize(("state", "reason"), ENDINGS, ids=IDS)
async def test_an_ended_job_is_told_exactly_once(h: Harness, state: JobState, reason: Reason):
    job = await h.finished_job(state, reason=reason)
    h.clock.advance(1)
    assert await h.step(job.id) is None
    told = await h.job(job.id)
    assert told.notified_at == h.clock.now
    assert told.state is state  # telling changes no state
    assert h.messenger.methods() == ["send_outcome"]
    assert h.messenger.calls[0].args == (reason,)
    assert h.messenger.calls[0].state is state

    h.clock.advance(1)
    assert await h.step(job.id) is None
    assert len(h.messenger.calls) == 1
    assert (await h.job(job.id)).notified_at == told.notified_at
    assert h.segmind.requests == []


async def test_a_failed_outcome_message_backs_off_then_is_told_once(h: Harness):
    job = await h.finished_job(S.FAILED, reason=Reason.CONTENT)
    h.messenger.fail("send_outcome", SendFailed("flood", retry_after=12))
    delay = await h.step(job.id)
    assert delay is not None
    assert delay >= 12
    assert (await h.job(job.id)).notified_at is None

    h.clock.advance(delay)
    assert await h.step(job.id) is None
    assert (await h.job(job.id)).notified_at == h.clock.now
    assert await h.step(job.id) is None
    assert h.messenger.methods() == ["send_outcome", "send_outcome"]  # one failed, one told


async def test_an_unreachable_chat_counts_as_told(h: Harness):
    job = await h.finished_job(S.TIMED_OUT, reason=Reason.DEADLINE)
    h.messenger.fail("send_outcome", ChatUnreachable("blocked"))
    assert await h.step(job.id) is None
    assert (await h.job(job.id)).notified_at == h.clock.now
    assert await h.step(job.id) is None
    assert h.messenger.methods() == ["send_outcome"]


async def test_an_undeliverable_job_is_marked_told_without_a_message(h: Harness):
    job = await h.finished_job(S.UNDELIVERABLE, reason=Reason.CHAT_GONE)
    assert await h.step(job.id) is None
    assert (await h.job(job.id)).notified_at == h.clock.now
    assert h.messenger.calls == []


@pytest.mark.parametrize(("state", "reason"), ENDINGS, ids=IDS)
async def test_a_finished_and_told_job_is_left_alone(h: Harness, state: JobState, reason: Reason):
    job = await h.finished_job(state, reason=reason)
    await h.ledger.mark_notified(job.id)
    before = await h.job(job.id)
    assert await h.step(before.id) is None
    assert await h.job(job.id) == before
    assert h.messenger.calls == []
    assert h.segmind.requests == []
    assert h.step_moves == []


async def test_a_delivered_job_is_left_alone(h: Harness):
    job, _ = await h.completed_job()
    await h.step(job.id)
    calls, requests = len(h.messenger.calls), len(h.segmind.requests)
    before = await h.job(job.id)
    assert before.state is S.DELIVERED
    assert await h.step(job.id) is None
    assert await h.job(job.id) == before
    assert (len(h.messenger.calls), len(h.segmind.requests)) == (calls, requests)
