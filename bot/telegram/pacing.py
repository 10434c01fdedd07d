"""Telegram's pace, in one module: the bot's 30 a second, a group's 20 a minute, a chat's
one a second, and what to do when Telegram says "retry after" anyway.

Every request passes :class:`PriorityRateLimiter` (PTB's rate-limiter seam), so it is
also the one place a short flood wait (``RetryAfter``) is waited out and the request
made again, for handlers and tracker alike; a long one (over
``MAX_FLOOD_WAIT_SECONDS``) is raised to the caller, which knows whether the request is
worth repeating. A flood wait of ``LONG_FLOOD_WAIT_SECONDS`` or more is told to
``on_flood(True)`` (the operators' alert), and the next answered request to
``on_flood(False)``. :class:`ChatPacer` keeps every message to a chat — handlers' replies
and the tracker's alike — to that chat's pace; callback answers are never held up.

Why not PTB's ``AIORateLimiter``: the benchmark (docs/benchmarks.md) showed two things it
cannot do. Its leaky bucket lets a burst through on top of the steady rate (59 messages
in one second against Telegram's 30), and its queue is first come, first served, so
with a thousand jobs finishing together the videos waited behind status edits.

Here every request to a chat holds a place in a budget from the moment it is let go
until one second after its answer came back. Telegram sees a request at some moment
between those two, so however the requests bunch up on the way (a busy event loop, the
HTTP pool), no one-second window at Telegram can hold more than ``per_second`` of them:
if it held more, the last of them to be let go would have found them all in its budget.
Each group keeps to ``group_per_minute`` the same way, over sixty seconds.

Waiting requests are served by priority: deliveries, then answers to what a user just
did, then ``Priority.LOW`` (status edits, chat actions, 👀) only when nothing else waits
and more places stay free than the urgent ones will want while it is on its way: one in
six, or as many as urgent requests were let go in the last second if that is more (a
flow of keyboards wants as many places in the next second as in the last, and a place a
LOW request takes is gone for a second and more).
Pass the priority as ``rate_limit_args``. Requests without a chat (getUpdates, getFile,
answerCallbackQuery) are not limited by the budget, but their flood waits are handled
the same way. A message to a chat first waits for that chat's turn (the most urgent
first there too), then for its group's budget, then for the bot's.

Several instances on one PostgreSQL ledger share one bot token, so they share its
budget: :meth:`PriorityRateLimiter.share` hands the limiter a :class:`SharedBudget` (the
ledger), and every request to a chat then also holds one of the bot's places there, and
every chat message its chat's turn there, under the same rule (held from being let go
until a second — a chat's gap — after the answer, in the database's one clock). The
in-memory budgets stay in front of it, so waiting happens here, by priority, and the
database is asked only for what can go now: one statement takes places for every waiter
that fits, and the places given back meanwhile go back in one statement. A chat's shared
turn is asked for once a place is had (if another instance's message to that chat is on
its way, the place goes back to this process's stock and the request queues again), so
a turn is held only while its message travels. Priorities hold across instances too: a
``Priority.LOW`` request takes a shared place only while a few stay free for anyone's
urgent ones (``LOW_RESERVE_SHARE``). An instance that dies holding places or
turns frees them after ``SHARED_FLIGHT_SECONDS``; a shared budget that cannot be reached
leaves each process to its own (a warning at most once a minute). A bot on SQLite is
alone and never calls :meth:`~PriorityRateLimiter.share`: nothing changes for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
import time
import warnings
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from datetime import timedelta
from enum import IntEnum
from typing import Any, Protocol, runtime_checkable

from telegram.error import RetryAfter, TelegramError
from telegram.ext import BaseRateLimiter
from telegram.warnings import PTBDeprecationWarning

from ..core.errors import LedgerReadFailed, LedgerWriteFailed
from ..core.tasks import cancel_and_wait

__all__ = [
    "ChatPacer",
    "FloodListener",
    "PACED_METHODS",
    "Priority",
    "PriorityRateLimiter",
    "SharedBudget",
    "TELEGRAM_PER_SECOND",
    "retry_after_seconds",
]

log = logging.getLogger(__name__)

#: Telegram's overall limit: about 30 messages a second.
TELEGRAM_PER_SECOND = 30
#: A request held up by flood control waits this long at most, and is made at most
#: ``FLOOD_ATTEMPTS`` times: a keyboard that comes late beats none, but a long ban is
#: not waited out inside one request (the tracker backs off and tries again later).
MAX_FLOOD_WAIT_SECONDS = 60.0
FLOOD_ATTEMPTS = 3
#: A flood wait this long is no passing hiccup: operators hear about it.
LONG_FLOOD_WAIT_SECONDS = 30.0
#: Telegram's per-chat pace: about one message a second in a private chat, twenty a
#: minute in a group, counted from the previous message's answer (:class:`ChatPacer`).
PRIVATE_CHAT_GAP = 1.0
GROUP_CHAT_GAP = 3.0
_PACER_MAX_CHATS = 10_000
#: A status edit is skipped while this many requests wait for Telegram (about a second's
#: worth): it would wait behind keyboards and videos, and the job's next poll waits for it.
STATUS_EDIT_MAX_BACKLOG = TELEGRAM_PER_SECOND

#: The Bot API methods that put a message in a chat (or change one): each takes the
#: chat's turn (:class:`ChatPacer`). Callback answers, chat actions, getFile and
#: deletions are no messages and are never held up by a chat's pace.
PACED_METHODS = frozenset(
    name.lower()
    for name in (
        "sendMessage",
        "sendPhoto",
        "sendVideo",
        "sendDocument",
        "sendAnimation",
        "sendAudio",
        "sendVoice",
        "sendVideoNote",
        "sendSticker",
        "sendMediaGroup",
        "sendInvoice",
        "sendLocation",
        "sendContact",
        "sendPoll",
        "sendDice",
        "copyMessage",
        "forwardMessage",
        "editMessageText",
        "editMessageCaption",
        "editMessageMedia",
        "editMessageReplyMarkup",
    )
)

#: A place in the shared budget, or a chat's turn there, is held at most this long while
#: its message is on its way: an instance that died holding it frees it after that.
SHARED_FLIGHT_SECONDS = 30.0
#: Bounds on one wait for the shared budget before asking it again: another instance may
#: give a place back early (its message failed), and a clock never waits for nothing.
_SHARED_WAIT_MIN = 0.01
_SHARED_WAIT_MAX = 0.5
#: With every place busy, ask again no sooner than this: places free one by one (a
#: second after each answer), so waiting a little lets one statement take several.
_SHARED_PLACES_WAIT_MIN = 0.05
#: A chat's turn held by a message on its way at another instance is asked for again
#: after 10 ms, 20 ms, … up to this: a conversation's next reply is rarely late by much,
#: and a chat that many instances write to at once does not cost a statement every 10 ms.
_SHARED_TURN_POLL_MAX = 1.0
#: The shared budget unreachable: this process keeps to its own budget meanwhile, and
#: says so at most once a minute.
_SHARED_FAULT_LOG_SECONDS = 60.0

#: The check :func:`checked_before_sending` set for the requests of this task.
_check_before_sending: contextvars.ContextVar[Callable[[], Awaitable[None]] | None] = (
    contextvars.ContextVar("check_before_sending", default=None)
)


@contextlib.contextmanager
def checked_before_sending(check: Callable[[], Awaitable[None]] | None) -> Iterator[None]:
    """Requests made inside (in this task) await ``check`` once their place in the budget
    and their chat's turn are held, right before they leave; if it raises, the request
    is not made. A job's lease is confirmed there, after the pace's wait and not before
    it: a video queued behind a thousand others while its lease lapsed and another
    instance took the job would otherwise go out twice."""
    token = _check_before_sending.set(check)
    try:
        yield
    finally:
        _check_before_sending.reset(token)


#: Deliveries first across instances too: a LOW request (a status edit) takes a shared
#: place only while one in this many (5 of 30) stays free for any instance's urgent ones.
LOW_RESERVE_SHARE = 6

#: What PTB's request callback returns: Telegram's ``result``.
_Answer = bool | dict[str, Any] | list[dict[str, Any]]
#: Told True when Telegram starts limiting the bot for long, False when it stops.
FloodListener = Callable[[bool], Awaitable[None]]


def retry_after_seconds(error: RetryAfter) -> float:
    """Seconds to wait; PTB 22 warns that ``retry_after`` will become a timedelta."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


#: A place in the shared budget: its number and the moment it is held until (the proof
#: of holding it when it is given back).
SharedPlace = tuple[int, float]


@runtime_checkable
class SharedBudget(Protocol):
    """The bot token's budget kept where every instance sees it (the PostgreSQL ledger).

    Times are the budget's own clock, so instances on different machines agree. A call
    that cannot reach it raises the core's ``LedgerWriteFailed``/``LedgerReadFailed``.
    """

    async def take_send_places(
        self, limit: int, count: int, flight: float, reserve: int = 0
    ) -> tuple[list[SharedPlace], float | None]:
        """Up to ``count`` of the first ``limit`` places free now, held ``flight`` seconds,
        leaving ``reserve`` of the free ones to others; and when none was free, the
        seconds until one frees (None: unknown)."""

    async def give_back_send_places(self, places: Sequence[SharedPlace], span: float) -> None:
        """The places come free ``span`` seconds from now."""

    async def take_chat_turn(self, chat_id: int, flight: float) -> tuple[float | None, float]:
        """The chat's turn (its proof) if free now, else None and the seconds until it frees."""

    async def end_chat_turn(self, chat_id: int, held: float, gap: float) -> None:
        """The chat's next turn comes ``gap`` seconds from now."""


class Priority(IntEnum):
    DELIVERY = 0  #: a job's video or final outcome: what the user paid and waited for
    HIGH = 1  #: keyboards, answers to what a user just did, operator alerts
    LOW = 2  #: status edits, chat actions, clean-ups: nice to have, first to wait


class _Window:
    """The times of the events within the last ``span`` seconds (requests answered, or
    let go), oldest first: what a budget counts, and when the next one leaves it."""

    def __init__(self, span: float, clock: Callable[[], float]) -> None:
        self._span = span
        self._clock = clock
        self._times: deque[float] = deque()

    def _prune(self) -> None:
        now = self._clock()
        while self._times and now - self._times[0] >= self._span:
            self._times.popleft()

    def add(self) -> None:
        self._times.append(self._clock())

    def __len__(self) -> int:
        self._prune()
        return len(self._times)

    def fewer_than_at(self, count: int) -> float | None:
        """When fewer than ``count`` will be left in the window (None: already so, or
        never)."""
        if count <= 0:
            return None
        self._prune()
        leaving = len(self._times) - count  # this many must leave, and then one more
        return self._times[leaving] + self._span if leaving >= 0 else None

    def next_leaves_at(self) -> float | None:
        """When the oldest leaves the window (None: it is empty)."""
        return self.fewer_than_at(len(self))


class _Budget:
    """Requests in flight plus requests answered within the last ``span`` seconds."""

    def __init__(self, limit: int, span: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.span = span
        self._clock = clock
        self.in_flight = 0
        self._answered = _Window(span, clock)
        self._released = asyncio.Event()

    def _used(self) -> int:
        return self.in_flight + len(self._answered)

    @property
    def idle(self) -> bool:
        return self._used() == 0

    async def wait_for_room(self) -> None:
        """Return once one more request fits (the caller takes it before awaiting again)."""
        while self._used() >= self.limit:
            self._released.clear()
            leaves_at = self._answered.next_leaves_at()
            if leaves_at is not None:
                # The oldest answer leaves the window then; a new answer frees nothing.
                await asyncio.sleep(leaves_at - self._clock())
            else:
                # All of them are still on the wire: room comes one span after an answer.
                await self._released.wait()

    def free(self) -> int:
        """Places free now."""
        return self.limit - self._used()

    async def wait_for_change(self, until: float | None = None) -> None:
        """Until a place may have come free, :meth:`released` was called, or the clock
        reaches ``until``."""
        self._released.clear()
        deadlines = [t for t in (until, self._answered.next_leaves_at()) if t is not None]
        timeout = min(deadlines) - self._clock() if deadlines else None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._released.wait()

    def take(self) -> None:
        self.in_flight += 1

    def give_back(self) -> None:
        self.in_flight -= 1
        self._answered.add()
        self._released.set()

    def released(self) -> None:
        """A place taken back unused (in_flight already lowered): room at once."""
        self._released.set()


class PriorityRateLimiter(BaseRateLimiter[Priority]):
    def __init__(
        self,
        per_second: int = TELEGRAM_PER_SECOND,
        group_per_minute: int = 20,
        clock: Callable[[], float] = time.monotonic,
        *,
        on_flood: FloodListener | None = None,
        on_answer: Callable[[TelegramError | None], None] | None = None,
    ) -> None:
        self._clock = clock
        #: Every chat's pace; the messenger asks it whether a status edit may go now.
        self.pacer = ChatPacer(
            clock, backlog=lambda: self.backlog, room_for_low=lambda: self.room_for_low
        )
        self._on_flood = on_flood
        #: Told of every answer from Telegram, None for success (health and metrics).
        self._on_answer = on_answer
        self._flooded = False
        self._global = _Budget(per_second, 1.0, clock)
        self._group_per_minute = group_per_minute
        self._groups: dict[int, _Budget] = {}
        self._group_locks: dict[int, asyncio.Lock] = {}
        self._queue: list[tuple[int, int, asyncio.Future[SharedPlace | None]]] = []
        self._order = itertools.count()
        self._waiting = 0
        self._dispatcher: asyncio.Task[None] | None = None
        self._shared: SharedBudget | None = None
        #: Places taken from the shared budget and not yet handed to a waiter.
        self._stock: list[SharedPlace] = []
        #: Places whose requests are done, to give back in the next statement.
        self._returns: list[SharedPlace] = []
        self._returner: asyncio.Task[None] | None = None
        self._shared_fault_logged_at = float("-inf")
        #: Chat turns whose end could not be written (the shared budget unreachable):
        #: chat -> (the turn's proof, when the chat's next turn comes, when the turn
        #: lapses anyway). Ended before this process asks for that chat's turn again, so
        #: a database blip does not hold the chat's next reply for a whole flight.
        self._unended_turns: dict[int, tuple[float, float, float]] = {}
        #: Shared places a LOW request leaves free for other instances' urgent ones.
        self._low_reserve = max(1, per_second // LOW_RESERVE_SHARE)
        #: This process's places a LOW request leaves free for the urgent ones that come
        #: while it is on its way: one in six (5 of 30), or as many as urgent requests
        #: were let go in the last second if that is more (:meth:`_low_reserve_now`).
        #: One in six alone was too few: at 25 photos a second (the benchmark's N = 100)
        #: the keyboards hold 25–26 of the 30 places, each until a second after its
        #: answer, so a 👀 or a status edit let go whenever no keyboard waited at that
        #: instant took the place the next keyboard needed, and keyboards waited up to a
        #: second for room: photo→keyboard p95 177–200 ms, against 29–107 ms with
        #: reactions and edits off (single runs). The last second's urgent flow is what
        #: the next second most likely brings; with none, one in six is all that is kept.
        self._local_low_reserve = per_second // LOW_RESERVE_SHARE
        #: When urgent (above LOW) requests were let go within the last second.
        self._urgent_let_go = _Window(self._global.span, clock)

    def _low_reserve_now(self) -> int:
        """Places a LOW request leaves free now (the rule at ``_local_low_reserve``)."""
        return max(self._local_low_reserve, len(self._urgent_let_go))

    def share(self, budget: SharedBudget) -> None:
        """Keep to ``budget`` too: the one every instance of this bot token shares."""
        self._shared = budget

    @property
    def shares_budget(self) -> bool:
        """Whether a shared budget is kept to (PostgreSQL), not this process's alone."""
        return self._shared is not None

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        await cancel_and_wait(self._dispatcher)
        self._dispatcher = None
        await cancel_and_wait(self._returner)
        self._returner = None
        if self._shared is not None:  # let other instances have them now
            places, self._returns = self._returns, []
            spare, self._stock = self._stock, []
            # RuntimeError: the ledger was closed first; its places lapse by themselves.
            with contextlib.suppress(LedgerWriteFailed, LedgerReadFailed, RuntimeError):
                await self._shared.give_back_send_places(places, 1.0)
                await self._shared.give_back_send_places(spare, 0.0)

    @property
    def backlog(self) -> int:
        """Requests waiting for a place now (a caller that gave up no longer counts)."""
        return self._waiting

    @property
    def room_for_low(self) -> bool:
        """Whether a LOW request would be let go at once (nothing waits before it)."""
        return self._waiting == 0 and self._global.free() > self._low_reserve_now()

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, _Answer]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: Priority | None,
    ) -> _Answer:
        chat_id = _as_int(data.get("chat_id"))
        priority = rate_limit_args if rate_limit_args is not None else Priority.HIGH
        for attempt in itertools.count(1):
            paced = chat_id is not None and endpoint.lower() in PACED_METHODS
            try:
                if paced and chat_id is not None:
                    async with self.pacer.turn(chat_id, priority):
                        result = await self._within_budget(
                            callback, args, kwargs, chat_id, priority, paced=True
                        )
                else:
                    result = await self._within_budget(
                        callback, args, kwargs, chat_id, priority, paced=False
                    )
            except TelegramError as exc:
                if self._on_answer is not None:
                    self._on_answer(exc)
                if not isinstance(exc, RetryAfter):
                    raise
                wait = retry_after_seconds(exc)
                if wait >= LONG_FLOOD_WAIT_SECONDS:
                    await self._flood_changed(True, wait)
                if wait > MAX_FLOOD_WAIT_SECONDS or attempt >= FLOOD_ATTEMPTS:
                    raise
                log.info("telegram flood control on %s: waiting %.0fs", endpoint, wait)
                await asyncio.sleep(wait)
                continue
            if self._on_answer is not None:
                self._on_answer(None)
            if self._flooded:
                await self._flood_changed(False, 0.0)
            return result
        raise AssertionError("unreachable")

    async def _flood_changed(self, flooded: bool, wait: float) -> None:
        if flooded == self._flooded:
            return
        self._flooded = flooded
        if flooded:
            log.warning("telegram flood control for %.0fs: the bot is limited", wait)
        if self._on_flood is not None:
            await self._on_flood(flooded)

    async def _within_budget(
        self,
        callback: Callable[..., Coroutine[Any, Any, _Answer]],
        args: Any,
        kwargs: dict[str, Any],
        chat_id: int | None,
        priority: Priority,
        *,
        paced: bool,
    ) -> _Answer:
        """Make the request holding its places in the bot's and the group's budgets (and,
        shared, the chat's turn there too)."""
        check = _check_before_sending.get()
        if chat_id is None:
            if check is not None:
                await check()
            return await callback(*args, **kwargs)
        group = await self._group_slot(chat_id) if chat_id < 0 else None
        try:
            place, turn = await self._place_and_turn(chat_id, priority, paced=paced)
            try:
                if check is not None:
                    await check()
                return await callback(*args, **kwargs)
            finally:
                self._give_back(place)
                if turn is not None:
                    await self._end_shared_turn(chat_id, turn)
        finally:
            if group is not None:
                group.give_back()

    async def _place_and_turn(
        self, chat_id: int, priority: Priority, *, paced: bool
    ) -> tuple[SharedPlace | None, float | None]:
        """A place in the budget, and for a chat message with a shared budget the chat's
        turn there, taken only once the place is had: a turn is held only while its
        message is really on its way, so another instance waiting for the same chat waits
        for a send, not for this instance's queue. A turn not free gives the place back
        (to this process's stock) and the request queues again."""
        backoff = _SHARED_WAIT_MIN
        while True:
            place = await self._slot(priority)
            shared = self._shared
            if not paced or shared is None or place is None:
                return place, None
            try:
                if chat_id in self._unended_turns:
                    await self._end_unended_turn(chat_id)
                held, wait = await shared.take_chat_turn(chat_id, SHARED_FLIGHT_SECONDS)
            except (LedgerWriteFailed, LedgerReadFailed) as exc:
                self._shared_fault(exc)
                return place, None
            except BaseException:
                self._unslot(place)
                raise
            if held is not None:
                return place, held
            self._unslot(place)
            if wait <= GROUP_CHAT_GAP:  # answered: the turn is free in ``wait`` seconds
                await asyncio.sleep(max(wait, _SHARED_WAIT_MIN))
            else:  # on its way at another instance: when its answer comes is unknown
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _SHARED_TURN_POLL_MAX)

    def _unslot(self, place: SharedPlace) -> None:
        """A place granted but not used: back to the stock for the next waiter."""
        self._global.in_flight -= 1
        self._global.released()
        self._stock.append(place)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="rate-limiter")

    async def _end_shared_turn(self, chat_id: int, held: float) -> None:
        """The chat's next turn comes its gap after this answer."""
        assert self._shared is not None
        gap = ChatPacer.gap(chat_id)
        try:
            await self._shared.end_chat_turn(chat_id, held, gap)
        except (LedgerWriteFailed, LedgerReadFailed) as exc:
            self._shared_fault(exc)  # ended later, or free when its flight lapses
            now = self._clock()
            self._unended_turns = {
                chat: turn for chat, turn in self._unended_turns.items() if turn[2] > now
            }
            self._unended_turns[chat_id] = (held, now + gap, now + SHARED_FLIGHT_SECONDS)

    async def _end_unended_turn(self, chat_id: int) -> None:
        """End a turn of this process's that a fault left held (raises the ledger's
        errors): the chat's next turn comes when it would have, not when it lapses."""
        assert self._shared is not None
        held, next_turn, _ = self._unended_turns[chat_id]
        await self._shared.end_chat_turn(chat_id, held, max(0.0, next_turn - self._clock()))
        del self._unended_turns[chat_id]

    def _give_back(self, place: SharedPlace | None) -> None:
        """The request is answered: its places come free a second from now."""
        self._global.give_back()
        if place is None:
            return
        self._returns.append(place)
        if self._returner is None or self._returner.done():
            self._returner = asyncio.create_task(self._return_places(), name="budget-returns")

    async def _return_places(self) -> None:
        """Give the answered requests' places back, all that gathered in one statement."""
        assert self._shared is not None
        while self._returns:
            places, self._returns = self._returns, []
            try:
                await self._shared.give_back_send_places(places, 1.0)
            except (LedgerWriteFailed, LedgerReadFailed) as exc:
                self._shared_fault(exc)  # they come free when their flight lapses

    def _shared_fault(self, error: Exception) -> None:
        """Carry on under this process's own budget: Telegram's "retry after" is waited
        out here if instances together go over, and a bot without its ledger does little."""
        now = time.monotonic()
        if now - self._shared_fault_logged_at >= _SHARED_FAULT_LOG_SECONDS:
            self._shared_fault_logged_at = now
            log.warning("the shared Telegram budget is unreachable (%s): pacing alone", error)

    async def _slot(self, priority: Priority) -> SharedPlace | None:
        """A place in the bot's budget (and the shared one's place, if any)."""
        future: asyncio.Future[SharedPlace | None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (int(priority), next(self._order), future))
        self._waiting += 1
        if priority < Priority.LOW:
            self._global.released()  # a dispatcher holding back a LOW one looks again
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="rate-limiter")
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._give_back(future.result())  # granted, but its caller is gone
            else:
                self._waiting -= 1  # the dispatcher drops its entry when it comes to it
            raise

    async def _dispatch(self) -> None:
        """Hand out places in the budget, most urgent waiter first; then give the shared
        places nobody took back (a waiter that comes meanwhile is served first)."""
        while True:
            while self._queue:
                await self._global.wait_for_room()
                most_urgent = self._most_urgent()
                if most_urgent is None:
                    break  # every waiter gave up
                free = self._global.free()
                if most_urgent >= Priority.LOW and free <= self._low_reserve_now():
                    # Until a place may free, an urgent waiter comes, or the urgent flow
                    # of the last second falls below the places free now.
                    await self._global.wait_for_change(self._urgent_let_go.fewer_than_at(free))
                    continue
                place = None
                if self._shared is not None:
                    place = await self._shared_place()
                while self._queue:
                    rank, _, future = heapq.heappop(self._queue)
                    if not future.done():  # else its caller gave up (cancelled)
                        self._global.take()
                        if rank < Priority.LOW:
                            self._urgent_let_go.add()
                        self._waiting -= 1
                        future.set_result(place)
                        place = None
                        break
                if place is not None:
                    self._stock.append(place)
            if not self._stock:
                return  # no await since the queue was seen empty: no waiter is left behind
            await self._give_back_spare_places()

    def _most_urgent(self) -> int | None:
        """The most urgent waiter's priority (waiters that gave up are dropped first)."""
        while self._queue and self._queue[0][2].done():
            heapq.heappop(self._queue)
        return self._queue[0][0] if self._queue else None

    async def _shared_place(self) -> SharedPlace | None:
        """A place in the shared budget: from the stock, else one statement takes places
        for every waiter that fits this process's budget too; None when the budget is
        unreachable (this process's own then rules alone) or nobody waits any more."""
        assert self._shared is not None
        while not self._stock:
            if self._waiting == 0:
                return None  # every waiter gave up: nobody to take a place for
            room = self._global.limit - self._global.in_flight
            urgent = sum(
                1 for rank, _, future in self._queue if rank < Priority.LOW and not future.done()
            )
            if urgent:  # places for them first; a LOW one may follow in the batch
                wanted, reserve = max(1, min(urgent, room)), 0
            else:  # only nice-to-haves wait: leave some places to other instances' urgent
                wanted, reserve = max(1, min(self._waiting, room)), self._low_reserve
            try:
                places, wait = await self._shared.take_send_places(
                    self._global.limit, wanted, SHARED_FLIGHT_SECONDS, reserve
                )
            except (LedgerWriteFailed, LedgerReadFailed) as exc:
                self._shared_fault(exc)
                return None
            except Exception as exc:  # a bug: said loudly, but no waiter is left hanging
                log.exception("the shared Telegram budget failed")
                self._shared_fault(exc)
                return None
            self._stock.extend(places)
            if not places:
                await asyncio.sleep(
                    min(max(wait or 0.0, _SHARED_PLACES_WAIT_MIN), _SHARED_WAIT_MAX)
                )
        return self._stock.pop()

    async def _give_back_spare_places(self) -> None:
        """Places taken for waiters that gave up (or whose chat was busy): free at once,
        none was used."""
        spare, self._stock = self._stock, []
        if self._shared is None or not spare:
            return
        try:
            await self._shared.give_back_send_places(spare, 0.0)
        except (LedgerWriteFailed, LedgerReadFailed) as exc:
            self._shared_fault(exc)

    async def _group_slot(self, chat_id: int) -> _Budget:
        """A place in the group's own budget: ``group_per_minute`` in any 60 s."""
        lock = self._group_locks.setdefault(chat_id, asyncio.Lock())
        async with lock:
            budget = self._groups.get(chat_id)
            if budget is None:
                self._forget_idle_groups()
                budget = self._groups[chat_id] = _Budget(self._group_per_minute, 60.0, self._clock)
            await budget.wait_for_room()
            budget.take()
            return budget

    def _forget_idle_groups(self) -> None:
        if len(self._groups) < 1000:
            return
        for chat_id, budget in list(self._groups.items()):
            lock = self._group_locks.get(chat_id)
            if budget.idle and (lock is None or not lock.locked()):
                del self._groups[chat_id]
                self._group_locks.pop(chat_id, None)


class ChatPacer:
    """Each chat's pace: one message on its way at a time, the next one ``gap`` after its
    answer came back; the most urgent waiter goes first (deliveries before keyboards
    before status edits).

    Holding the chat's turn until the answer, as the bot's budget does, means no two
    messages can reach Telegram closer than ``gap`` however the network bunches them.
    The rate limiter takes a turn for every chat message (:data:`PACED_METHODS`), so
    handlers' replies and the tracker's messages keep to one pace.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        backlog: Callable[[], int] | None = None,
        room_for_low: Callable[[], bool] | None = None,
    ) -> None:
        self._clock = clock
        #: Requests waiting in the rate limiter: status edits give way when it is long.
        self._backlog = backlog or (lambda: 0)
        #: Whether the rate limiter would let a LOW request go at once.
        self._room_for_low = room_for_low or (lambda: self._backlog() == 0)
        #: When each chat may take its next message (its last answer plus the gap).
        self._free_at: dict[int, float] = {}
        #: Chats with a message on its way now.
        self._busy: set[int] = set()
        self._queues: dict[int, list[tuple[int, int, asyncio.Future[None]]]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._order = itertools.count()

    @staticmethod
    def gap(chat_id: int) -> float:
        return GROUP_CHAT_GAP if chat_id < 0 else PRIVATE_CHAT_GAP

    def wait_needed(self, chat_id: int) -> float:
        free_at = self._free_at.get(chat_id)
        return 0.0 if free_at is None else max(0.0, free_at - self._clock())

    def free(self, chat_id: int) -> bool:
        """A message to this chat would go at once: none on its way, none waiting."""
        return (
            chat_id not in self._busy
            and not self._queues.get(chat_id)
            and self.wait_needed(chat_id) == 0
        )

    @contextlib.asynccontextmanager
    async def turn(self, chat_id: int, priority: Priority = Priority.HIGH) -> AsyncIterator[None]:
        """Wait for the chat's turn and hold it until the block ends (the answer came)."""
        await self._acquire(chat_id, priority)
        try:
            yield
        finally:
            self._release(chat_id)

    async def _acquire(self, chat_id: int, priority: Priority) -> None:
        if self.free(chat_id):
            self._busy.add(chat_id)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(
            self._queues.setdefault(chat_id, []), (int(priority), next(self._order), future)
        )
        self._schedule(chat_id)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(chat_id)  # granted, but its caller is gone
            raise

    def _release(self, chat_id: int) -> None:
        self._busy.discard(chat_id)
        now = self._clock()
        if len(self._free_at) > _PACER_MAX_CHATS:
            self._free_at = {c: t for c, t in self._free_at.items() if t > now}
        self._free_at[chat_id] = now + self.gap(chat_id)
        self._schedule(chat_id)

    def _schedule(self, chat_id: int) -> None:
        """Grant the chat's next turn when it is due: a timer, not a task per chat."""
        if chat_id in self._busy or chat_id in self._timers or not self._queues.get(chat_id):
            return
        self._timers[chat_id] = asyncio.get_running_loop().call_later(
            self.wait_needed(chat_id), self._grant, chat_id
        )

    def _grant(self, chat_id: int) -> None:
        self._timers.pop(chat_id, None)
        queue = self._queues.get(chat_id, [])
        while queue:
            _, _, future = heapq.heappop(queue)
            if not future.done():  # else its caller gave up (cancelled)
                self._busy.add(chat_id)
                future.set_result(None)
                break
        if not queue:
            self._queues.pop(chat_id, None)

    def idle(self) -> bool:
        """Room for a LOW call that holds up a video (its chat action): it would be let go
        at once, nothing waiting for Telegram and the urgent flow leaving it a place."""
        return self._room_for_low()

    async def patient(self, chat_id: int, patience: float) -> bool:
        """Whether the chat's turn can come within ``patience`` seconds, for a message that
        should go once but after the ones that matter (a status message's summary, right
        after the video): the rate limiter then waits for the turn, at LOW priority behind
        every delivery, and the caller bounds that wait by ``patience``. The bot's backlog
        does not matter here: the summary goes once."""
        return self.wait_needed(chat_id) <= patience

    def optional(self, chat_id: int) -> bool:
        """Whether a nice-to-have message (a status edit) should be sent at all: not while
        other messages wait for this chat (they matter more) or the bot's queue is long.
        Sent, it waits for the chat's turn like any other (the caller bounds the wait)."""
        return not self._queues.get(chat_id) and self._backlog() < STATUS_EDIT_MAX_BACKLOG


def _as_int(value: object) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)
    return None
