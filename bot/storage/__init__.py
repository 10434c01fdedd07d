"""Ledger backends behind the core's :class:`~bot.core.ports.Ledger` Protocol."""

from .sqlite import SCHEMA_VERSION, LedgerLocked, LedgerUnusable, SqliteLedger

__all__ = ["SCHEMA_VERSION", "LedgerLocked", "LedgerUnusable", "SqliteLedger"]
