"""Operator alerts: one message per kind of trouble per quiet period, and one when it clears.

State lives in the ledger so a restart neither repeats an alert nor forgets an open one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum

from . import texts
from .store import JobStore

__all__ = ["AlertKind", "Alerts", "QUIET_SECONDS", "OUTAGE_SECONDS"]

log = logging.getLogger(__name__)

QUIET_SECONDS = 15 * 60.0
#: Segmind failing (5xx, timeouts) this long in a row counts as an outage.
OUTAGE_SECONDS = 3 * 60.0


class AlertKind(StrEnum):
    KEY_REJECTED = "key_rejected"  #: 401 / 403
    OUT_OF_CREDITS = "out_of_credits"  #: 406
    SEGMIND_DOWN = "segmind_down"  #: 5xx / timeouts for OUTAGE_SECONDS
    TELEGRAM_REFUSING = "telegram_refusing"  #: Telegram refuses the bot's token


class Alerts:
    def __init__(
        self,
        store: JobStore,
        send: Callable[[str], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._send = send
        self._clock = clock
        self._failing_since: float | None = None
        #: Cache of which kinds are open, so the hot path (every poll) reads no SQL.
        self._open: dict[AlertKind, bool] = {}

    async def trouble(self, kind: AlertKind) -> None:
        """Something is wrong: alert unless this kind was alerted within the quiet period."""
        now = self._clock()
        state = await self._store.alert_state(kind.value)
        if state is not None and state[0] and now - state[1] < QUIET_SECONDS:
            return
        log.warning("operator alert: %s", kind.value)
        await self._store.save_alert_state(kind.value, True, now)
        self._open[kind] = True
        await self._send(texts.alert(kind.value))

    async def cleared(self, kind: AlertKind) -> None:
        """The trouble is over: one line, only if an alert was open."""
        if self._open.get(kind) is False:
            return
        state = await self._store.alert_state(kind.value)
        if state is None or not state[0]:
            self._open[kind] = False
            return
        self._open[kind] = False
        log.info("operator alert cleared: %s", kind.value)
        await self._store.save_alert_state(kind.value, False, self._clock())
        await self._send(texts.alert_cleared(kind.value))

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
