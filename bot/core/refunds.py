"""Gives Stars back: every refund the ledger holds as due, until Telegram confirms it.

The ledger makes a refund due in the same transaction that ends a paid job without a
video (or records a payment that cannot start its job), so nothing here decides
*whether* to refund, only drives each due refund to done and tells the payer. A refund
whose answer was lost is tried again; ``CHARGE_ALREADY_REFUNDED`` then confirms it.
Attempts back off (a minute at most); a crash anywhere repeats at most one attempt.

Several instances on one ledger: each refund is worked by one of them at a time. A step
claims the refunds it works (a lease on the payment's row, see :mod:`bot.core.leases`),
and records each outcome only while it still holds that claim; an instance paused past
its claim finds its write refused and tells nobody (the one that took over does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import schedule
from .alerts import AlertKind, Alerts
from .errors import AlreadyRefunded, ChatUnreachable, LedgerError, RefundRefused, SendFailed
from .jobs import JobState
from .leases import Lease, LeaseLost, instance_id, record_done
from .payments import Payment, RefundState
from .ports import Ledger, Messenger, StarCharge
from .tasks import Background

__all__ = ["Findings", "Reconciliation", "Refunds", "SCAN_SECONDS"]

log = logging.getLogger(__name__)

#: Even unpoked, the ledger is read this often (refunds due after a restart, retries).
SCAN_SECONDS = 30.0
#: First retry after this long; doubles per attempt up to schedule.MAX_BACKOFF_SECONDS.
RETRY_SECONDS = 2.0
#: Telegram refusing a refund outright is for operators: ask again only this rarely.
REFUSED_RETRY_SECONDS = 3600.0
#: Refunds claimed and worked per step (each takes a request or two: well inside a lease).
CLAIM_BATCH = 50


class Refunds(Background):
    task_name = "refunds"

    def __init__(
        self,
        ledger: Ledger,
        messenger: Messenger,
        *,
        on_refused: Callable[[Payment], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        owner: str | None = None,
    ) -> None:
        self._ledger = ledger
        #: This instance's claim on the refunds it works (``owner``: its instance id).
        self._lease = Lease(owner or instance_id())
        self._messenger = messenger
        self._on_refused = on_refused
        self._clock = clock
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        super().__init__()

    def poke(self) -> None:
        """A refund may have become due: look now rather than at the next scan."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                delay = await self.step()
            except LedgerError as exc:  # a fault that passes (PostgreSQL restarting)
                log.warning("refunds: the ledger %s; looking again later", exc)
                delay = SCAN_SECONDS
            except Exception:
                log.exception("refunds: step failed")
                delay = SCAN_SECONDS
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()

    async def stop(self) -> None:
        """Stop, and let go of any refund claimed but not worked, for others at once."""
        await super().stop()
        try:
            await self._ledger.release_refunds(self._lease.owner)
        except Exception as exc:
            log.warning("refunds: release failed (%s: %s); they lapse", type(exc).__name__, exc)

    async def step(self) -> float:
        """Work every refund whose time has come (claimed: no other instance works it
        meanwhile); seconds until the next one may."""
        for payment in await self._ledger.claim_refunds(self._lease, self._clock(), CLAIM_BATCH):
            try:
                await self._work(payment)
            except LeaseLost:
                log.info("refund %s: taken over by another instance", payment.charge_id)
        next_at = await self._ledger.next_refund_at()
        if next_at is None:
            return SCAN_SECONDS
        return min(SCAN_SECONDS, max(0.0, next_at - self._clock()))

    async def _work(self, payment: Payment) -> None:
        if payment.refund is RefundState.DUE and not await self._refund(payment):
            return
        job = await self._ledger.get(payment.job_id) if payment.job_id is not None else None
        try:
            # An undeliverable job's chat blocked or removed the bot: nothing more is sent
            # there (Telegram's own refunded_payment notice still reaches the payer).
            if job is None or job.state is not JobState.UNDELIVERABLE:
                await self._messenger.tell_refund(payment, job)
        except ChatUnreachable:
            pass  # the Stars are back all the same; nobody to tell
        except SendFailed as exc:
            log.info("refund %s: telling the payer failed (%s); next scan", payment.charge_id, exc)
            return
        await record_done(
            lambda lease: self._ledger.refund_told(payment.charge_id, lease=lease), self._lease
        )

    async def _refund(self, payment: Payment) -> bool:
        """One attempt; True once Telegram confirmed (now or before)."""
        try:
            await self._messenger.refund_stars(payment.user_id, payment.charge_id)
        except AlreadyRefunded:
            log.info("refund %s: already refunded: done", payment.charge_id)
        except RefundRefused as exc:
            log.error("refund %s refused by Telegram: %s", payment.charge_id, exc)
            if self._on_refused is not None:
                await self._on_refused(payment)
            await self._ledger.refund_failed(
                payment.charge_id, self._clock() + REFUSED_RETRY_SECONDS, lease=self._lease
            )
            return False
        except (SendFailed, ChatUnreachable) as exc:
            retry_after = getattr(exc, "retry_after", None)
            delay = schedule.backoff_delay(
                payment.refund_attempts + 1, RETRY_SECONDS, retry_after=retry_after, rng=self._rng
            )
            log.warning("refund %s failed (%s); again in %.0fs", payment.charge_id, exc, delay)
            await self._ledger.refund_failed(
                payment.charge_id, self._clock() + delay, lease=self._lease
            )
            return False
        await record_done(
            lambda lease: self._ledger.refund_confirmed(payment.charge_id, lease=lease),
            self._lease,
        )
        log.info(
            "refund %s: %d Stars back to user %s (%s)",
            payment.charge_id,
            payment.amount,
            payment.user_id,
            payment.refund_reason.value if payment.refund_reason else "-",
        )
        return True


#: How often the ledger is compared with Telegram's list of Stars payments.
RECONCILE_SECONDS = 24 * 3600.0
#: How far back each comparison looks.
RECONCILE_WINDOW_SECONDS = 8 * 24 * 3600.0
#: A refund due longer than this is stuck: operators hear about it.
STUCK_REFUND_SECONDS = 3600.0


@dataclass(frozen=True)
class Findings:
    unknown_charges: list[StarCharge]
    stuck_refunds: list[Payment]


class Reconciliation(Background):
    """At start and daily: every Stars payment Telegram lists is in the ledger, and no
    refund has been due for over an hour. Either finding alerts the operators."""

    task_name = "reconciliation"

    def __init__(
        self,
        ledger: Ledger,
        messenger: Messenger,
        alerts: Alerts,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._messenger = messenger
        self._alerts = alerts
        self._clock = clock
        super().__init__()

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except (SendFailed, ChatUnreachable) as exc:
                log.warning("reconciliation: Telegram's list unavailable (%s)", exc)
            except LedgerError as exc:
                log.warning("reconciliation: the ledger %s", exc)
            except Exception:
                log.exception("reconciliation failed")
            await asyncio.sleep(RECONCILE_SECONDS)

    async def check(self) -> Findings:
        now = self._clock()
        listed = await self._messenger.star_payments(now - RECONCILE_WINDOW_SECONDS)
        unknown = [
            charge for charge in listed if await self._ledger.payment(charge.charge_id) is None
        ]
        stuck = await self._ledger.refunds_due_before(now - STUCK_REFUND_SECONDS)
        for charge in unknown:
            log.warning(
                "reconciliation: Telegram lists charge %s (%d Stars from user %s) that the "
                "ledger lacks",
                charge.charge_id,
                charge.amount,
                charge.user_id,
            )
        for payment in stuck:
            log.warning(
                "reconciliation: refund of %s (%d Stars to user %s) due since %.0f",
                payment.charge_id,
                payment.amount,
                payment.user_id,
                payment.refund_due_at or 0,
            )
        if unknown:
            await self._alerts.trouble(AlertKind.UNKNOWN_CHARGE)
        else:
            await self._alerts.cleared(AlertKind.UNKNOWN_CHARGE)
        if stuck:
            await self._alerts.trouble(AlertKind.REFUND_STUCK)
        else:
            await self._alerts.cleared(AlertKind.REFUND_STUCK)
        return Findings(unknown, stuck)
