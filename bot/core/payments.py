"""Telegram Stars: what an invoice names, what a payment is, and when Stars go back.

The money rules, in one place:

- An invoice names one job and one of its invoices (``warmth:<job id>:<invoice no>``):
  changing the options voids the older invoices, so an old one no longer pays.
- A payment is recorded once, keyed on ``telegram_payment_charge_id``, in the same
  transaction that starts its job. A payment that cannot start its job (already paid,
  voided, wrong amount or payer) is owed back at once.
- A paid job that ends without a video owes its payment back: the ledger makes the
  refund due in the transaction that ends the job. A due refund is retried until
  Telegram confirms it (``CHARGE_ALREADY_REFUNDED`` confirms too), then the payer is told.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from .jobs import Job, JobState

__all__ = [
    "CURRENCY",
    "NewPayment",
    "Payment",
    "PaymentOutcome",
    "PreCheckout",
    "RefundReason",
    "RefundState",
    "invoice_payload",
    "parse_payload",
    "payability",
]

#: Telegram Stars.
CURRENCY = "XTR"
_PAYLOAD = re.compile(r"^warmth:(\d{1,15}):(\d{1,9})$")


def invoice_payload(job_id: int, invoice_no: int) -> str:
    """The invoice's hidden payload: which job, which of its invoices."""
    return f"warmth:{job_id}:{invoice_no}"


def parse_payload(payload: str) -> tuple[int, int] | None:
    """(job id, invoice no) from a payload we made; None for anything else."""
    match = _PAYLOAD.match(payload)
    return (int(match.group(1)), int(match.group(2))) if match else None


class RefundState(StrEnum):
    NONE = "none"  #: the payment paid for what it bought (or its job is still running)
    DUE = "due"  #: owed back; retried until Telegram confirms
    DONE = "done"  #: Telegram confirmed the refund


class RefundReason(StrEnum):
    """Why Stars go back; with JOB_ENDED the job's own reason says more."""

    JOB_ENDED = "job_ended"  #: the paid job ended without a video
    ALREADY_PAID = "already_paid"  #: a second payment for a job already paid
    NOT_PAYABLE = "not_payable"  #: a voided invoice, another payer, a wrong amount
    OPERATOR = "operator"  #: an operator's /refund


class PaymentOutcome(StrEnum):
    STARTED = "started"  #: this payment started its job
    ALREADY_RECORDED = "already_recorded"  #: a re-delivered update: nothing new
    REFUND_DUE = "refund_due"  #: recorded, and owed back at once


class PreCheckout(StrEnum):
    """The answer to a pre-checkout query: OK, or why this payment must not happen."""

    OK = "ok"
    UNKNOWN = "unknown"  #: not an invoice of ours, or its job is gone
    STALE = "stale"  #: the options changed since: a newer invoice (or none) pays now
    ALREADY_PAID = "already_paid"
    WRONG_AMOUNT = "wrong_amount"
    NOT_YOURS = "not_yours"  #: someone other than the asker is paying
    TOO_MANY_ACTIVE = "too_many_active"
    DAILY_LIMIT = "daily_limit"


@dataclass(frozen=True)
class NewPayment:
    """A ``successful_payment`` as Telegram sent it."""

    charge_id: str
    provider_charge_id: str
    user_id: int
    chat_id: int
    payload: str
    amount: int
    currency: str = CURRENCY


@dataclass(frozen=True)
class Payment(NewPayment):
    """A ledger row: the payment, the job it paid for, and where its refund stands."""

    job_id: int | None = None
    paid_at: float = 0.0
    refund: RefundState = RefundState.NONE
    refund_reason: RefundReason | None = None
    refund_due_at: float | None = None
    refund_attempts: int = 0
    next_refund_at: float | None = None
    refunded_at: float | None = None
    refund_told_at: float | None = None


def payability(job: Job | None, invoice_no: int, user_id: int, amount: int) -> PreCheckout:
    """May ``user_id`` pay ``amount`` for invoice ``invoice_no`` of ``job`` (limits aside)?
    One rule for every ledger backend, at pre-checkout and when the payment arrives."""
    if job is None:
        return PreCheckout.UNKNOWN
    if job.user_id != user_id:
        return PreCheckout.NOT_YOURS
    if job.charge_id is not None or (
        job.state is not JobState.AWAITING_PAYMENT and job.state is not JobState.DRAFT
    ):
        return PreCheckout.ALREADY_PAID
    if job.state is not JobState.AWAITING_PAYMENT or job.invoice_no != invoice_no:
        return PreCheckout.STALE
    if amount != job.price_stars:
        return PreCheckout.WRONG_AMOUNT
    return PreCheckout.OK
