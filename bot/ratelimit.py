"""Keeps the bot under Telegram's flood limits, with what the user waits for going first.

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
answerCallbackQuery) are not limited. A ``RetryAfter`` is raised to the caller, which
knows whether the call is worth repeating.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Coroutine
from enum import IntEnum
from typing import Any

from telegram.ext import BaseRateLimiter

__all__ = ["Priority", "PriorityRateLimiter", "TELEGRAM_PER_SECOND"]

#: Telegram's overall limit: about 30 messages a second.
TELEGRAM_PER_SECOND = 30


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
    ) -> None:
        self._clock = clock
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
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
            self._dispatcher = None

    @property
    def backlog(self) -> int:
        """Requests waiting for a place now (a caller that gave up no longer counts)."""
        return self._waiting

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: Priority | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        chat_id = _as_int(data.get("chat_id"))
        if chat_id is None:
            return await callback(*args, **kwargs)
        group = await self._group_slot(chat_id) if chat_id < 0 else None
        try:
            await self._slot(rate_limit_args if rate_limit_args is not None else Priority.HIGH)
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


def _as_int(value: object) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)
    return None
