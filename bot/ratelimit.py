"""Keeps the bot under Telegram's flood limits, with what the user waits for going first.

Why not PTB's ``AIORateLimiter``: the benchmark (docs/benchmarks.md) showed two things it
cannot do. Its leaky bucket lets a burst through on top of the steady rate (59 messages
in one second against Telegram's 30), and its queue is first come, first served, so
with a thousand jobs finishing together the videos waited behind status edits.

Here every request to a chat takes a slot from a sliding one-second window: a burst goes
out at once while fewer than ``per_second`` requests left in the last second, and never
more than that in any second. Each group also keeps to ``group_per_minute``,
and waiting requests are served by priority — ``Priority.LOW`` (status edits, chat
actions: pass it as ``rate_limit_args``) only when nothing else waits. Requests without
a chat (getUpdates, getFile, answerCallbackQuery) are not limited. A ``RetryAfter`` is
raised to the caller, which knows whether the call is worth repeating.
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

__all__ = ["Priority", "PriorityRateLimiter"]


class Priority(IntEnum):
    HIGH = 0  #: keyboards, videos, outcomes, answers to what a user just did
    LOW = 1  #: status edits and chat actions: nice to have, first to wait


class PriorityRateLimiter(BaseRateLimiter[Priority]):
    def __init__(
        self,
        # Telegram's figure is 30; the slots are handed out here, but requests reach
        # Telegram a little later and bunched (the HTTP pool), and at 30 the benchmark
        # saw 33-37 arrive within one second. 25 leaves room for that.
        per_second: float = 25.0,
        group_per_minute: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_second = int(per_second)
        self._window: deque[float] = deque()
        self._group_per_minute = group_per_minute
        self._clock = clock
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._dispatcher: asyncio.Task[None] | None = None
        self._group_sends: dict[int, deque[float]] = {}
        self._group_locks: dict[int, asyncio.Lock] = {}

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
        """Requests waiting for a slot now."""
        return len(self._queue)

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
        if chat_id < 0:
            await self._group_slot(chat_id)
        await self._slot(rate_limit_args if rate_limit_args is not None else Priority.HIGH)
        return await callback(*args, **kwargs)

    async def _slot(self, priority: Priority) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (int(priority), next(self._order), future))
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="rate-limiter")
        await future

    async def _dispatch(self) -> None:
        """Hand out slots, most urgent waiter first, at most ``per_second`` in any second."""
        while self._queue:
            now = self._clock()
            while self._window and now - self._window[0] >= 1.0:
                self._window.popleft()
            if len(self._window) >= self._per_second:
                await asyncio.sleep(self._window[0] + 1.0 - now)
                continue
            _, _, future = heapq.heappop(self._queue)
            if future.done():  # its caller gave up (cancelled)
                continue
            future.set_result(None)
            self._window.append(now)

    async def _group_slot(self, chat_id: int) -> None:
        """At most ``group_per_minute`` sends to one group in any 60 s."""
        lock = self._group_locks.setdefault(chat_id, asyncio.Lock())
        async with lock:
            sends = self._group_sends.setdefault(chat_id, deque())
            now = self._clock()
            while sends and now - sends[0] >= 60.0:
                sends.popleft()
            if len(sends) >= self._group_per_minute:
                await asyncio.sleep(60.0 - (now - sends[0]))
                sends.popleft()
            sends.append(self._clock())


def _as_int(value: object) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)
    return None
