"""Who may start a job now: the per-user limits and what starting a job can answer.

The ledger counts (a restart must not reset a limit); this module names the rules and
the outcomes, so handlers and every ledger backend speak the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .jobs import Job

__all__ = ["Limits", "StartOutcome", "StartResult", "utc_day_start", "DAY_SECONDS"]

DAY_SECONDS = 86_400.0


@dataclass(frozen=True)
class Limits:
    max_active_per_user: int
    daily_per_user: int  #: 0 = no cap


class StartOutcome(StrEnum):
    STARTED = "started"  #: this call moved the job to PREPARING
    INVOICE = "invoice"  #: priced: the job now awaits its payment (send the invoice)
    AWAITING_PAYMENT = "awaiting_payment"  #: an invoice is already out for it
    ALREADY_STARTED = "already_started"  #: an earlier press (or re-delivery) did
    NOT_FOUND = "not_found"
    NOT_OWNER = "not_owner"
    TOO_MANY_ACTIVE = "too_many_active"
    DAILY_LIMIT = "daily_limit"


@dataclass(frozen=True)
class StartResult:
    outcome: StartOutcome
    job: Job | None = None


def utc_day_start(now: float) -> float:
    """Start of the UTC day containing ``now`` (daily limits reset then)."""
    return now - (now % DAY_SECONDS)
