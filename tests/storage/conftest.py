"""Every ledger backend, opened fresh for each test, behind the core's Ledger Protocol.

The contract suites (test_ledger_contract.py, test_payments_contract.py) run once per
backend in ``BACKENDS``: SQLite in a temporary folder, PostgreSQL in a fresh database of
the test run's own server (tests/pgserver.py). A new backend joins by adding an opener.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.core.ports import Ledger
from bot.storage import SqliteLedger
from bot.storage.postgres import PostgresLedger


class Clock:
    """A settable clock: the ledger stamps times with it."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


#: Opens a ledger of one backend: (the test's request, its clock) -> an open ledger.
#: Reopened in one test, it is the same ledger (same file, same database).
Opener = Callable[[pytest.FixtureRequest, Clock], Awaitable[Ledger]]


async def _open_sqlite(request: pytest.FixtureRequest, clock: Clock) -> Ledger:
    folder: Path = request.getfixturevalue("tmp_path")
    ledger = SqliteLedger(folder / "sub" / "ledger.sqlite3", clock=clock)
    await ledger.open()
    return ledger


async def _open_postgres(request: pytest.FixtureRequest, clock: Clock) -> Ledger:
    url: str = request.getfixturevalue("postgres_url")
    ledger = PostgresLedger(url, clock=clock)
    await ledger.open()
    return ledger


BACKENDS: dict[str, Opener] = {"sqlite": _open_sqlite, "postgres": _open_postgres}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=sorted(BACKENDS))
async def open_ledger(
    request: pytest.FixtureRequest, clock: Clock
) -> AsyncIterator[Callable[[], Awaitable[Ledger]]]:
    """Opens (and reopens) ledgers of the backend under test; closes them all at the end."""
    opener = BACKENDS[request.param]
    opened: list[Ledger] = []

    async def open_() -> Ledger:
        ledger = await opener(request, clock)
        opened.append(ledger)
        return ledger

    yield open_
    for ledger in opened:
        await ledger.close()  # closing twice is harmless


@pytest.fixture
async def ledger(open_ledger: Callable[[], Awaitable[Ledger]]) -> Ledger:
    return await open_ledger()
