"""The job ledger on SQLite: every SQL statement of the embedded ledger lives here.

WAL mode with ``synchronous=FULL``: a committed transition of a paid job must survive a
power cut. A read-then-write runs in :meth:`_transaction` (``BEGIN IMMEDIATE``) so it
never meets ``SQLITE_BUSY`` halfway, alone on the connection; the common steps of a job
are single statements (``… RETURNING`` the row), atomic by themselves, and queued to the
connection's thread together (:class:`_WriteGate`). Every trip to that thread waits for
the event loop, so each step is as few trips as it can be: at 25 photos a second, steps
of three to twelve trips, one write at a time, made writes queue for seconds
(docs/benchmarks.md). State changes are compare-and-set on the current state, so a
re-delivered update or a second task cannot move a job twice. Rows are read by column
name.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import IO, Any, TypeVar

import aiosqlite

from ..core.errors import InvalidTransition, LedgerError, LedgerReadFailed, LedgerWriteFailed
from ..core.jobs import (
    TERMINAL_STATES,
    Job,
    JobState,
    can_transition,
)
from ..core.leases import Lease, LeaseLost
from ..core.limits import Limits, utc_day_start
from ..core.payments import (
    NewPayment,
    Payment,
    PaymentOutcome,
    PreCheckout,
    RefundReason,
    RefundState,
    parse_payload,
    payability,
)
from ..core.ports import UPDATE_CLAIM_SECONDS
from .common import (
    ACTIVE,
    SETTABLE,
    UNDELIVERED,
    Isolation,
    Row,
    SqlLedger,
    Statements,
    placeholders,
    row_to_job,
)
from .migrations import load_migrations

__all__ = ["LedgerLocked", "LedgerUnusable", "SqliteLedger", "SCHEMA_VERSION"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_MIGRATIONS = load_migrations()
SCHEMA_VERSION = len(_MIGRATIONS)


def _holds(row: Row | None, owner: str, now: float) -> bool:
    """Whether a row (its ``owner`` and ``lease_until``) is leased to ``owner`` at ``now``."""
    return (
        row is not None
        and row["owner"] == owner
        and row["lease_until"] is not None
        and row["lease_until"] >= now
    )


def _lease_clauses(
    lease: Lease | None, now: float, *, lets_go: bool = False
) -> tuple[str, tuple[Any, ...], str, tuple[Any, ...]]:
    """The SQL a fenced write adds: (SET part, its parameters, WHERE part, its
    parameters). The WHERE part requires ``lease`` unlapsed; the SET part extends it, or
    lets it go when the write ends the row's need of a driver (``lets_go``)."""
    set_params: tuple[Any, ...] = ()
    if lets_go:
        set_sql = ", owner=NULL, lease_until=NULL"
    elif lease is not None:
        set_sql, set_params = ", lease_until=?", (lease.until(now),)
    else:
        set_sql = ""
    if lease is None:
        return set_sql, set_params, "", ()
    return set_sql, set_params, " AND owner=? AND lease_until>=?", (lease.owner, now)


class LedgerUnusable(RuntimeError):
    """The ledger file cannot be used as it is; ``str()`` says why, for an operator."""


class LedgerLocked(RuntimeError):
    """Another running bot holds this ledger: two would both drive (and pay for) its jobs."""


class _WriteGate:
    """Who may write on the one connection now: single statements together, a
    transaction alone.

    A single statement is atomic by itself, so several may be queued to the connection's
    thread at once and run back to back there, without a trip through the event loop
    between them (under load each such trip costs milliseconds, and with one write at a
    time 25 photos a second made the writes queue for seconds: docs/benchmarks.md). A
    transaction spans several trips: it waits until the statements in flight are done,
    and no new one starts until it has committed or rolled back, so nothing of another
    write is ever inside it (or rolled back with it).
    """

    def __init__(self) -> None:
        self._statements = 0
        self._none_in_flight = asyncio.Event()
        self._none_in_flight.set()
        #: Cleared while a transaction waits or runs: statements wait for it.
        self._open = asyncio.Event()
        self._open.set()
        self._transactions = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def statement(self) -> AsyncIterator[None]:
        while not self._open.is_set():
            await self._open.wait()
        self._statements += 1
        self._none_in_flight.clear()
        try:
            yield
        finally:
            self._statements -= 1
            if self._statements == 0:
                self._none_in_flight.set()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        async with self._transactions:
            self._open.clear()
            try:
                await self._none_in_flight.wait()
                yield
            finally:
                self._open.set()


class _InTransaction:
    """The statements of one :meth:`SqliteLedger._transaction`: a trip to the
    connection's thread each."""

    def __init__(self, ledger: SqliteLedger, db: aiosqlite.Connection) -> None:
        self._ledger = ledger
        self._db = db

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self._ledger._rows(sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return (await self._db.execute(sql, tuple(params))).rowcount


class SqliteLedger(SqlLedger):
    """The :class:`~bot.core.ports.Ledger` on one SQLite file. Open, use, close.

    A running bot holds an exclusive OS lock on ``<ledger>.lock`` while the ledger is
    open (``exclusive=True``): a second bot on the same file stops at start, and since
    the OS drops the lock with the process, a SIGKILL leaves nothing stale. ``check``
    opens without it, beside a running bot.
    """

    def __init__(
        self, path: Path, *, clock: Callable[[], float] = time.time, exclusive: bool = False
    ) -> None:
        self.path = path
        #: Where the ledger is, for an operator.
        self.where = str(path)
        self._clock = clock
        self._exclusive = exclusive
        self._lock_file: IO[bytes] | None = None
        self._db: aiosqlite.Connection | None = None
        self._writes = _WriteGate()
        #: (device, inode) of the file opened: the path must still name it.
        self._identity: tuple[int, int] | None = None
        #: When old update claims were last pruned (at most once an hour).
        self._claims_pruned_at = float("-inf")

    def _take_lock(self) -> None:
        handle = Path(f"{self.path}.lock").open("ab")  # noqa: SIM115 (held while open)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise LedgerLocked(f"another bot holds the ledger {self.path}") from None
        self._lock_file = handle

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing drops the flock
            self._lock_file = None

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating the folder), migrate to the current schema, and make sure the
        file is sound; any fault is one :class:`LedgerUnusable` with a plain reason."""
        try:
            await self._open()
        except (LedgerLocked, LedgerUnusable):
            raise
        except LedgerError as exc:
            raise LedgerUnusable(str(exc)) from exc
        except (OSError, sqlite3.Error) as exc:
            raise LedgerUnusable(self._why(exc)) from exc

    async def _open(self) -> None:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_dir():
                raise LedgerUnusable("is a folder, not a file")
            if self._exclusive:
                self._take_lock()
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except BaseException:
            self._release_lock()
            raise
        db.row_factory = sqlite3.Row
        try:
            self._db = db
            # Read-only looks first, so a file that is not ours, damaged or from a newer
            # bot is left exactly as it was for the operator to rescue.
            await self._refuse_newer_schema()
            problem = await self._pragma("quick_check")
            if problem != "ok":
                raise LedgerUnusable(f"is damaged (SQLite quick_check: {str(problem)[:120]})")
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=5000")
            await db.execute("PRAGMA foreign_keys=ON")
            await self._migrate()
            if self._exclusive:
                await self._release_dead_leases()
            if str(self.path) != ":memory:":
                opened = os.stat(self.path)
                self._identity = (opened.st_dev, opened.st_ino)
        except BaseException:
            self._db = None
            await db.close()
            self._release_lock()
            raise

    def _why(self, error: BaseException) -> str:
        """An operator's words for what is wrong with the file."""
        text = str(error).lower()
        if isinstance(error, sqlite3.DatabaseError):
            if "not a database" in text:
                return "is not a bot ledger (a damaged or unrelated file)"
            if "malformed" in text or "corrupt" in text:
                return f"is damaged (SQLite: {error})"
            if "readonly" in text or "read-only" in text:
                return "cannot be written (the file or its folder is read-only)"
            if "disk is full" in text:
                return "cannot be written: the disk is full"
            if "unable to open" in text:
                return "cannot be opened or created (does its folder exist and allow writing?)"
            return f"cannot be used (SQLite: {error})"
        if isinstance(error, OSError):
            return f"cannot be used: {error.strerror or error}"
        return f"cannot be used: {error}"

    async def prove_writable(self) -> None:
        """A real write that changes nothing (the schema number, rewritten): ``check``."""
        try:
            async with self._transaction() as db:
                await db.execute(f"PRAGMA user_version={SCHEMA_VERSION:d}")
        except LedgerError as exc:
            raise LedgerUnusable(str(exc)) from exc
        except sqlite3.Error as exc:
            raise LedgerUnusable(self._why(exc)) from exc

    def gone(self) -> str | None:
        """None while the path still names the file opened; otherwise what happened to
        it ("was deleted", "was replaced by another file"), for an operator."""
        if self._identity is None:
            return None
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return "was deleted"
        except OSError as exc:
            return f"cannot be looked at ({exc.strerror or exc})"
        if (now.st_dev, now.st_ino) != self._identity:
            return "was replaced by another file"
        return None

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
        self._release_lock()

    async def _refuse_newer_schema(self) -> None:
        version = int(await self._pragma("user_version") or 0)
        if version > SCHEMA_VERSION:
            raise LedgerUnusable(
                f"was written by a newer version of the bot (schema {version}; this bot "
                f"knows {SCHEMA_VERSION}): run that version, or restore a backup"
            )

    async def _migrate(self) -> None:
        version = int(await self._pragma("user_version") or 0)
        for migration in _MIGRATIONS[version:]:
            async with self._transaction() as db:
                for statement in migration.statements:
                    await db.execute(statement)
                # PRAGMA takes no parameters; the version is an int from our own files.
                await db.execute(f"PRAGMA user_version={migration.version:d}")

    async def _release_dead_leases(self) -> None:
        """The OS lock says no other bot has this file open: every lease in it was left
        by a process that is gone (killed, crashed). Let them go, so that a restart
        resumes its jobs, and handles again the updates it was handling, at once rather
        than after they lapse."""
        async with self._transaction() as db:
            for table in ("jobs", "payments", "updates"):
                await db.execute(
                    f"UPDATE {table} SET owner=NULL, lease_until=NULL WHERE owner IS NOT NULL"
                )

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the ledger is not open")
        return self._db

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on error.

        SQLite's refusal to write (disk full, read-only, I/O error), at any statement or
        the ``COMMIT``, is raised as :class:`LedgerWriteFailed`; nothing was written, and
        the connection is left with no transaction open, ready for the next write.
        """
        db = self.db
        async with self._writes.alone():
            try:
                await self._begin(db)
                try:
                    yield db
                    await db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            await db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                raise self._write_failed(exc) from exc
            except LedgerReadFailed as exc:  # a read of this write failed: so did the write
                raise LedgerWriteFailed(str(exc)) from exc

    @staticmethod
    async def _begin(db: aiosqlite.Connection) -> None:
        """``BEGIN IMMEDIATE``, even for a caller cancelled while it waits (a job task at
        SIGTERM): the BEGIN still runs on the connection's thread, so it is rolled back
        here. Left open, it would swallow every later write into a transaction nobody
        commits, and the process's exit would undo them all (videos sent during a stop
        were sent again after the restart: docs/benchmarks.md)."""
        try:
            await db.execute("BEGIN IMMEDIATE")
        except asyncio.CancelledError:
            with contextlib.suppress(sqlite3.Error):
                await db.execute("ROLLBACK")  # queued after the BEGIN: it ends it
            raise

    async def _pragma(self, name: str) -> Any:
        """The value one ``PRAGMA`` reads (its column is named after it)."""
        rows = await self._rows(f"PRAGMA {name}")
        return rows[0][0] if rows else None

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One statement on its own (atomic by itself); returns the rows it changed."""
        async with self._writes.statement():
            try:
                cursor = await self.db.execute(sql, tuple(params))
            except sqlite3.OperationalError as exc:
                raise self._write_failed(exc) from exc
            return cursor.rowcount

    def _write_failed(self, error: sqlite3.Error) -> LedgerWriteFailed:
        """The caller logs it (once per incident at the top, not at every statement)."""
        return LedgerWriteFailed(self._why(error))

    async def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """Every row of one read; SQLite's failure to read (I/O error, a damaged file)
        is raised as :class:`LedgerReadFailed`, so callers need not know SQLite."""
        try:
            # One trip to the connection's thread, not three (execute, fetch, close):
            # each trip waits for the event loop, and under load those waits add up.
            return list(await self.db.execute_fetchall(sql, tuple(params)))
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.ProgrammingError | sqlite3.IntegrityError):
                raise  # a bug, not a fault of the file
            raise LedgerReadFailed(self._why(exc)) from exc

    async def _transact(
        self, work: Callable[[Statements], Awaitable[T]], *, isolation: Isolation = "serializable"
    ) -> T:
        """``work`` in one :meth:`_transaction` (alone on the connection, whatever
        ``isolation`` says)."""
        async with self._transaction() as db:
            return await work(_InTransaction(self, db))

    async def _in_users_turn(self, user_id: int, work: Callable[[Statements], Awaitable[T]]) -> T:
        """A transaction writes alone here: every start takes turns with every other."""
        return await self._transact(work)

    # -- starting a paid job ---------------------------------------------------------

    async def _start_free(
        self, job_id: int, user_id: int, limits: Limits, now: float
    ) -> Job | None:
        """The common Generate in one statement (one trip to the connection's thread, the
        write lock held for that one only): the user's free draft moves to PREPARING if
        it is within their limits (as :meth:`_limit_outcome` counts them). None: not
        started; the caller's transaction then says why."""
        rows = await self._write_returning(
            "UPDATE jobs SET state=?, price_stars=0, generate_at=?, updated_at=? "
            "WHERE id=? AND user_id=? AND state=? "
            "AND (SELECT COUNT(*) FROM jobs WHERE user_id=? "
            f"AND state IN ({placeholders(ACTIVE)})) < ? "
            "AND (? <= 0 OR (SELECT COUNT(*) FROM jobs WHERE user_id=? AND generate_at>=? "
            "AND state<>?) < ?) RETURNING *",
            (
                JobState.PREPARING.value,
                now,
                now,
                job_id,
                user_id,
                JobState.DRAFT.value,
                user_id,
                *ACTIVE,
                limits.max_active_per_user,
                limits.daily_per_user,
                user_id,
                utc_day_start(now),
                JobState.REJECTED.value,
                limits.daily_per_user,
            ),
        )
        return row_to_job(rows[0]) if rows else None

    # -- transitions -----------------------------------------------------------------

    async def transition(
        self,
        job_id: int,
        source: JobState,
        target: JobState,
        *,
        lease: Lease | None = None,
        **fields: Any,
    ) -> Job | None:
        """Compare-and-set ``source`` → ``target``; None if the job was not in ``source``.

        Entering a terminal state stamps ``finished_at``. With ``lease``, fenced: the same
        statement requires the lease and extends it (LeaseLost when it is not held).
        """
        if not can_transition(source, target):
            raise InvalidTransition(f"{source.value} -> {target.value}")
        unknown = set(fields) - SETTABLE
        if unknown:
            raise ValueError(f"not settable: {sorted(unknown)}")
        now = self._clock()
        values: dict[str, Any] = {
            key: (value.value if isinstance(value, Enum) else value)
            for key, value in fields.items()
        }
        if target in TERMINAL_STATES:
            values.setdefault("finished_at", now)
        # Column names come from SETTABLE only; values are parameters.
        assignments = "".join(f", {key}=?" for key in values)
        lease_sql, lease_params, fence_sql, fence_params = _lease_clauses(
            lease, now, lets_go=values.get("notified_at") is not None
        )
        update = (
            f"UPDATE jobs SET state=?, updated_at=?{assignments}{lease_sql} "
            f"WHERE id=? AND state=?{fence_sql} RETURNING *"
        )
        params = (
            target.value,
            now,
            *values.values(),
            *lease_params,
            job_id,
            source.value,
            *fence_params,
        )
        rows: list[sqlite3.Row] = []
        if target.value not in UNDELIVERED:
            # The common step: one statement, atomic on its own (one trip to the thread).
            rows = await self._write_returning(update, params)
        if not rows and (target.value in UNDELIVERED or lease is not None):
            # A refund to owe with it, or a fenced write refused: in one transaction,
            # so that the lease check tells why of the very state the write found.
            async with self._transaction() as db:
                rows = list(await db.execute_fetchall(update, params))
                if rows and target.value in UNDELIVERED:
                    await self._owe_refund(job_id, RefundReason.JOB_ENDED, now)
                elif not rows and lease is not None:
                    await self._check_lease("jobs", "id", job_id, lease, now)
        if not rows:
            return None
        job = row_to_job(rows[0])
        since = f", {now - job.generate_at:.1f}s after Generate" if job.generate_at else ""
        why = f" ({job.reason.value})" if job.reason and target in TERMINAL_STATES else ""
        log.info("job %s: %s -> %s%s%s", job.short_id, source.value, target.value, why, since)
        return job

    async def _owe_refund(self, job_id: int, reason: RefundReason, now: float) -> None:
        """Inside a transaction: the payment that started this job is owed back."""
        await self.db.execute(
            "UPDATE payments SET refund=?, refund_reason=?, refund_due_at=?, next_refund_at=? "
            "WHERE refund=? AND charge_id=(SELECT charge_id FROM jobs WHERE id=?)",
            (
                RefundState.DUE.value,
                reason.value,
                now,
                now,
                RefundState.NONE.value,
                job_id,
            ),
        )

    async def mark_notified(
        self, job_id: int, now: float | None = None, *, lease: Lease | None = None
    ) -> None:
        """The user has heard the outcome: the job leaves the tracker for good, and its
        lease is let go. With ``lease``, fenced (LeaseLost when it is not held)."""
        stamp = self._clock()
        _, _, fence_sql, fence_params = _lease_clauses(lease, stamp)
        update = (
            "UPDATE jobs SET notified_at=?, updated_at=?, owner=NULL, lease_until=NULL "
            f"WHERE id=? AND notified_at IS NULL{fence_sql}"
        )
        params = (stamp if now is None else now, stamp, job_id, *fence_params)
        if lease is None:
            await self._write(update, params)
            return
        if await self._write(update, params):
            return  # the common case: one statement (one trip to the thread)
        # Refused: again in one transaction, so the checks tell why of the state it found.
        async with self._transaction() as db:
            if (await db.execute(update, params)).rowcount == 0:
                told = await self._scalar(
                    "SELECT notified_at IS NOT NULL AS value FROM jobs WHERE id=?", (job_id,)
                )
                if not told:
                    await self._check_lease("jobs", "id", job_id, lease, stamp)

    async def _check_lease(
        self, table: str, key_column: str, key: Any, lease: Lease, now: float
    ) -> None:
        """After a fenced write changed nothing (inside its transaction): LeaseLost
        unless the row is still leased to ``lease.owner`` (then the row was elsewhere
        in its life, and the caller's compare-and-set says so)."""
        async with self.db.execute(
            f"SELECT owner, lease_until FROM {table} WHERE {key_column}=?", (key,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is not None and not _holds(row, lease.owner, now):
            raise LeaseLost(f"{table} {key}")

    # -- leases (bot.core.leases) ---------------------------------------------------------

    async def _write_returning(self, sql: str, params: Iterable[Any]) -> list[sqlite3.Row]:
        """One write statement ``… RETURNING`` on its own, the rows it wrote: one is
        atomic without ``BEGIN``/``COMMIT`` (SQLite commits it when it is done), and so
        costs one trip to the connection's thread instead of five."""
        async with self._writes.statement():
            try:
                return list(await self.db.execute_fetchall(sql, tuple(params)))
            except sqlite3.OperationalError as exc:
                raise self._write_failed(exc) from exc

    async def _fenced_payment_write(
        self, sql: str, params: tuple[Any, ...], charge_id: str, lease: Lease | None, now: float
    ) -> None:
        """A refund's write; with ``lease`` fenced on the payment's claim (LeaseLost)."""
        if lease is None:
            await self._write(sql, params)
            return
        async with self._transaction() as db:
            if (await db.execute(sql, params)).rowcount == 0:
                await self._check_lease("payments", "charge_id", charge_id, lease, now)

    # -- reads -----------------------------------------------------------------------

    # -- payments ---------------------------------------------------------------------

    async def record_payment(
        self, new: NewPayment, now: float | None = None
    ) -> tuple[PaymentOutcome, Payment, Job | None]:
        """A successful_payment: recorded once (keyed on its charge id) in the same
        transaction that starts its job; one that cannot start its job is owed back."""
        now = self._clock() if now is None else now
        async with self._transaction() as db:
            existing = await self.payment(new.charge_id)
            if existing is not None:
                job = await self.get(existing.job_id) if existing.job_id else None
                return PaymentOutcome.ALREADY_RECORDED, existing, job
            parsed = parse_payload(new.payload)
            job = await self.get(parsed[0]) if parsed else None
            verdict = (
                payability(job, parsed[1], new.user_id, new.amount)
                if parsed
                else PreCheckout.UNKNOWN
            )
            if verdict is PreCheckout.OK:
                refund, reason = RefundState.NONE, None
            else:
                refund = RefundState.DUE
                reason = (
                    RefundReason.ALREADY_PAID
                    if verdict is PreCheckout.ALREADY_PAID
                    else RefundReason.NOT_PAYABLE
                )
            await db.execute(
                "INSERT INTO payments (charge_id, provider_charge_id, user_id, chat_id, job_id, "
                "payload, amount, currency, paid_at, refund, refund_reason, refund_due_at, "
                "next_refund_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    new.charge_id,
                    new.provider_charge_id,
                    new.user_id,
                    new.chat_id,
                    job.id if job else None,
                    new.payload,
                    new.amount,
                    new.currency,
                    now,
                    refund.value,
                    reason.value if reason else None,
                    now if reason else None,
                    now if reason else None,
                ),
            )
            if job is not None and verdict is PreCheckout.OK:
                await db.execute(
                    "UPDATE jobs SET state=?, charge_id=?, generate_at=?, updated_at=? "
                    "WHERE id=? AND state=?",
                    (
                        JobState.PREPARING.value,
                        new.charge_id,
                        now,
                        now,
                        job.id,
                        JobState.AWAITING_PAYMENT.value,
                    ),
                )
                job = await self.get(job.id)
            payment = await self.payment(new.charge_id)
        assert payment is not None
        if reason is None:
            log.info(
                "payment %s: %d %s started job J%s",
                new.charge_id,
                new.amount,
                new.currency,
                payment.job_id,
            )
            return PaymentOutcome.STARTED, payment, job
        log.warning(
            "payment %s: %d %s owed back (%s)",
            new.charge_id,
            new.amount,
            new.currency,
            reason.value,
        )
        return PaymentOutcome.REFUND_DUE, payment, job

    async def refund_confirmed(
        self, charge_id: str, now: float | None = None, *, lease: Lease | None = None
    ) -> None:
        """Telegram confirmed the refund (or said it already happened). With ``lease``,
        fenced on the claim, which it extends (the payer is told next)."""
        stamp = self._clock()
        lease_sql, lease_params, fence_sql, fence_params = _lease_clauses(lease, stamp)
        await self._fenced_payment_write(
            f"UPDATE payments SET refund=?, refunded_at=?{lease_sql} "
            f"WHERE charge_id=? AND refund=?{fence_sql}",
            (
                RefundState.DONE.value,
                stamp if now is None else now,
                *lease_params,
                charge_id,
                RefundState.DUE.value,
                *fence_params,
            ),
            charge_id,
            lease,
            stamp,
        )

    async def refund_failed(
        self, charge_id: str, retry_at: float, *, lease: Lease | None = None
    ) -> None:
        """This attempt failed: try again at ``retry_at`` (the claim is let go)."""
        stamp = self._clock()
        _, _, fence_sql, fence_params = _lease_clauses(lease, stamp)
        await self._fenced_payment_write(
            "UPDATE payments SET refund_attempts=refund_attempts+1, next_refund_at=?, "
            f"owner=NULL, lease_until=NULL WHERE charge_id=? AND refund=?{fence_sql}",
            (retry_at, charge_id, RefundState.DUE.value, *fence_params),
            charge_id,
            lease,
            stamp,
        )

    async def refund_told(
        self, charge_id: str, now: float | None = None, *, lease: Lease | None = None
    ) -> None:
        """The payer has heard the refund went through (or cannot be reached); the claim
        is let go."""
        stamp = self._clock()
        _, _, fence_sql, fence_params = _lease_clauses(lease, stamp)
        await self._fenced_payment_write(
            "UPDATE payments SET refund_told_at=?, owner=NULL, lease_until=NULL "
            f"WHERE charge_id=? AND refund_told_at IS NULL{fence_sql}",
            (stamp if now is None else now, charge_id, *fence_params),
            charge_id,
            lease,
            stamp,
        )

    async def request_refund(self, charge_id: str, now: float | None = None) -> Payment | None:
        """An operator's /refund: owed back unless it already is (or was); None if unknown."""
        now = self._clock() if now is None else now
        async with self._transaction() as db:
            await db.execute(
                "UPDATE payments SET refund=?, refund_reason=?, refund_due_at=?, "
                "next_refund_at=? WHERE charge_id=? AND refund=?",
                (
                    RefundState.DUE.value,
                    RefundReason.OPERATOR.value,
                    now,
                    now,
                    charge_id,
                    RefundState.NONE.value,
                ),
            )
            return await self.payment(charge_id)

    # -- users -----------------------------------------------------------------------

    # -- operator alerts -------------------------------------------------------------

    # -- updates (webhook mode) and operations ----------------------------------------

    async def receive_update(self, update_id: int, body: str, lease: Lease, now: float) -> bool:
        """One insert (claim, body and holder); old claims are pruned along with it about
        once an hour: handled ones, and those nobody holds any more (given up)."""
        prune = now - self._claims_pruned_at >= 3600.0
        async with self._transaction() as db:
            cursor = await db.execute(
                "INSERT INTO updates (update_id, received_at, body, owner, lease_until) "
                "VALUES (?,?,?,?,?) ON CONFLICT(update_id) DO NOTHING",
                (update_id, now, body, lease.owner, lease.until(now)),
            )
            claimed = cursor.rowcount == 1
            if prune:
                await db.execute(
                    "DELETE FROM updates WHERE received_at < ? "
                    "AND (handled_at IS NOT NULL OR lease_until < ?)",
                    (now - UPDATE_CLAIM_SECONDS, now),
                )
        if prune:
            self._claims_pruned_at = now
        return claimed
