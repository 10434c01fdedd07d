"""Operator alerts: one message per kind of trouble per quiet period, and one when it clears.

State lives in the ledger so a restart neither repeats an alert nor forgets an open one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum

from .errors import LedgerError
from .ports import Ledger

__all__ = ["AlertKind", "AlertSender", "Alerts", "QUIET_SECONDS", "OUTAGE_SECONDS"]

log = logging.getLogger(__name__)

QUIET_SECONDS = 15 * 60.0
#: Segmind failing (5xx, timeouts) this long in a row counts as an outage.
OUTAGE_SECONDS = 3 * 60.0


class AlertKind(StrEnum):
    KEY_REJECTED = "key_rejected"  #: 401 / 403
    OUT_OF_CREDITS = "out_of_credits"  #: 406
    SEGMIND_DOWN = "segmind_down"  #: 5xx / timeouts for OUTAGE_SECONDS
    #: Telegram holds the bot back with a flood wait of 30 s or more (not a bad token:
    #: a revoked token stops the bot, see the token watch).
    TELEGRAM_REFUSING = "telegram_refusing"
    #: Telegram lists a Stars payment the ledger lacks (reconciliation).
    UNKNOWN_CHARGE = "unknown_charge"
    #: A refund has been due for over an hour, or Telegram refuses it.
    REFUND_STUCK = "refund_stuck"
    #: A submit's answer was lost and Segmind's request history did not show the request
    #: within the lookup window: the job is uncertain (maybe paid, no video).
    SUBMIT_LOST = "submit_lost"
    #: The ledger cannot be written (disk full, read-only, database unreachable): users
    #: are told to try again.
    LEDGER_FAILING = "ledger_failing"


#: Tells the operators: (kind, resolved). The chat adapter words it in their language.
AlertSender = Callable[[AlertKind, bool], Awaitable[None]]


class Alerts:
    def __init__(
        self,
        ledger: Ledger,
        send: AlertSender,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._send = send
        self._clock = clock
        self._failing_since: float | None = None
        #: Cache of which kinds are open, so the hot path (every poll) reads no SQL.
        self._open: dict[AlertKind, bool] = {}
        #: When each kind was last sent: the quiet period holds while the ledger cannot
        #: record it (the very trouble LEDGER_FAILING is about).
        self._sent_at: dict[AlertKind, float] = {}
        #: States the ledger could not record: (open, when), written by ``save_unsaved``.
        self._unsaved: dict[AlertKind, tuple[bool, float]] = {}

    async def trouble(self, kind: AlertKind) -> None:
        """Something is wrong: alert unless this kind was alerted within the quiet period."""
        now = self._clock()
        sent_at = self._sent_at.get(kind)
        if self._open.get(kind) and sent_at is not None and now - sent_at < QUIET_SECONDS:
            return
        state = await self._recorded(kind)
        if state is not None and state[0] and now - state[1] < QUIET_SECONDS:
            return
        log.warning("operator alert: %s", kind.value)
        await self._save(kind, True, now)
        self._open[kind] = True
        self._sent_at[kind] = now
        await self._send(kind, False)

    async def _save(self, kind: AlertKind, active: bool, now: float) -> None:
        """Recorded so a restart remembers; an unwritable ledger leaves it in memory
        until :meth:`save_unsaved` (called once writes work again)."""
        try:
            await self._ledger.save_alert_state(kind.value, active, now)
        except LedgerError as exc:
            log.warning("alert %s not recorded in the ledger: %s", kind.value, exc)
            self._unsaved[kind] = (active, now)
            return
        self._unsaved.pop(kind, None)

    async def save_unsaved(self) -> None:
        """Write the states the ledger could not take when they changed; what stays
        unwritable stays in memory for the next call."""
        for kind, (active, at) in list(self._unsaved.items()):
            await self._save(kind, active, at)

    @property
    def unsaved(self) -> frozenset[AlertKind]:
        """Kinds whose current state only this process knows (read-only)."""
        return frozenset(self._unsaved)

    async def _recorded(self, kind: AlertKind) -> tuple[bool, float] | None:
        """The ledger's record of this kind; None when it cannot be read (the database
        is unreachable: the very trouble LEDGER_FAILING is about, which must still go out)."""
        try:
            return await self._ledger.alert_state(kind.value)
        except LedgerError as exc:
            log.warning("alert %s: the ledger %s; going by memory", kind.value, exc)
            return None

    async def cleared(self, kind: AlertKind) -> None:
        """The trouble is over: one line, only if an alert was open."""
        if self._open.get(kind) is False:
            return
        state = await self._recorded(kind)
        if (state is None or not state[0]) and not self._open.get(kind):
            self._open[kind] = False
            return
        self._open[kind] = False
        log.info("operator alert cleared: %s", kind.value)
        await self._save(kind, False, self._clock())
        await self._send(kind, True)

    async def segmind_failed(self) -> None:
        """A temporary Segmind failure; alerts once they have lasted OUTAGE_SECONDS."""
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since >= OUTAGE_SECONDS:
            await self.trouble(AlertKind.SEGMIND_DOWN)

    async def segmind_answered(self) -> None:
        """Segmind answered normally: any outage is over."""
        self._failing_since = None
        await self.cleared(AlertKind.SEGMIND_DOWN)
