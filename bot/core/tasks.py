"""Background tasks: one way to stop one (cancel, then wait until it has unwound), and
the small base of the services that run one loop."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["Background", "cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and return once it has finished its ``finally`` blocks."""
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Background:
    """A service that runs one loop in the background: ``start()`` it once, ``stop()`` it
    at shutdown (its ``finally`` blocks run). Subclasses write ``_run``."""

    #: The task's name, as asyncio and the logs show it.
    task_name = "background"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        raise NotImplementedError
