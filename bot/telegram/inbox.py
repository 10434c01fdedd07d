"""The inbox: an update Telegram handed over is handled, even if the process dies first.

In webhook mode Telegram gets its 200 before the handlers run, and never sends that
update again; a process killed (or crashing) before its handlers finish would lose it:
a photo without its keyboard, an invoice never sent, a paid Star with no job. So:

1. **Receipt.** :meth:`Inbox.receive` claims the update id *and* stores the update's
   JSON, held by this instance (its lease, :mod:`bot.core.leases`), in one ledger
   statement; only then does the webhook answer 200 (503 when the ledger cannot write).
2. **Handled.** :class:`InboxUpdateProcessor` (PTB's update-processor seam: it awaits
   every update's whole handling) marks an update handled once PTB is done with it, a
   handler that raised included (the error handler has answered the user). Marks are
   written by one background writer, many in one statement when they come together. A
   process that dies mid-handling writes no mark.
3. **Recovery.** While this instance holds updates it renews their leases every
   :data:`~bot.core.leases.RENEW_SECONDS`. At start and every
   :data:`~bot.core.leases.TAKEOVER_SCAN_SECONDS`, it takes stored updates nobody
   handled whose holder let go or lapsed (a dead instance's, 30 s after its last
   renewal; on SQLite the one process owns the file, so at start all of them) and puts
   each on PTB's queue once (the claim is one fenced statement: PostgreSQL's
   ``FOR UPDATE SKIP LOCKED``, so two instances never both take one). An update is
   taken at most :data:`MAX_ATTEMPTS` times in all: one that kills its process every
   time is given up, not a crash loop.

Polling mode has the same hole: PTB's Updater queues what ``getUpdates`` returned and
its next ``getUpdates`` (at once) confirms it to Telegram, long before the handlers are
done. So the getUpdates request is an :class:`InboxRequest`: the updates it fetched are
stored (step 1) before PTB sees them, all of a batch at once, and the Updater asks for
more only once they are. (Stored one by one, as PTB queues them, a burst of presses and
photos came in no faster than one ledger write after another: at 50 updates a second
every reply waited for that queue, docs/benchmarks.md.) PTB's update queue is an
:class:`InboxQueue`, which stores anything queued that was not stored yet.

Handlers are idempotent for a re-delivered update (drafts keyed on the message, one
start per job, payments keyed on their charge id), so an update handled again after a
stall rather than a death does nothing twice. Handled rows are pruned after a day with
the receipts (Telegram never resends that late).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from telegram import Bot, Update
from telegram.ext import SimpleUpdateProcessor
from telegram.request import HTTPXRequest

from ..core.errors import LedgerWriteFailed
from ..core.leases import RENEW_SECONDS, TAKEOVER_SCAN_SECONDS, Lease
from ..core.ports import Ledger, StoredUpdate
from ..core.tasks import cancel_and_wait

__all__ = ["MAX_ATTEMPTS", "Inbox", "InboxQueue", "InboxRequest", "InboxUpdateProcessor"]

log = logging.getLogger(__name__)

#: An update is taken at most this often (its receipt counts): then it is given up.
MAX_ATTEMPTS = 3
#: Stored updates taken by one recovery statement (the scan repeats while full).
RECOVER_BATCH = 100
#: Handled marks written by one statement at most.
MARK_BATCH = 500
#: After a failed write of handled marks, the next try waits this long.
MARK_RETRY_SECONDS = 1.0


class Inbox:
    """This instance's side of the inbox: receive, mark handled, recover.

    Made before the ledger is open (PTB's update processor needs it at build time);
    :meth:`start` wires it to the ledger and PTB's update queue.
    """

    def __init__(
        self,
        owner: str,
        *,
        clock: Callable[[], float] = time.time,
        on_ledger_failed: Callable[[], None] | None = None,
    ) -> None:
        self._lease = Lease(owner)
        self._clock = clock
        #: Told when a polled update could not be stored (it is handled all the same).
        self._on_ledger_failed = on_ledger_failed
        self._ledger: Ledger | None = None
        self._bot: Bot | None = None
        self._enqueue: Callable[[Update], Awaitable[None]] | None = None
        #: Updates stored (or taken) by this instance whose handling has not ended.
        self._in_hand: set[int] = set()
        #: Polled updates the ledger could not store: handled unstored, told once.
        self._unstored: set[int] = set()
        #: Handled, not yet written.
        self._marks: list[int] = []
        self._marked = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._scanner: asyncio.Task[None] | None = None

    @property
    def in_hand(self) -> int:
        """Updates this instance holds and has not finished handling."""
        return len(self._in_hand)

    async def start(
        self, ledger: Ledger, bot: Bot, enqueue: Callable[[Update], Awaitable[None]]
    ) -> None:
        """Take back what died unhandled (at once: on SQLite that is every such update),
        then keep leases and look for stranded updates in the background."""
        self._ledger = ledger
        self._bot = bot
        self._enqueue = enqueue
        self._writer = asyncio.create_task(self._write_marks(), name="inbox-marks")
        await self.recover()
        self._scanner = asyncio.create_task(self._scan(), name="inbox-scan")

    async def stop(self) -> None:
        """At a clean stop, after PTB has handled everything it had: write the last
        marks. Anything still unhandled keeps its lease, and is taken once it lapses."""
        await cancel_and_wait(self._scanner)
        await cancel_and_wait(self._writer)
        self._scanner = self._writer = None
        while self._marks and self._ledger is not None:
            if not await self._write_batch():
                break

    # -- receipt and handling ----------------------------------------------------------

    async def receive(self, update_id: int, body: str) -> bool:
        """Claim and store an update (raises LedgerWriteFailed); False: already taken."""
        if self._ledger is None:
            raise RuntimeError("inbox not started")
        first = await self._ledger.receive_update(update_id, body, self._lease, self._clock())
        if first:
            self._in_hand.add(update_id)
        return first

    async def store_polled(self, update: Update) -> None:
        """Before an update PTB's Updater fetched is queued (and so confirmed to
        Telegram): store it, unless it was stored already (its getUpdates batch, the
        webhook, recovery). A re-delivered one (stored before) goes on unstored, as
        before the inbox: handlers are idempotent. If the ledger cannot store it, it is
        handled unstored too (operators are alerted)."""
        if self._ledger is None or update.update_id in self._in_hand:
            return
        if update.update_id in self._unstored:
            self._unstored.discard(update.update_id)  # its batch said so already
            return
        await self._store(update.update_id, update.to_json())

    async def store_batch(self, updates: list[Any]) -> None:
        """What one getUpdates returned, before PTB sees any of it: every update's write
        is queued to the ledger at once, so the batch costs about one write's wait, not
        one per update in turn."""
        if self._ledger is None:
            return
        fresh = [
            (data["update_id"], data)
            for data in updates
            if isinstance(data, dict)
            and isinstance(data.get("update_id"), int)
            and data["update_id"] not in self._in_hand
        ]
        # Telegram's own JSON: what Update.de_json reads back at recovery.
        await asyncio.gather(
            *(self._store(update_id, json.dumps(data)) for update_id, data in fresh)
        )

    async def _store(self, update_id: int, body: str) -> None:
        try:
            await self.receive(update_id, body)
        except LedgerWriteFailed as exc:
            log.warning("update %s handled without a stored copy: %s", update_id, exc)
            self._unstored.add(update_id)
            if self._on_ledger_failed is not None:
                self._on_ledger_failed()

    def handled(self, update_id: int) -> None:
        """PTB is done with this update: its mark is written soon (no wait here)."""
        if update_id not in self._in_hand:
            return  # not the inbox's (a polled update)
        self._in_hand.discard(update_id)
        self._marks.append(update_id)
        self._marked.set()

    async def _write_marks(self) -> None:
        while True:
            await self._marked.wait()
            self._marked.clear()
            while self._marks:
                if not await self._write_batch():
                    await asyncio.sleep(MARK_RETRY_SECONDS)

    async def _write_batch(self) -> bool:
        assert self._ledger is not None
        batch = self._marks[:MARK_BATCH]
        try:
            await self._ledger.updates_handled(batch, self._clock())
        except Exception as exc:
            log.warning(
                "inbox: %d handled mark(s) not written (%s); trying again",
                len(batch),
                type(exc).__name__,
            )
            return False
        del self._marks[: len(batch)]
        return True

    # -- recovery ----------------------------------------------------------------------

    async def recover(self) -> int:
        """Take every stranded update (in batches) and put each on PTB's queue; how many."""
        assert self._ledger is not None
        taken = 0
        while True:
            batch = await self._ledger.claim_stranded_updates(
                self._lease, self._clock(), max_attempts=MAX_ATTEMPTS, limit=RECOVER_BATCH
            )
            for stored in batch:
                await self._redo(stored)
            taken += len(batch)
            if len(batch) < RECOVER_BATCH:
                return taken

    async def _redo(self, stored: StoredUpdate) -> None:
        assert self._enqueue is not None
        try:
            data: Any = json.loads(stored.body)
            update = Update.de_json(data, self._bot)
        except Exception as exc:  # stored by us from a valid update: should never happen
            log.error("inbox: update %s cannot be read back (%s)", stored.update_id, exc)
            return
        log.warning(
            "update %s: its handling was interrupted (its instance died); "
            "handling it again (attempt %d of %d)",
            stored.update_id,
            stored.attempts,
            MAX_ATTEMPTS,
        )
        self._in_hand.add(stored.update_id)
        await self._enqueue(update)

    async def _scan(self) -> None:
        """Recover every TAKEOVER_SCAN_SECONDS; renew what is in hand every RENEW_SECONDS.
        A ledger fault is logged and tried again next time."""
        scans_per_renewal = max(1, round(RENEW_SECONDS / TAKEOVER_SCAN_SECONDS))
        scans = 0
        while True:
            await asyncio.sleep(TAKEOVER_SCAN_SECONDS)
            scans += 1
            try:
                if scans % scans_per_renewal == 0 and self._in_hand:
                    assert self._ledger is not None
                    await self._ledger.renew_update_leases(self._lease, self._clock())
                await self.recover()
            except Exception as exc:
                log.warning("inbox: renewal or recovery failed (%s: %s)", type(exc).__name__, exc)


class InboxQueue(asyncio.Queue[object]):
    """PTB's update queue: an update put on it is stored first
    (:meth:`Inbox.store_polled`; PTB's Updater awaits ``put`` for each update before it
    confirms them to Telegram)."""

    def __init__(self, inbox: Inbox) -> None:
        super().__init__()
        self._inbox = inbox

    async def put(self, item: object) -> None:
        if isinstance(item, Update):
            await self._inbox.store_polled(item)
        await super().put(item)


class InboxRequest(HTTPXRequest):
    """The request PTB's Updater polls with: what ``getUpdates`` returned is stored
    (:meth:`Inbox.store_batch`) before the Updater queues it, and so before its next
    ``getUpdates`` confirms it to Telegram. A batch that cannot be stored is handled
    unstored, as :meth:`Inbox.store_polled` does."""

    def __init__(self, inbox: Inbox, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._inbox = inbox

    async def do_request(
        self, url: str, method: str, *args: Any, **kwargs: Any
    ) -> tuple[int, bytes]:
        code, payload = await super().do_request(url, method, *args, **kwargs)
        if code == HTTPStatus.OK and url.endswith("/getUpdates"):
            try:
                answer = json.loads(payload)
            except ValueError:
                answer = None  # PTB says what is wrong with it
            if isinstance(answer, dict) and isinstance(answer.get("result"), list):
                await self._inbox.store_batch(answer["result"])
        return code, payload


class InboxUpdateProcessor(SimpleUpdateProcessor):
    """PTB's update processor (up to ``max_concurrent_updates`` at once) that tells the
    inbox when an update's handling is over: PTB's ``process_update`` runs every handler
    and hands their errors to the error handler, so returning means handled. (That holds
    for blocking handlers, PTB's default and the only kind here: a ``block=False`` one
    would still run when its update is marked.)"""

    def __init__(self, max_concurrent_updates: int, inbox: Inbox) -> None:
        super().__init__(max_concurrent_updates)
        self._inbox = inbox

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        # Not on cancellation (a BaseException): the process is stopping, and the update
        # must stay unhandled for whoever takes it next.
        try:
            await coroutine
        except Exception:
            self._handled(update)
            raise
        self._handled(update)

    def _handled(self, update: object) -> None:
        if isinstance(update, Update):
            self._inbox.handled(update.update_id)
