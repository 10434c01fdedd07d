"""Every transition the state machine allows, each reached through ``Tracker.step``.

Set-up may move a job with ``ledger.transition``; the transition under test must be made
by a step (the harness notes which transitions happened inside steps). The last test
walks ``_TRANSITIONS`` and ``can_transition``: a new transition without a scenario here
fails the suite.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

import httpx
import pytest

from bot.core.errors import ChatUnreachable, PhotoUnavailable
from bot.core.jobs import _TRANSITIONS, ACTIVE_STATES, JobState, can_transition
from bot.core.limits import StartOutcome
from bot.core.options import VideoOptions
from bot.core.payments import NewPayment, PaymentOutcome, invoice_payload
from bot.core.tracker import RESULT_RETENTION_SECONDS, TrackerConfig
from tests.builders import new_job
from tests.core.conftest import LIMITS, Harness, run_until_settled

S = JobState
Scenario = Callable[[Harness], Awaitable[int]]


async def preparing_to_submitting(h: Harness) -> int:
    job = await h.new_job()
    await h.step(job.id)
    return job.id


async def preparing_to_rejected(h: Harness) -> int:
    job = await h.new_job()
    h.messenger.fail("fetch_photo", PhotoUnavailable("gone"))
    await h.step(job.id)
    return job.id


async def preparing_to_undeliverable(h: Harness) -> int:
    job = await h.new_job()
    h.messenger.fail("fetch_photo", ChatUnreachable("blocked"))
    await h.step(job.id)
    return job.id


async def submitting_to_queued(h: Harness) -> int:
    return await preparing_to_submitting(h)


async def submitting_to_preparing(h: Harness) -> int:
    job = await h.new_job()
    h.segmind.fail("submit", httpx.ConnectError)
    await h.step(job.id)
    return job.id


async def submitting_to_rejected(h: Harness) -> int:
    job = await h.new_job()
    h.segmind.fail("submit", 400)
    await h.step(job.id)
    return job.id


async def submitting_to_uncertain(h: Harness) -> int:
    job = await h.new_job()
    h.segmind.fail("submit", httpx.ReadTimeout)  # lost, and not in the history either
    await run_until_settled(h, job.id, until=S.UNCERTAIN)
    return job.id


async def queued_to_processing(h: Harness) -> int:
    job, _ = await h.queued_job("PROCESSING")
    await h.step(job.id)
    return job.id


async def queued_to_completed(h: Harness) -> int:
    job, _ = await h.queued_job("COMPLETED")
    await h.step(job.id)
    return job.id


async def queued_to_failed(h: Harness) -> int:
    job, _ = await h.queued_job("FAILED")
    await h.step(job.id)
    return job.id


async def queued_to_expired(h: Harness) -> int:
    job, _ = await h.queued_job()
    h.segmind.fail("status", 404)
    await h.step(job.id)
    return job.id


async def queued_to_timed_out(h: Harness) -> int:
    job, _ = await h.queued_job()
    h.clock.advance(TrackerConfig().deadline_seconds + 1)
    await h.step(job.id)
    return job.id


async def queued_to_undeliverable(h: Harness) -> int:
    # Accepted by Segmind, then the chat is gone when the status line says "queued".
    job = await h.new_job()
    h.messenger.fail("show_progress", ChatUnreachable("blocked"))
    await h.step(job.id)
    return job.id


async def processing_to_completed(h: Harness) -> int:
    job, _ = await h.processing_job("COMPLETED")
    await h.step(job.id)
    return job.id


async def processing_to_failed(h: Harness) -> int:
    job, _ = await h.processing_job("FAILED")
    await h.step(job.id)
    return job.id


async def processing_to_expired(h: Harness) -> int:
    job, _ = await h.processing_job()
    h.segmind.fail("status", 404)
    await h.step(job.id)
    return job.id


async def processing_to_timed_out(h: Harness) -> int:
    job, _ = await h.processing_job()
    h.clock.advance(TrackerConfig().deadline_seconds + 1)
    await h.step(job.id)
    return job.id


async def processing_to_undeliverable(h: Harness) -> int:
    # Seen PROCESSING, then the chat is gone when the status line changes.
    job, _ = await h.queued_job("PROCESSING")
    h.messenger.fail("show_progress", ChatUnreachable("blocked"))
    await h.step(job.id)
    return job.id


async def completed_to_delivered(h: Harness) -> int:
    job, _ = await h.completed_job()
    await h.step(job.id)
    return job.id


async def completed_to_expired(h: Harness) -> int:
    job, _ = await h.completed_job()
    h.clock.advance(RESULT_RETENTION_SECONDS + 1)
    await h.step(job.id)
    return job.id


async def completed_to_undeliverable(h: Harness) -> int:
    job, _ = await h.completed_job()
    h.messenger.fail("send_video", ChatUnreachable("blocked"))
    await h.step(job.id)
    return job.id


#: (source, target) → the scenario whose step makes that transition, and where the job
#: is once that step is over (a step may go on: SUBMITTING → QUEUED, COMPLETED → DELIVERED).
SCENARIOS: dict[tuple[JobState, JobState], tuple[Scenario, JobState]] = {
    (S.PREPARING, S.SUBMITTING): (preparing_to_submitting, S.QUEUED),
    (S.PREPARING, S.REJECTED): (preparing_to_rejected, S.REJECTED),
    (S.PREPARING, S.UNDELIVERABLE): (preparing_to_undeliverable, S.UNDELIVERABLE),
    (S.SUBMITTING, S.QUEUED): (submitting_to_queued, S.QUEUED),
    (S.SUBMITTING, S.PREPARING): (submitting_to_preparing, S.PREPARING),
    (S.SUBMITTING, S.REJECTED): (submitting_to_rejected, S.REJECTED),
    (S.SUBMITTING, S.UNCERTAIN): (submitting_to_uncertain, S.UNCERTAIN),
    (S.QUEUED, S.PROCESSING): (queued_to_processing, S.PROCESSING),
    (S.QUEUED, S.COMPLETED): (queued_to_completed, S.DELIVERED),
    (S.QUEUED, S.FAILED): (queued_to_failed, S.FAILED),
    (S.QUEUED, S.EXPIRED): (queued_to_expired, S.EXPIRED),
    (S.QUEUED, S.TIMED_OUT): (queued_to_timed_out, S.TIMED_OUT),
    (S.QUEUED, S.UNDELIVERABLE): (queued_to_undeliverable, S.UNDELIVERABLE),
    (S.PROCESSING, S.COMPLETED): (processing_to_completed, S.DELIVERED),
    (S.PROCESSING, S.FAILED): (processing_to_failed, S.FAILED),
    (S.PROCESSING, S.EXPIRED): (processing_to_expired, S.EXPIRED),
    (S.PROCESSING, S.TIMED_OUT): (processing_to_timed_out, S.TIMED_OUT),
    (S.PROCESSING, S.UNDELIVERABLE): (processing_to_undeliverable, S.UNDELIVERABLE),
    (S.COMPLETED, S.DELIVERED): (completed_to_delivered, S.DELIVERED),
    (S.COMPLETED, S.EXPIRED): (completed_to_expired, S.EXPIRED),
    (S.COMPLETED, S.UNDELIVERABLE): (completed_to_undeliverable, S.UNDELIVERABLE),
}

#: Allowed transitions no step makes, by design; each names the test that shows why.
NOT_MADE_BY_STEP: dict[tuple[JobState, JobState], str] = {
    # The Generate button's consent: ledger.start, never the tracker.
    (S.DRAFT, S.PREPARING): "test_a_draft_is_started_by_the_ledger_not_by_a_step",
    # A job in SUBMITTING at a step's start is looked up (or becomes UNCERTAIN) without
    # asking the chat; the messenger is only used before SUBMITTING or after QUEUED.
    (S.SUBMITTING, S.UNDELIVERABLE): "test_a_submitting_job_never_meets_the_chat",
    # Payments: the Generate button (priced), "Change options", and successful_payment
    # are the user's acts, recorded by the ledger; a step never makes them.
    (S.DRAFT, S.AWAITING_PAYMENT): "test_payments_move_a_job_through_the_ledger_not_a_step",
    (S.AWAITING_PAYMENT, S.DRAFT): "test_payments_move_a_job_through_the_ledger_not_a_step",
    (S.AWAITING_PAYMENT, S.PREPARING): "test_payments_move_a_job_through_the_ledger_not_a_step",
}


@pytest.mark.parametrize(
    ("source", "target"),
    list(SCENARIOS),
    ids=[f"{source.value}->{target.value}" for source, target in SCENARIOS],
)
async def test_transition_is_made_by_a_step(h: Harness, source: JobState, target: JobState):
    scenario, final = SCENARIOS[(source, target)]
    job_id = await scenario(h)
    assert (source, target) in h.moved(job_id), h.moved(job_id)
    assert (await h.job(job_id)).state is final


async def test_a_draft_is_started_by_the_ledger_not_by_a_step(h: Harness):
    draft, created = await h.ledger.create_draft(new_job(999), VideoOptions())
    assert created
    assert draft.state is S.DRAFT
    assert await h.step(draft.id) is None  # no consent yet: the tracker leaves it alone
    assert (await h.job(draft.id)).state is S.DRAFT
    assert h.segmind.requests == []
    assert h.messenger.calls == []

    started = await h.ledger.start(draft.id, 1, LIMITS)  # the Generate button
    assert started.outcome is StartOutcome.STARTED
    assert (await h.job(draft.id)).state is S.PREPARING
    await h.step(draft.id)  # from here on the tracker drives it
    assert h.moved(draft.id)[0] == (S.PREPARING, S.SUBMITTING)


async def test_payments_move_a_job_through_the_ledger_not_a_step(h: Harness):
    draft, _ = await h.ledger.create_draft(new_job(998), VideoOptions())
    invoiced = await h.ledger.start(draft.id, 1, LIMITS, price=50)  # Generate, priced
    assert invoiced.outcome is StartOutcome.INVOICE
    assert await h.step(draft.id) is None  # unpaid: the tracker leaves it alone
    assert (await h.job(draft.id)).state is S.AWAITING_PAYMENT
    assert await h.ledger.reopen_draft(draft.id, 1) is not None  # Change options
    assert (await h.job(draft.id)).state is S.DRAFT
    job = (await h.ledger.start(draft.id, 1, LIMITS, price=50)).job
    assert job is not None
    outcome, _, paid = await h.ledger.record_payment(
        NewPayment(
            charge_id="c",
            provider_charge_id="",
            user_id=1,
            chat_id=1,
            payload=invoice_payload(job.id, job.invoice_no),
            amount=50,
        )
    )
    assert outcome is PaymentOutcome.STARTED
    assert paid is not None
    assert paid.state is S.PREPARING
    assert h.segmind.requests == []
    assert h.messenger.calls == []
    assert h.step_moves == []


async def test_a_submitting_job_never_meets_the_chat(h: Harness):
    job = await h.submitting_job()
    for method in ("fetch_photo", "photo_link", "show_progress", "send_outcome"):
        h.messenger.fail(method, ChatUnreachable("blocked"))
    assert await h.step(job.id) == 0.0
    assert h.moved(job.id) == [(S.SUBMITTING, S.UNCERTAIN)]
    assert h.messenger.calls == []
    assert h.segmind.requests == []


def _allowed_pairs() -> set[tuple[JobState, JobState]]:
    listed = {(source, target) for source, targets in _TRANSITIONS.items() for target in targets}
    listed |= {(source, S.UNDELIVERABLE) for source in ACTIVE_STATES}
    by_rule = {(a, b) for a in JobState for b in JobState if can_transition(a, b)}
    assert listed == by_rule, listed ^ by_rule
    return listed


def test_every_allowed_transition_has_a_test():
    allowed = _allowed_pairs()
    declared = set(SCENARIOS) | set(NOT_MADE_BY_STEP)
    assert not set(SCENARIOS) & set(NOT_MADE_BY_STEP)
    missing = sorted(f"{a.value}->{b.value}" for a, b in allowed - declared)
    stale = sorted(f"{a.value}->{b.value}" for a, b in declared - allowed)
    assert not missing, f"transitions without a test: {missing}"
    assert not stale, f"tests for transitions that are not allowed: {stale}"
    module = sys.modules[__name__]
    for name in NOT_MADE_BY_STEP.values():
        assert callable(getattr(module, name, None)), name
