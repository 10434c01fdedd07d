"""Ledger backends behind the core's :class:`~bot.core.ports.Ledger` Protocol.

SQLite (``DATABASE_PATH``) is the default; PostgreSQL (``DATABASE_URL``) is imported only
when asked for, so a bot on SQLite never loads its driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..core.ports import Ledger
from .sqlite import SCHEMA_VERSION, LedgerLocked, LedgerUnusable, SqliteLedger

__all__ = [
    "SCHEMA_VERSION",
    "LedgerLocked",
    "LedgerUnusable",
    "SqliteLedger",
    "StoredLedger",
    "make_ledger",
]


class StoredLedger(Ledger, Protocol):
    """A ledger as the running bot operates it, whichever backend holds it."""

    #: Where it is, for an operator (a file path, or the URL without its password).
    where: str

    async def prove_writable(self) -> None:
        """A real write that changes nothing; LedgerUnusable when it cannot be done."""

    def gone(self) -> str | None:
        """What happened to the ledger if it disappeared from under the bot, else None."""


def make_ledger(*, database_url: str | None, database_path: Path, exclusive: bool) -> StoredLedger:
    """The ledger the settings name: PostgreSQL when ``database_url`` is set, else the
    SQLite file, held by one running bot at a time when ``exclusive``. PostgreSQL has no
    such hold: several bots share it, each job leased to one of them (bot.core.leases)."""
    if database_url:
        from .postgres import PostgresLedger  # the driver only when asked

        return PostgresLedger(database_url)
    return SqliteLedger(database_path, exclusive=exclusive)
