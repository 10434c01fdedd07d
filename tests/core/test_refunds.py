"""Stars go back exactly once: the tracker ends a paid job, the ledger makes its refund
due, and Refunds.step() drives it to done and tells the payer — with a fake clock."""

from __future__ import annotations

import random

import pytest

from bot.core.alerts import AlertKind
from bot.core.errors import (
    AlreadyRefunded,
    ChatUnreachable,
    RefundRefused,
    SendFailed,
)
from bot.core.jobs import JobState
from bot.core.options import VideoOptions
from bot.core.payments import (
    NewPayment,
    Payment,
    PaymentOutcome,
    RefundReason,
    RefundState,
    invoice_payload,
)
from bot.core.ports import StarCharge
from bot.core.refunds import (
    REFUSED_RETRY_SECONDS,
    SCAN_SECONDS,
    STUCK_REFUND_SECONDS,
    Reconciliation,
    Refunds,
)
from bot.core.tracker import Tracker
from tests.builders import new_job
from tests.core.conftest import CHAT, LIMITS, USER, Harness, run_until_settled

PRICE = 50


async def paid_job(h: Harness, charge: str = "charge-1"):
    """A photo, Generate with a price, the invoice paid: PREPARING with its charge id."""
    draft, _ = await h.ledger.create_draft(new_job(900, USER, CHAT), VideoOptions())
    invoiced = (await h.ledger.start(draft.id, USER, LIMITS, price=PRICE)).job
    assert invoiced is not None
    outcome, _, job = await h.ledger.record_payment(
        NewPayment(
            charge_id=charge,
            provider_charge_id="",
            user_id=USER,
            chat_id=CHAT,
            payload=invoice_payload(invoiced.id, invoiced.invoice_no),
            amount=PRICE,
        )
    )
    assert outcome is PaymentOutcome.STARTED
    assert job is not None
    return job


async def payment_of(h: Harness, charge: str = "charge-1") -> Payment:
    payment = await h.ledger.payment(charge)
    assert payment is not None
    return payment


@pytest.fixture
def refunds(h: Harness) -> Refunds:
    return Refunds(h.ledger, h.messenger, clock=h.clock, rng=random.Random(0))


def poking_tracker(h: Harness, pokes: list[int]) -> Tracker:
    return h.new_tracker(on_refund_due=lambda: pokes.append(1))


async def test_a_paid_job_refused_by_segmind_is_refunded_once_and_told(h: Harness, refunds):
    pokes: list[int] = []
    h.tracker = poking_tracker(h, pokes)
    job = await paid_job(h)
    h.segmind.fail("submit", 400)
    await run_until_settled(h, job.id)
    assert (await h.job(job.id)).state is JobState.REJECTED
    assert pokes == [1]
    assert await refunds.step() == SCAN_SECONDS
    assert h.messenger.refunded == [(USER, "charge-1")]
    assert h.messenger.told == [("charge-1", job.id)]
    payment = await payment_of(h)
    assert payment.refund is RefundState.DONE
    assert payment.refund_reason is RefundReason.JOB_ENDED
    await refunds.step()  # nothing left: no second refund, no second notice
    assert len(h.messenger.refunded) == 1
    assert len(h.messenger.told) == 1


async def test_a_delivered_paid_job_keeps_its_stars(h: Harness, refunds):
    job = await paid_job(h)
    h.segmind.next_timeline = ["PROCESSING", "COMPLETED"]
    await run_until_settled(h, job.id)
    assert (await h.job(job.id)).state is JobState.DELIVERED
    await refunds.step()
    assert h.messenger.refunded == []


async def test_a_chat_gone_after_paying_still_gets_its_refund(h: Harness, refunds):
    job = await paid_job(h)
    h.messenger.fail("fetch_photo", ChatUnreachable("blocked"))
    await run_until_settled(h, job.id)
    assert (await h.job(job.id)).state is JobState.UNDELIVERABLE
    await refunds.step()
    assert h.messenger.refunded == [(USER, "charge-1")]
    assert h.messenger.told == []  # nothing more is sent to a chat that blocked the bot
    payment = await payment_of(h)
    assert payment.refund is RefundState.DONE
    assert payment.refund_told_at is not None  # nobody to tell: not retried forever


async def test_failed_refunds_back_off_across_a_restart_until_confirmed(h: Harness, refunds):
    job = await paid_job(h)
    await h.ledger.transition(job.id, JobState.PREPARING, JobState.REJECTED)
    h.messenger.fail(
        "refund_stars", SendFailed("500"), SendFailed("flood", retry_after=40), SendFailed("net")
    )

    async def next_try() -> float:
        payment = await payment_of(h)
        assert payment.refund is RefundState.DUE
        assert payment.next_refund_at is not None
        return payment.next_refund_at

    await refunds.step()  # 500
    assert len(h.messenger.refunded) == 1
    assert await next_try() > h.clock.now
    await refunds.step()  # too early: no attempt
    assert len(h.messenger.refunded) == 1
    h.clock.now = await next_try()
    await refunds.step()  # flood control: Telegram's 40 s are kept
    assert len(h.messenger.refunded) == 2
    assert await next_try() >= h.clock.now + 40
    h.clock.advance(39)
    await refunds.step()
    assert len(h.messenger.refunded) == 2
    h.clock.now = await next_try()
    await refunds.step()  # network
    assert len(h.messenger.refunded) == 3
    # The process restarts: the ledger still owes the refund, and a new Refunds pays it.
    restarted = Refunds(h.ledger, h.messenger, clock=h.clock, rng=random.Random(1))
    h.clock.now = await next_try()
    assert await restarted.step() == SCAN_SECONDS
    payment = await payment_of(h)
    assert (payment.refund, payment.refund_attempts) == (RefundState.DONE, 3)
    assert len(h.messenger.refunded) == 4
    assert h.messenger.told == [("charge-1", job.id)]


async def test_a_refund_whose_answer_was_lost_is_confirmed_by_already_refunded(
    h: Harness, refunds
):
    job = await paid_job(h)
    await h.ledger.transition(job.id, JobState.PREPARING, JobState.REJECTED)
    h.messenger.fail("refund_stars", SendFailed("answer lost"), AlreadyRefunded("done before"))
    h.clock.advance(await refunds.step())
    await refunds.step()
    payment = await payment_of(h)
    assert payment.refund is RefundState.DONE
    assert h.messenger.told == [("charge-1", job.id)]


async def test_a_refund_telegram_refuses_waits_for_an_operator(h: Harness):
    refused: list[Payment] = []

    async def on_refused(payment: Payment) -> None:
        refused.append(payment)

    refunds = Refunds(
        h.ledger, h.messenger, clock=h.clock, rng=random.Random(0), on_refused=on_refused
    )
    job = await paid_job(h)
    await h.ledger.transition(job.id, JobState.PREPARING, JobState.REJECTED)
    h.messenger.fail("refund_stars", RefundRefused("CHARGE_NOT_FOUND"))
    await refunds.step()
    assert [p.charge_id for p in refused] == ["charge-1"]
    payment = await payment_of(h)
    assert payment.refund is RefundState.DUE
    assert payment.next_refund_at == h.clock.now + REFUSED_RETRY_SECONDS
    assert h.messenger.told == []


async def test_telling_fails_then_is_told_once_at_a_later_scan(h: Harness, refunds):
    job = await paid_job(h)
    await h.ledger.transition(job.id, JobState.PREPARING, JobState.REJECTED)
    h.messenger.fail("tell_refund", SendFailed("network"))
    await refunds.step()
    assert (await payment_of(h)).refund_told_at is None
    await refunds.step()
    assert len(h.messenger.refunded) == 1  # the refund itself is not repeated
    assert len(h.messenger.told) == 2  # the failed notice, then the one that went out
    assert (await payment_of(h)).refund_told_at is not None


async def test_reconciliation_alerts_on_a_charge_the_ledger_lacks_and_a_stuck_refund(
    h: Harness,
):
    reconciliation = Reconciliation(h.ledger, h.messenger, h.alerts_core, clock=h.clock)
    job = await paid_job(h)
    h.messenger.star_charges = [
        StarCharge("charge-1", USER, PRICE, h.clock.now),  # in the ledger
        StarCharge("stranger", USER, PRICE, h.clock.now - 10),  # not in the ledger
        StarCharge("ancient", USER, PRICE, h.clock.now - 30 * 86_400),  # out of the window
    ]
    await h.ledger.transition(job.id, JobState.PREPARING, JobState.REJECTED)
    findings = await reconciliation.check()
    assert [charge.charge_id for charge in findings.unknown_charges] == ["stranger"]
    assert findings.stuck_refunds == []  # due, but not for an hour yet
    assert h.alerts.sent == [(AlertKind.UNKNOWN_CHARGE, False)]
    h.clock.advance(STUCK_REFUND_SECONDS + 1)
    h.messenger.star_charges = h.messenger.star_charges[:1]
    findings = await reconciliation.check()
    assert [payment.charge_id for payment in findings.stuck_refunds] == ["charge-1"]
    assert h.alerts.sent[1:] == [
        (AlertKind.UNKNOWN_CHARGE, True),
        (AlertKind.REFUND_STUCK, False),
    ]
    refunds = Refunds(h.ledger, h.messenger, clock=h.clock, rng=random.Random(0))
    await refunds.step()
    await reconciliation.check()
    assert h.alerts.sent[-1] == (AlertKind.REFUND_STUCK, True)
