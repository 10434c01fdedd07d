"""The Ledger's money rules, run against every backend (see tests/storage/conftest.py).

A payment is recorded once per charge id, in the transaction that starts its job; one
that cannot start its job is owed back at once; a paid job that ends without a video
owes its payment back in the transaction that ends it.
"""

import asyncio

import pytest

from bot.core.jobs import TERMINAL_STATES, JobState, Reason
from bot.core.limits import Limits, StartOutcome
from bot.core.options import VideoOptions
from bot.core.payments import (
    NewPayment,
    PaymentOutcome,
    PreCheckout,
    RefundReason,
    RefundState,
    invoice_payload,
)
from bot.core.ports import Ledger
from tests.builders import new_job
from tests.storage.conftest import Clock

LIMITS = Limits(max_active_per_user=2, daily_per_user=10)
PRICE = 50


async def invoiced(ledger: Ledger, message_id: int = 10, user_id: int = 1, price: int = PRICE):
    """A job whose Generate sent an invoice (AWAITING_PAYMENT)."""
    draft, _ = await ledger.create_draft(new_job(message_id, user_id, user_id), VideoOptions())
    result = await ledger.start(draft.id, user_id, LIMITS, price=price)
    assert result.outcome is StartOutcome.INVOICE
    assert result.job is not None
    return result.job


def paid(job, charge: str = "ch-1", amount: int = PRICE, user_id: int | None = None):
    return NewPayment(
        charge_id=charge,
        provider_charge_id="",
        user_id=job.user_id if user_id is None else user_id,
        chat_id=job.chat_id,
        payload=invoice_payload(job.id, job.invoice_no),
        amount=amount,
    )


async def test_a_free_generate_starts_at_once(ledger):
    draft, _ = await ledger.create_draft(new_job(), VideoOptions())
    result = await ledger.start(draft.id, 1, LIMITS, price=0)
    assert result.outcome is StartOutcome.STARTED
    assert result.job.price_stars == 0


async def test_a_priced_generate_freezes_the_price_and_numbers_the_invoice(ledger):
    job = await invoiced(ledger)
    assert job.state is JobState.AWAITING_PAYMENT
    assert (job.price_stars, job.invoice_no) == (PRICE, 1)
    assert job.generate_at is None  # nothing started, nothing counted against the day
    again = await ledger.start(job.id, 1, LIMITS, price=PRICE)
    assert again.outcome is StartOutcome.AWAITING_PAYMENT
    assert await ledger.unfinished() == []  # the tracker has nothing to do yet
    assert await ledger.count_active() == 0


async def test_free_videos_come_first(ledger):
    outcomes = []
    for message_id in (1, 2, 3):
        draft, _ = await ledger.create_draft(new_job(message_id), VideoOptions())
        result = await ledger.start(draft.id, 1, LIMITS, price=PRICE, free_videos=2)
        outcomes.append(result.outcome)
        if result.outcome is StartOutcome.STARTED:  # make room under the active limit
            await ledger.transition(draft.id, JobState.PREPARING, JobState.SUBMITTING)
            await ledger.transition(
                draft.id, JobState.SUBMITTING, JobState.QUEUED, request_id=f"r{message_id}"
            )
            await ledger.transition(draft.id, JobState.QUEUED, JobState.COMPLETED, output_url="u")
            await ledger.transition(draft.id, JobState.COMPLETED, JobState.DELIVERED)
    assert outcomes == [StartOutcome.STARTED, StartOutcome.STARTED, StartOutcome.INVOICE]


async def test_a_free_video_that_failed_does_not_use_up_the_free_quota(ledger):
    draft, _ = await ledger.create_draft(new_job(1), VideoOptions())
    assert (await ledger.start(draft.id, 1, LIMITS, price=PRICE, free_videos=1)).outcome is (
        StartOutcome.STARTED
    )
    await ledger.transition(draft.id, JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    second, _ = await ledger.create_draft(new_job(2), VideoOptions())
    result = await ledger.start(second.id, 1, LIMITS, price=PRICE, free_videos=1)
    assert result.outcome is StartOutcome.STARTED


async def test_pre_checkout_accepts_only_the_awaited_payment(ledger):
    job = await invoiced(ledger)
    payload = invoice_payload(job.id, job.invoice_no)
    assert await ledger.check_payment(payload, 1, PRICE, LIMITS) is PreCheckout.OK
    assert await ledger.check_payment(payload, 2, PRICE, LIMITS) is PreCheckout.NOT_YOURS
    assert await ledger.check_payment(payload, 1, PRICE - 1, LIMITS) is PreCheckout.WRONG_AMOUNT
    assert await ledger.check_payment("nonsense", 1, PRICE, LIMITS) is PreCheckout.UNKNOWN
    unknown = invoice_payload(job.id + 100, 1)
    assert await ledger.check_payment(unknown, 1, PRICE, LIMITS) is PreCheckout.UNKNOWN
    old = invoice_payload(job.id, job.invoice_no - 1)
    assert await ledger.check_payment(old, 1, PRICE, LIMITS) is PreCheckout.STALE


async def test_pre_checkout_refuses_a_user_over_the_limits(ledger):
    job = await invoiced(ledger, 3)  # then two free ones start while the invoice is out
    for message_id in (1, 2):
        draft, _ = await ledger.create_draft(new_job(message_id), VideoOptions())
        assert (await ledger.start(draft.id, 1, LIMITS)).outcome is StartOutcome.STARTED
    payload = invoice_payload(job.id, job.invoice_no)
    verdict = await ledger.check_payment(payload, 1, PRICE, LIMITS)
    assert verdict is PreCheckout.TOO_MANY_ACTIVE
    daily = Limits(max_active_per_user=5, daily_per_user=2)
    assert await ledger.check_payment(payload, 1, PRICE, daily) is PreCheckout.DAILY_LIMIT


async def test_changing_options_voids_the_invoice(ledger):
    job = await invoiced(ledger)
    old_payload = invoice_payload(job.id, job.invoice_no)
    assert await ledger.reopen_draft(job.id, 2) is None  # not the asker's
    draft = await ledger.reopen_draft(job.id, 1)
    assert draft is not None
    assert draft.state is JobState.DRAFT
    assert await ledger.check_payment(old_payload, 1, PRICE, LIMITS) is PreCheckout.STALE
    again = (await ledger.start(job.id, 1, LIMITS, price=PRICE)).job
    assert again.invoice_no == job.invoice_no + 1
    # Paying the old invoice anyway: recorded, and owed back.
    outcome, payment, _ = await ledger.record_payment(paid(job, "old"))
    assert outcome is PaymentOutcome.REFUND_DUE
    assert payment.refund_reason is RefundReason.NOT_PAYABLE
    assert (await ledger.get(job.id)).state is JobState.AWAITING_PAYMENT


async def test_a_payment_starts_its_job_once(ledger, clock: Clock):
    job = await invoiced(ledger)
    outcome, payment, started = await ledger.record_payment(paid(job))
    assert outcome is PaymentOutcome.STARTED
    assert started.state is JobState.PREPARING
    assert started.charge_id == "ch-1"
    assert started.generate_at == clock.now
    assert payment.job_id == job.id
    assert payment.refund is RefundState.NONE
    again, same, _ = await ledger.record_payment(paid(job))  # re-delivered update
    assert again is PaymentOutcome.ALREADY_RECORDED
    assert same == payment
    assert [p.charge_id for p in await ledger.payments_of(1)] == ["ch-1"]


async def test_concurrent_deliveries_of_one_payment_record_it_once(ledger):
    job = await invoiced(ledger)
    results = await asyncio.gather(*(ledger.record_payment(paid(job)) for _ in range(5)))
    assert sorted(r[0].value for r in results) == sorted(
        [PaymentOutcome.STARTED.value] + [PaymentOutcome.ALREADY_RECORDED.value] * 4
    )


async def test_a_second_payment_for_a_paid_job_is_owed_back_at_once(ledger):
    job = await invoiced(ledger)
    await ledger.record_payment(paid(job, "first"))
    outcome, second, _ = await ledger.record_payment(paid(job, "second"))
    assert outcome is PaymentOutcome.REFUND_DUE
    assert second.refund is RefundState.DUE
    assert second.refund_reason is RefundReason.ALREADY_PAID
    assert (await ledger.get(job.id)).charge_id == "first"
    assert [p.charge_id for p in await ledger.refunds_to_work(1e12)] == ["second"]


@pytest.mark.parametrize(
    "amount_or_user", [("amount", PRICE + 1), ("user", 2)], ids=["wrong-amount", "other-payer"]
)
async def test_a_payment_that_cannot_start_its_job_is_owed_back(ledger, amount_or_user):
    job = await invoiced(ledger)
    kind, value = amount_or_user
    new = paid(job, amount=value) if kind == "amount" else paid(job, user_id=value)
    outcome, payment, _ = await ledger.record_payment(new)
    assert outcome is PaymentOutcome.REFUND_DUE
    assert payment.refund_reason is RefundReason.NOT_PAYABLE
    assert (await ledger.get(job.id)).state is JobState.AWAITING_PAYMENT


async def paid_and_started(ledger, charge="ch-1"):
    job = await invoiced(ledger)
    _, _, started = await ledger.record_payment(paid(job, charge))
    return started


@pytest.mark.parametrize(
    "state", sorted(s for s in TERMINAL_STATES if s is not JobState.DELIVERED)
)
async def test_a_paid_job_that_ends_without_a_video_owes_its_payment(ledger, clock, state):
    job = await paid_and_started(ledger)
    path = {
        JobState.REJECTED: [JobState.REJECTED],
        JobState.UNDELIVERABLE: [JobState.UNDELIVERABLE],
        JobState.UNCERTAIN: [JobState.SUBMITTING, JobState.UNCERTAIN],
        JobState.FAILED: [JobState.SUBMITTING, JobState.QUEUED, JobState.FAILED],
        JobState.EXPIRED: [JobState.SUBMITTING, JobState.QUEUED, JobState.EXPIRED],
        JobState.TIMED_OUT: [JobState.SUBMITTING, JobState.QUEUED, JobState.TIMED_OUT],
    }[state]
    current = JobState.PREPARING
    for target in path:
        assert await ledger.refunds_to_work(1e12) == []
        fields = {"request_id": "r"} if target is JobState.QUEUED else {}
        assert await ledger.transition(job.id, current, target, **fields) is not None
        current = target
    [due] = await ledger.refunds_to_work(clock.now)
    assert due.charge_id == "ch-1"
    assert due.refund_reason is RefundReason.JOB_ENDED
    assert due.refund_due_at == clock.now


async def test_a_delivered_paid_job_owes_nothing(ledger):
    job = await paid_and_started(ledger)
    await ledger.transition(job.id, JobState.PREPARING, JobState.SUBMITTING)
    await ledger.transition(job.id, JobState.SUBMITTING, JobState.QUEUED, request_id="r")
    await ledger.transition(job.id, JobState.QUEUED, JobState.COMPLETED, output_url="u")
    await ledger.transition(job.id, JobState.COMPLETED, JobState.DELIVERED)
    assert await ledger.refunds_to_work(1e12) == []
    assert (await ledger.payment("ch-1")).refund is RefundState.NONE


async def test_a_refund_is_retried_until_confirmed_then_told_once(ledger, clock: Clock):
    job = await paid_and_started(ledger)
    await ledger.transition(job.id, JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    assert await ledger.next_refund_at() == clock.now
    await ledger.refund_failed("ch-1", clock.now + 30)
    assert await ledger.refunds_to_work(clock.now) == []  # not before its retry time
    assert await ledger.next_refund_at() == clock.now + 30
    [due] = await ledger.refunds_to_work(clock.now + 30)
    assert due.refund_attempts == 1
    await ledger.refund_confirmed("ch-1", now=clock.now + 31)
    assert await ledger.next_refund_at() is None
    [to_tell] = await ledger.refunds_to_work(clock.now + 31)
    assert (to_tell.refund, to_tell.refunded_at) == (RefundState.DONE, clock.now + 31)
    await ledger.refund_told("ch-1")
    assert await ledger.refunds_to_work(1e12) == []
    await ledger.refund_failed("ch-1", clock.now + 99)  # a late failure changes nothing
    assert (await ledger.payment("ch-1")).refund is RefundState.DONE


async def test_an_operator_refund_happens_once(ledger):
    await paid_and_started(ledger)
    assert await ledger.request_refund("nope") is None
    first = await ledger.request_refund("ch-1")
    assert (first.refund, first.refund_reason) == (RefundState.DUE, RefundReason.OPERATOR)
    await ledger.refund_confirmed("ch-1")
    again = await ledger.request_refund("ch-1")
    assert again.refund is RefundState.DONE


async def test_stars_taken_and_refunded(ledger, clock: Clock):
    await paid_and_started(ledger, "a")
    second = await invoiced(ledger, 20, user_id=2)
    await ledger.record_payment(paid(second, "b"))
    await ledger.request_refund("b")
    await ledger.refund_confirmed("b")
    assert await ledger.stars_since(clock.now - 10) == (2 * PRICE, PRICE)
    assert await ledger.stars_since(clock.now + 10) == (0, 0)
