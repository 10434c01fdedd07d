"""A budget of bytes shared by concurrent tasks, taken and given back, first come first
served: many small things at once, few large ones."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

__all__ = ["ByteBudget"]


class ByteBudget:
    """``capacity`` bytes; :meth:`taken` waits until ``size`` of them are free. Waiters
    are served in order, so a large request is not starved by a stream of small ones;
    a request larger than the whole budget takes all of it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = capacity
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def free(self) -> int:
        return self._free

    @contextlib.asynccontextmanager
    async def taken(self, size: int) -> AsyncIterator[None]:
        size = max(0, min(size, self.capacity))
        if self._waiters or self._free < size:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (size, waiter)
            self._waiters.append(entry)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._give_back(size)  # granted, but its caller is gone
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(entry)
                    self._serve()  # a large one gone from the head may let others go
                raise
        else:
            self._free -= size
        try:
            yield
        finally:
            self._give_back(size)

    def _give_back(self, size: int) -> None:
        self._free += size
        self._serve()

    def _serve(self) -> None:
        while self._waiters:
            size, waiter = self._waiters[0]
            if waiter.done():  # cancelled meanwhile
                self._waiters.popleft()
                continue
            if size > self._free:
                return
            self._waiters.popleft()
            self._free -= size
            waiter.set_result(None)
