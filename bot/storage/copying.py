"""``python -m bot copy-ledger``: what a SQLite ledger still owes, copied into PostgreSQL.

Moving a running bot from ``DATABASE_PATH`` to ``DATABASE_URL`` must not drop a paid job
or a refund. Copied: every unfinished job (active, or ended and not yet told), every
job awaiting its payment (its invoice may still be paid), every payment still owed back
or whose refund the payer has not heard of, the payments of the copied jobs, the jobs
those rows refer to, and every user's remembered language and options. Jobs keep their
ids (an invoice out names its job by id), so the PostgreSQL ledger should be fresh: a
different job at the same id, or the same photo under another id, stops the copy before
anything is written.

Idempotent: one transaction, and a row already there (same id and photo, or same charge
id) is counted, not copied again.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.jobs import ACTIVE_STATES, TERMINAL_STATES, JobState
from ..core.payments import RefundState
from .common import placeholders

if TYPE_CHECKING:
    from .postgres import Connection, PostgresLedger
    from .sqlite import SqliteLedger

__all__ = ["CopyClash", "CopyReport", "copy_ledger"]

#: What identifies a job beyond its id: a row at the same id without these is another job.
_IDENTITY = ("chat_id", "trigger_message_id", "retry_of", "created_at")


class CopyClash(RuntimeError):
    """The PostgreSQL ledger holds other jobs where the copied ones would go."""


@dataclass(frozen=True)
class CopyReport:
    jobs_copied: int
    jobs_present: int
    payments_copied: int
    payments_present: int
    users_copied: int


async def _sqlite_rows(ledger: SqliteLedger, sql: str, params: tuple[Any, ...]) -> list[Any]:
    async with ledger.db.execute(sql, params) as cursor:
        return list(await cursor.fetchall())


async def _what_is_owed(ledger: SqliteLedger) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
    """(jobs, payments) to copy, jobs ordered so each comes after the job it retries."""
    active = tuple(s.value for s in ACTIVE_STATES) + (JobState.AWAITING_PAYMENT.value,)
    terminal = tuple(s.value for s in TERMINAL_STATES)
    wanted = {
        row["id"]
        for row in await _sqlite_rows(
            ledger,
            f"SELECT id FROM jobs WHERE state IN ({placeholders(active)}) "
            f"OR (state IN ({placeholders(terminal)}) AND notified_at IS NULL)",
            (*active, *terminal),
        )
    }
    owed = await _sqlite_rows(
        ledger,
        "SELECT * FROM payments WHERE refund=? OR (refund=? AND refund_told_at IS NULL)",
        (RefundState.DUE.value, RefundState.DONE.value),
    )
    wanted |= {row["job_id"] for row in owed if row["job_id"] is not None}
    jobs: dict[int, sqlite3.Row] = {}
    pending = set(wanted)
    while pending:  # the jobs they retry, and theirs
        rows = await _sqlite_rows(
            ledger,
            f"SELECT * FROM jobs WHERE id IN ({placeholders(tuple(pending))})",
            tuple(pending),
        )
        jobs.update({row["id"]: row for row in rows})
        pending = {row["retry_of"] for row in rows if row["retry_of"] is not None} - set(jobs)
    ids = tuple(jobs)
    payments = {row["charge_id"]: row for row in owed}
    if ids:
        for row in await _sqlite_rows(
            ledger, f"SELECT * FROM payments WHERE job_id IN ({placeholders(ids)})", ids
        ):
            payments[row["charge_id"]] = row
    return [jobs[job_id] for job_id in sorted(jobs)], list(payments.values())


async def _columns(conn: Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema=current_schema() AND table_name=$1",
        table,
    )
    return [row["column_name"] for row in rows]


async def _insert(conn: Connection, table: str, row: sqlite3.Row, columns: list[str]) -> bool:
    """One row, unless any unique key of it is there already; True when inserted."""
    names = [name for name in row.keys() if name in columns]  # noqa: SIM118 (a Row iterates values)
    marks = ",".join(f"${n}" for n in range(1, len(names) + 1))
    status = await conn.execute(
        f"INSERT INTO {table} ({','.join(names)}) VALUES ({marks}) ON CONFLICT DO NOTHING",
        *(row[name] for name in names),
    )
    return str(status).endswith(" 1")


async def copy_ledger(source: SqliteLedger, target: PostgresLedger) -> CopyReport:
    """Copy what ``source`` still owes into ``target`` (both open), in one transaction."""
    jobs, payments = await _what_is_owed(source)
    users = await _sqlite_rows(source, "SELECT * FROM users ORDER BY user_id", ())

    async def work(conn: Connection) -> CopyReport:
        job_columns = await _columns(conn, "jobs")
        payment_columns = await _columns(conn, "payments")
        copied = present = 0
        for row in jobs:
            if await _insert(conn, "jobs", row, job_columns):
                copied += 1
                continue
            there = await conn.fetchrow("SELECT * FROM jobs WHERE id=$1", row["id"])
            if there is None or any(there[key] != row[key] for key in _IDENTITY):
                raise CopyClash(
                    f"already holds another job where J{row['id']} would go; copy into a"
                    " fresh database (nothing was copied)"
                )
            present += 1
        paid_copied = paid_present = 0
        for row in payments:
            if await _insert(conn, "payments", row, payment_columns):
                paid_copied += 1
            else:
                paid_present += 1
        user_columns = await _columns(conn, "users")
        users_copied = 0
        for row in users:  # a user PostgreSQL knows already keeps what it knows
            users_copied += await _insert(conn, "users", row, user_columns)
        # New jobs must get ids after the copied ones.
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('jobs', 'id'), "
            "GREATEST((SELECT MAX(id) FROM jobs), 1))"
        )
        return CopyReport(copied, present, paid_copied, paid_present, users_copied)

    return await target.run_in_transaction(work)
