"""Telegram's pace, in one module: the bot's 30 a second, a group's 20 a minute, a chat's
one a second, and what to do when Telegram says "retry after" anyway.

Every request passes :class:`PriorityRateLimiter` (PTB's rate-limiter seam), so it is
also the one place a short flood wait (``RetryAfter``) is waited out and the request
made again, for handlers and tracker alike; a long one (over
``MAX_FLOOD_WAIT_SECONDS``) is raised to the caller, which knows whether the request is
worth repeating. A flood wait of ``LONG_FLOOD_WAIT_SECONDS`` or more is told to
``on_flood(True)`` (the operators' alert), and the next answered request to
``on_flood(False)``. :class:`ChatPacer` keeps the tracker's messages to each chat's pace.

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
did, then ``Priority.LOW`` (status edits, chat actions) only when nothing else waits.
Pass the priority as ``rate_limit_args``. Requests without a chat (getUpdates, getFile,
answerCallbackQuery) are not limited by the budget, but their flood waits are handled
the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from enum import IntEnum
from typing import Any

from telegram.error import RetryAfter, TelegramError
from telegram.ext import BaseRateLimiter
from telegram.warnings import PTBDeprecationWarning

from ..core.tasks import cancel_and_wait

__all__ = [
    "ChatPacer",
    "FloodListener",
    "Priority",
    "PriorityRateLimiter",
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
#: minute in a group. Status edits that would break it are skipped; outcomes wait.
PRIVATE_CHAT_GAP = 1.0
GROUP_CHAT_GAP = 3.0
_PACER_MAX_CHATS = 10_000
#: A status edit is skipped while this many requests wait for Telegram (about a second's
#: worth): it would wait behind keyboards and videos, and the job's next poll waits for it.
STATUS_EDIT_MAX_BACKLOG = TELEGRAM_PER_SECOND

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


class Priority(IntEnum):
    DELIVERY = 0  #: a job's video or final outcome: what the user paid and waited for
    HIGH = 1  #: keyboards, answers to what a user just did, operator alerts
    LOW = 2  #: status edits, chat actions, clean-ups: nice to have, first to wait


class _Budget:
    """Requests in flight plus requests answered within the last ``span`` seconds."""

    def __init__(self, limit: int, span: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.span = span
        self._clock = clock
        self.in_flight = 0
        self._answered: deque[float] = deque()
        self._released = asyncio.Event()

    def _used(self) -> int:
        now = self._clock()
        while self._answered and now - self._answered[0] >= self.span:
            self._answered.popleft()
        return self.in_flight + len(self._answered)

    @property
    def idle(self) -> bool:
        return self._used() == 0

    async def wait_for_room(self) -> None:
        """Return once one more request fits (the caller takes it before awaiting again)."""
        while self._used() >= self.limit:
            self._released.clear()
            if self._answered:
                # The oldest answer leaves the window then; a new answer frees nothing.
                await asyncio.sleep(self._answered[0] + self.span - self._clock())
            else:
                # All of them are still on the wire: room comes one span after an answer.
                await self._released.wait()

    def take(self) -> None:
        self.in_flight += 1

    def give_back(self) -> None:
        self.in_flight -= 1
        self._answered.append(self._clock())
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
        self._on_flood = on_flood
        #: Told of every answer from Telegram, None for success (health and metrics).
        self._on_answer = on_answer
        self._flooded = False
        self._global = _Budget(per_second, 1.0, clock)
        self._group_per_minute = group_per_minute
        self._groups: dict[int, _Budget] = {}
        self._group_locks: dict[int, asyncio.Lock] = {}
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._waiting = 0
        self._dispatcher: asyncio.Task[None] | None = None

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        await cancel_and_wait(self._dispatcher)
        self._dispatcher = None

    @property
    def backlog(self) -> int:
        """Requests waiting for a place now (a caller that gave up no longer counts)."""
        return self._waiting

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
            try:
                result = await self._within_budget(callback, args, kwargs, chat_id, priority)
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
    ) -> _Answer:
        """Make the request holding its places in the bot's and the group's budgets."""
        if chat_id is None:
            return await callback(*args, **kwargs)
        group = await self._group_slot(chat_id) if chat_id < 0 else None
        try:
            await self._slot(priority)
            try:
                return await callback(*args, **kwargs)
            finally:
                self._global.give_back()
        finally:
            if group is not None:
                group.give_back()

    async def _slot(self, priority: Priority) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (int(priority), next(self._order), future))
        self._waiting += 1
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="rate-limiter")
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._global.give_back()  # granted, but its caller is gone
            else:
                self._waiting -= 1  # the dispatcher drops its entry when it comes to it
            raise

    async def _dispatch(self) -> None:
        """Hand out places in the budget, most urgent waiter first."""
        while self._queue:
            await self._global.wait_for_room()
            while self._queue:
                _, _, future = heapq.heappop(self._queue)
                if not future.done():  # else its caller gave up (cancelled)
                    self._global.take()
                    self._waiting -= 1
                    future.set_result(None)
                    break

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
    """Remembers when the bot last sent to each chat, to keep to Telegram's per-chat pace."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        backlog: Callable[[], int] | None = None,
    ) -> None:
        self._clock = clock
        #: Requests waiting in the rate limiter: status edits give way when it is long.
        self._backlog = backlog or (lambda: 0)
        self._last: dict[int, float] = {}

    @staticmethod
    def gap(chat_id: int) -> float:
        return GROUP_CHAT_GAP if chat_id < 0 else PRIVATE_CHAT_GAP

    def wait_needed(self, chat_id: int) -> float:
        last = self._last.get(chat_id)
        if last is None:
            return 0.0
        return max(0.0, last + self.gap(chat_id) - self._clock())

    def sent(self, chat_id: int) -> None:
        now = self._clock()
        if len(self._last) > _PACER_MAX_CHATS:
            self._last = {c: t for c, t in self._last.items() if now - t < GROUP_CHAT_GAP}
        self._last[chat_id] = now

    async def essential(self, chat_id: int) -> None:
        """Wait for the chat's next free slot and take it (outcomes always go out)."""
        # Reserve the slot before sleeping, so two outcomes for one chat queue up.
        wait = self.wait_needed(chat_id)
        self._last[chat_id] = self._clock() + wait
        if wait > 0:
            await asyncio.sleep(wait)

    def idle(self) -> bool:
        """Nothing is waiting for Telegram: room for a call that holds up a video."""
        return self._backlog() == 0

    def optional(self, chat_id: int) -> bool:
        """Take the chat's slot if it is free now and the bot's queue is short; else skip."""
        if self.wait_needed(chat_id) > 0 or self._backlog() >= STATUS_EDIT_MAX_BACKLOG:
            return False
        self.sent(chat_id)
        return True

    async def patient(self, chat_id: int, patience: float) -> bool:
        """Wait up to ``patience`` seconds for the chat's free slot and take it; False if
        it did not come. For a message that should go once, but after the ones that
        matter (a status message's summary, right after the video took the slot); the
        rate limiter's low priority keeps it behind every delivery."""
        give_up_at = self._clock() + patience
        while (wait := self.wait_needed(chat_id)) > 0:
            if self._clock() + wait > give_up_at:
                return False
            await asyncio.sleep(wait)
        self.sent(chat_id)
        return True


def _as_int(value: object) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)
    return None
