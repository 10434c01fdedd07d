"""Every ledger backend, opened fresh for each test, behind the core's Ledger Protocol.

The contract suite (test_ledger_contract.py) runs once per backend in ``BACKENDS``: a
new backend (PostgreSQL) joins by adding an opener here, and must pass the same tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.core.ports import Ledger
from bot.storage import SqliteLedger


class Clock:
    """A settable clock: the ledger stamps times with it."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


#: Opens a ledger of one backend: (a folder it may use, its clock) -> an open ledger.
Opener = Callable[[Path, Clock], Awaitable[Ledger]]


async def _open_sqlite(folder: Path, clock: Clock) -> Ledger:
    ledger = SqliteLedger(folder / "sub" / "ledger.sqlite3", clock=clock)
    await ledger.open()
    return ledger


BACKENDS: dict[str, Opener] = {"sqlite": _open_sqlite}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=sorted(BACKENDS))
async def open_ledger(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[Callable[[], Awaitable[Ledger]]]:
    """Opens (and reopens) ledgers of the backend under test; closes them all at the end."""
    opener = BACKENDS[request.param]
    opened: list[Ledger] = []

    async def open_() -> Ledger:
        ledger = await opener(tmp_path, clock)
        opened.append(ledger)
        return ledger

    yield open_
    for ledger in opened:
        await ledger.close()  # closing twice is harmless


@pytest.fixture
async def ledger(open_ledger: Callable[[], Awaitable[Ledger]]) -> Ledger:
    return await open_ledger()
