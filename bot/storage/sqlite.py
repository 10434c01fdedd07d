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
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import IO, Any, Protocol

import aiosqlite

from ..core.errors import InvalidTransition, LedgerError, LedgerReadFailed, LedgerWriteFailed
from ..core.jobs import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    Job,
    JobState,
    NewJob,
    Reason,
    can_transition,
    offers_retry,
)
from ..core.leases import Lease, LeaseLost
from ..core.limits import Limits, StartOutcome, StartResult, utc_day_start
from ..core.options import VideoOptions
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
from ..core.ports import UPDATE_CLAIM_SECONDS, HistoryPage, RunSeconds, StoredUpdate
from ..core.users import UserPreferences
from .migrations import load_migrations

__all__ = ["LedgerLocked", "LedgerUnusable", "SqliteLedger", "SCHEMA_VERSION"]

log = logging.getLogger(__name__)

_MIGRATIONS = load_migrations()
SCHEMA_VERSION = len(_MIGRATIONS)

_JOB = "SELECT * FROM jobs"

#: Columns a transition may set besides ``state``.
_SETTABLE = frozenset(
    {
        "reason",
        "request_id",
        "output_url",
        "video_file_id",
        "poll_count",
        "submitted_at",
        "processing_at",
        "completed_at",
        "finished_at",
        "notified_at",
        "keyboard_message_id",
        # Stored with SUBMITTING, before the POST: they name the request in the history.
        "seed",
        "image_url",
        "submit_sent_at",
    }
)


class Row(Protocol):
    """A database row read by column name (``sqlite3.Row``, or a PostgreSQL record)."""

    def __getitem__(self, key: str, /) -> Any: ...


def row_to_job(row: Row) -> Job:
    """A ledger row, read by column name, as the core's :class:`Job`."""
    return Job(
        id=row["id"],
        chat_id=row["chat_id"],
        user_id=row["user_id"],
        chat_type=row["chat_type"],
        trigger_message_id=row["trigger_message_id"],
        photo_message_id=row["photo_message_id"],
        thread_id=row["thread_id"],
        file_id=row["file_id"],
        file_unique_id=row["file_unique_id"],
        file_size=row["file_size"],
        mime_type=row["mime_type"],
        options=VideoOptions(
            quality=row["quality"],
            duration=row["duration"],
            style=row["style"],
            seed=row["seed"],
        ),
        state=JobState(row["state"]),
        reason=Reason(row["reason"]) if row["reason"] else None,
        keyboard_message_id=row["keyboard_message_id"],
        request_id=row["request_id"],
        output_url=row["output_url"],
        video_file_id=row["video_file_id"],
        retry_of=row["retry_of"],
        poll_count=row["poll_count"],
        created_at=row["created_at"],
        generate_at=row["generate_at"],
        submitted_at=row["submitted_at"],
        completed_at=row["completed_at"],
        finished_at=row["finished_at"],
        notified_at=row["notified_at"],
        price_stars=row["price_stars"],
        invoice_no=row["invoice_no"],
        invoice_message_id=row["invoice_message_id"],
        charge_id=row["charge_id"],
        image_url=row["image_url"],
        submit_sent_at=row["submit_sent_at"],
        language=row["language"],
    )


def row_to_payment(row: Row) -> Payment:
    return Payment(
        charge_id=row["charge_id"],
        provider_charge_id=row["provider_charge_id"],
        user_id=row["user_id"],
        chat_id=row["chat_id"],
        payload=row["payload"],
        amount=row["amount"],
        currency=row["currency"],
        job_id=row["job_id"],
        paid_at=row["paid_at"],
        refund=RefundState(row["refund"]),
        refund_reason=RefundReason(row["refund_reason"]) if row["refund_reason"] else None,
        refund_due_at=row["refund_due_at"],
        refund_attempts=row["refund_attempts"],
        next_refund_at=row["next_refund_at"],
        refunded_at=row["refunded_at"],
        refund_told_at=row["refund_told_at"],
    )


def _placeholders(values: Sequence[object]) -> str:
    return ",".join("?" for _ in values)


_ACTIVE = tuple(state.value for state in ACTIVE_STATES)
_TERMINAL = tuple(state.value for state in TERMINAL_STATES)
#: Ended without a video: a paid job in one of these owes its payment back.
_UNDELIVERED = tuple(s.value for s in TERMINAL_STATES if s is not JobState.DELIVERED)
_PAYMENT = "SELECT * FROM payments"
#: Jobs the tracker must (re)drive: active, or ended and the user not told yet. The
#: parameters are ``_UNFINISHED_PARAMS``.
_UNFINISHED = (
    f"(state IN ({_placeholders(_ACTIVE)}) "
    f"OR (state IN ({_placeholders(_TERMINAL)}) AND notified_at IS NULL))"
)
_UNFINISHED_PARAMS = (*_ACTIVE, *_TERMINAL)
#: Refunds to work: due and their time has come (parameter: now), or done and untold.
_REFUNDS_TO_WORK = "((refund=? AND next_refund_at<=?) OR (refund=? AND refund_told_at IS NULL))"


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


class SqliteLedger:
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
            problem = await self._scalar("PRAGMA quick_check")
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
        version = int(await self._scalar("PRAGMA user_version") or 0)
        if version > SCHEMA_VERSION:
            raise LedgerUnusable(
                f"was written by a newer version of the bot (schema {version}; this bot "
                f"knows {SCHEMA_VERSION}): run that version, or restore a backup"
            )

    async def _migrate(self) -> None:
        version = int(await self._scalar("PRAGMA user_version") or 0)
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

    async def _row(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    async def _fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Job | None:
        row = await self._row(sql, params)
        return row_to_job(row) if row else None

    async def _fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Job]:
        return [row_to_job(row) for row in await self._rows(sql, params)]

    async def _scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        row = await self._row(sql, params)
        return row[0] if row else None

    # -- drafts ----------------------------------------------------------------------

    async def create_draft(
        self, new: NewJob, options: VideoOptions, now: float | None = None
    ) -> tuple[Job, bool]:
        """Insert a draft for a photo unless one exists for the same asking message.

        Returns the job and whether this call created it (False on re-delivery).
        """
        now = self._clock() if now is None else now
        # One statement (one trip to the connection's thread): the unique index on the
        # asking message makes a re-delivered photo insert nothing.
        rows = await self._write_returning(
            "INSERT INTO jobs (chat_id, user_id, chat_type, trigger_message_id, "
            "photo_message_id, thread_id, file_id, file_unique_id, file_size, "
            "mime_type, quality, duration, style, seed, state, language, created_at, "
            "updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (chat_id, trigger_message_id) WHERE retry_of IS NULL DO NOTHING "
            "RETURNING *",
            (
                new.chat_id,
                new.user_id,
                new.chat_type,
                new.trigger_message_id,
                new.photo_message_id,
                new.thread_id,
                new.file_id,
                new.file_unique_id,
                new.file_size,
                new.mime_type,
                options.quality,
                options.duration,
                options.style,
                options.seed,
                JobState.DRAFT.value,
                new.language,
                now,
                now,
            ),
        )
        if rows:
            return row_to_job(rows[0]), True
        existing = await self._fetch_one(
            f"{_JOB} WHERE chat_id=? AND trigger_message_id=? AND retry_of IS NULL",
            (new.chat_id, new.trigger_message_id),
        )
        assert existing is not None  # drafts are never deleted
        return existing, False

    async def set_keyboard_message(self, job_id: int, message_id: int) -> None:
        """Remember which bot message shows this job's keyboard, then its status."""
        await self._write(
            "UPDATE jobs SET keyboard_message_id=?, updated_at=? WHERE id=?",
            (message_id, self._clock(), job_id),
        )

    async def update_options(self, job_id: int, options: VideoOptions) -> Job | None:
        """Change a draft's options; None when the job is gone or no longer a draft."""
        changed = await self._write(
            "UPDATE jobs SET quality=?, duration=?, style=?, seed=?, updated_at=? "
            "WHERE id=? AND state=?",
            (
                options.quality,
                options.duration,
                options.style,
                options.seed,
                self._clock(),
                job_id,
                JobState.DRAFT.value,
            ),
        )
        return await self.get(job_id) if changed else None

    # -- starting a paid job ---------------------------------------------------------

    async def _limit_outcome(
        self, user_id: int, limits: Limits, now: float
    ) -> StartOutcome | None:
        active = await self._scalar(
            f"SELECT COUNT(*) FROM jobs WHERE user_id=? AND state IN ({_placeholders(_ACTIVE)})",
            (user_id, *_ACTIVE),
        )
        if int(active) >= limits.max_active_per_user:
            return StartOutcome.TOO_MANY_ACTIVE
        if limits.daily_per_user > 0:
            started_today = await self.count_started_since(user_id, utc_day_start(now))
            if started_today >= limits.daily_per_user:
                return StartOutcome.DAILY_LIMIT
        return None

    async def count_started_since(self, user_id: int, since: float) -> int:
        """Jobs a user started (pressed Generate) since ``since``; refused submits don't count."""
        value = await self._scalar(
            "SELECT COUNT(*) FROM jobs WHERE user_id=? AND generate_at>=? AND state<>?",
            (user_id, since, JobState.REJECTED.value),
        )
        return int(value or 0)

    async def free_videos_used(self, user_id: int) -> int:
        """Free jobs a user started that made (or may still make) a video."""
        value = await self._scalar(
            f"SELECT COUNT(*) FROM jobs WHERE user_id=? AND generate_at IS NOT NULL "
            f"AND charge_id IS NULL AND state NOT IN ({_placeholders(_UNDELIVERED)})",
            (user_id, *_UNDELIVERED),
        )
        return int(value or 0)

    async def _needs_payment(self, user_id: int, price: int, free_videos: int) -> bool:
        return price > 0 and await self.free_videos_used(user_id) >= free_videos

    async def start(
        self,
        job_id: int,
        user_id: int,
        limits: Limits,
        now: float | None = None,
        *,
        price: int = 0,
        free_videos: int = 0,
    ) -> StartResult:
        """Generate pressed: a draft moves on once, within the user's limits — to
        PREPARING when it is free, else to AWAITING_PAYMENT with its price and a new
        invoice number (outcome INVOICE)."""
        now = self._clock() if now is None else now
        if price <= 0:
            started = await self._start_free(job_id, user_id, limits, now)
            if started is not None:
                return StartResult(StartOutcome.STARTED, started)
        # Priced, or refused: the transaction below finds out which outcome it is.
        async with self._transaction() as db:
            job = await self.get(job_id)
            if job is None:
                return StartResult(StartOutcome.NOT_FOUND)
            if job.user_id != user_id:
                return StartResult(StartOutcome.NOT_OWNER, job)
            if job.state is JobState.AWAITING_PAYMENT:
                return StartResult(StartOutcome.AWAITING_PAYMENT, job)
            if job.state is not JobState.DRAFT:
                return StartResult(StartOutcome.ALREADY_STARTED, job)
            refused = await self._limit_outcome(user_id, limits, now)
            if refused is not None:
                return StartResult(refused, job)
            if await self._needs_payment(user_id, price, free_videos):
                await db.execute(
                    "UPDATE jobs SET state=?, price_stars=?, invoice_no=invoice_no+1, "
                    "updated_at=? WHERE id=? AND state=?",
                    (JobState.AWAITING_PAYMENT.value, price, now, job_id, JobState.DRAFT.value),
                )
                return StartResult(StartOutcome.INVOICE, await self.get(job_id))
            await db.execute(
                "UPDATE jobs SET state=?, price_stars=0, generate_at=?, updated_at=? "
                "WHERE id=? AND state=?",
                (JobState.PREPARING.value, now, now, job_id, JobState.DRAFT.value),
            )
            return StartResult(StartOutcome.STARTED, await self.get(job_id))

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
            f"AND state IN ({_placeholders(_ACTIVE)})) < ? "
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
                *_ACTIVE,
                limits.max_active_per_user,
                limits.daily_per_user,
                user_id,
                utc_day_start(now),
                JobState.REJECTED.value,
                limits.daily_per_user,
            ),
        )
        return row_to_job(rows[0]) if rows else None

    async def start_retry(
        self,
        old_job_id: int,
        user_id: int,
        limits: Limits,
        status_message_id: int | None,
        now: float | None = None,
        *,
        price: int = 0,
        free_videos: int = 0,
    ) -> StartResult:
        """ "Try again" pressed: one new job copying an ended one, however often pressed;
        priced like any other (outcome INVOICE: it awaits its own payment). It gets a
        seed of its own at its submit: the old request must not be taken for it. Only a
        job whose outcome offered "Try again" (:func:`offers_retry`) may be followed: a
        forged or stale press on a delivered or running job is NOT_FOUND."""
        now = self._clock() if now is None else now
        async with self._transaction() as db:
            old = await self.get(old_job_id)
            if old is None or not offers_retry(old):
                return StartResult(StartOutcome.NOT_FOUND)
            if old.user_id != user_id:
                return StartResult(StartOutcome.NOT_OWNER, old)
            existing = await self._fetch_one(f"{_JOB} WHERE retry_of=?", (old_job_id,))
            if existing is not None:
                return StartResult(StartOutcome.ALREADY_STARTED, existing)
            refused = await self._limit_outcome(user_id, limits, now)
            if refused is not None:
                return StartResult(refused, old)
            return await self._start_follow_up(
                db,
                old,
                price=price,
                free_videos=free_videos,
                now=now,
                status_message_id=status_message_id,
                reuse_image_url=False,
            )

    async def start_again(
        self,
        old_job_id: int,
        user_id: int,
        limits: Limits,
        now: float | None = None,
        *,
        price: int = 0,
        free_videos: int = 0,
    ) -> StartResult:
        """ "Again" under a delivered video: one new job per video, however often pressed.

        ``retry_of`` (unique) names the delivered job, as for "Try again" (which only ever
        follows jobs that made no video, so the two never meet). The new job copies the
        photo, the options and the re-hosted ``image_url`` (the tracker checks that it is
        still served before using it) and gets a seed of its own at its submit.
        """
        now = self._clock() if now is None else now
        async with self._transaction() as db:
            old = await self.get(old_job_id)
            if old is None or old.state is not JobState.DELIVERED:
                return StartResult(StartOutcome.NOT_FOUND)
            if old.user_id != user_id:
                return StartResult(StartOutcome.NOT_OWNER, old)
            existing = await self._fetch_one(f"{_JOB} WHERE retry_of=?", (old_job_id,))
            if existing is not None:
                if existing.state is JobState.AWAITING_PAYMENT:
                    return StartResult(StartOutcome.AWAITING_PAYMENT, existing)
                return StartResult(StartOutcome.ALREADY_STARTED, existing)
            refused = await self._limit_outcome(user_id, limits, now)
            if refused is not None:
                return StartResult(refused, old)
            return await self._start_follow_up(
                db,
                old,
                price=price,
                free_videos=free_videos,
                now=now,
                status_message_id=None,
                reuse_image_url=True,
            )

    async def _start_follow_up(
        self,
        db: aiosqlite.Connection,
        old: Job,
        *,
        price: int,
        free_videos: int,
        now: float,
        status_message_id: int | None,
        reuse_image_url: bool,
    ) -> StartResult:
        """The new job of "Try again" or "Again": a copy of ``old`` (photo, options,
        language; its upload too with ``reuse_image_url``) with no seed yet, free or
        awaiting its own payment. ``retry_of`` names ``old`` (unique: one per press)."""
        priced = await self._needs_payment(old.user_id, price, free_videos)
        state = JobState.AWAITING_PAYMENT if priced else JobState.PREPARING
        cursor = await db.execute(
            "INSERT INTO jobs (chat_id, user_id, chat_type, trigger_message_id, "
            "photo_message_id, thread_id, file_id, file_unique_id, file_size, mime_type, "
            "quality, duration, style, seed, image_url, state, keyboard_message_id, "
            "retry_of, price_stars, invoice_no, created_at, generate_at, updated_at, language) "
            "SELECT chat_id, user_id, chat_type, trigger_message_id, photo_message_id, "
            "thread_id, file_id, file_unique_id, file_size, mime_type, quality, duration, "
            "style, NULL, CASE WHEN ? THEN image_url END, ?, ?, id, ?, ?, ?, ?, ?, language "
            "FROM jobs WHERE id=?",
            (
                reuse_image_url,
                state.value,
                status_message_id,
                price if priced else 0,
                1 if priced else 0,
                now,
                None if priced else now,
                now,
                old.id,
            ),
        )
        new = await self._fetch_one(f"{_JOB} WHERE id=?", (cursor.lastrowid,))
        outcome = StartOutcome.INVOICE if priced else StartOutcome.STARTED
        return StartResult(outcome, new)

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
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"not settable: {sorted(unknown)}")
        now = self._clock()
        values: dict[str, Any] = {
            key: (value.value if isinstance(value, Enum) else value)
            for key, value in fields.items()
        }
        if target in TERMINAL_STATES:
            values.setdefault("finished_at", now)
        # Column names come from _SETTABLE only; values are parameters.
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
        if target.value not in _UNDELIVERED:
            # The common step: one statement, atomic on its own (one trip to the thread).
            rows = await self._write_returning(update, params)
        if not rows and (target.value in _UNDELIVERED or lease is not None):
            # A refund to owe with it, or a fenced write refused: in one transaction,
            # so that the lease check tells why of the very state the write found.
            async with self._transaction() as db:
                rows = list(await db.execute_fetchall(update, params))
                if rows and target.value in _UNDELIVERED:
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
                    "SELECT notified_at IS NOT NULL FROM jobs WHERE id=?", (job_id,)
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

    async def claim_job(self, job_id: int, lease: Lease, now: float | None = None) -> Job | None:
        """Claim (or extend) one unfinished job's lease unless another instance holds it
        unlapsed; the job, or None."""
        now = self._clock() if now is None else now
        rows = await self._write_returning(
            "UPDATE jobs SET owner=?, lease_until=? WHERE id=? "
            f"AND (owner IS NULL OR owner=? OR lease_until<?) AND {_UNFINISHED} RETURNING *",
            (lease.owner, lease.until(now), job_id, lease.owner, now, *_UNFINISHED_PARAMS),
        )
        return row_to_job(rows[0]) if rows else None

    async def claim_jobs(self, lease: Lease, limit: int, now: float | None = None) -> list[Job]:
        """Up to ``limit`` unfinished jobs nobody holds, oldest first, now ``lease``'s.
        (PostgreSQL: the inner SELECT takes ``FOR UPDATE SKIP LOCKED``.)"""
        now = self._clock() if now is None else now
        rows = await self._write_returning(
            "UPDATE jobs SET owner=?, lease_until=? WHERE id IN (SELECT id FROM jobs "
            f"WHERE {_UNFINISHED} AND (owner IS NULL OR lease_until<?) ORDER BY id LIMIT ?) "
            "RETURNING *",
            (lease.owner, lease.until(now), *_UNFINISHED_PARAMS, now, limit),
        )
        return sorted((row_to_job(row) for row in rows), key=lambda job: job.id)

    async def renew_leases(self, lease: Lease, now: float | None = None) -> list[int]:
        """One statement: every unlapsed lease of ``lease.owner`` extended; their job ids."""
        now = self._clock() if now is None else now
        rows = await self._write_returning(
            "UPDATE jobs SET lease_until=? WHERE owner=? AND lease_until>=? "
            "AND notified_at IS NULL RETURNING id",
            (lease.until(now), lease.owner, now),
        )
        return sorted(int(row["id"]) for row in rows)

    async def hold_job(
        self, job_id: int, state: JobState, lease: Lease, now: float | None = None
    ) -> bool:
        """Still ``lease.owner``'s, unlapsed, and in ``state``: extended, True."""
        now = self._clock() if now is None else now
        changed = await self._write(
            "UPDATE jobs SET lease_until=? WHERE id=? AND state=? AND owner=? AND lease_until>=?",
            (lease.until(now), job_id, state.value, lease.owner, now),
        )
        return changed == 1

    async def release_leases(self, owner: str) -> None:
        await self._write("UPDATE jobs SET owner=NULL, lease_until=NULL WHERE owner=?", (owner,))

    async def claim_refunds(self, lease: Lease, now: float, limit: int = 10) -> list[Payment]:
        """Refunds to work (as refunds_to_work) that no other instance holds, now
        ``lease``'s. (PostgreSQL: the inner SELECT takes ``FOR UPDATE SKIP LOCKED``.)"""
        rows = await self._write_returning(
            "UPDATE payments SET owner=?, lease_until=? WHERE charge_id IN (SELECT charge_id "
            f"FROM payments WHERE {_REFUNDS_TO_WORK} AND (owner IS NULL OR owner=? "
            "OR lease_until<?) ORDER BY refund_due_at LIMIT ?) RETURNING *",
            (
                lease.owner,
                lease.until(now),
                RefundState.DUE.value,
                now,
                RefundState.DONE.value,
                lease.owner,
                now,
                limit,
            ),
        )
        payments = [row_to_payment(row) for row in rows]
        return sorted(payments, key=lambda p: (p.refund_due_at or 0.0, p.charge_id))

    async def release_refunds(self, owner: str) -> None:
        await self._write(
            "UPDATE payments SET owner=NULL, lease_until=NULL WHERE owner=?", (owner,)
        )

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

    async def get(self, job_id: int) -> Job | None:
        return await self._fetch_one(f"{_JOB} WHERE id=?", (job_id,))

    async def unfinished(self) -> list[Job]:
        """Jobs the tracker must (re)drive: active, or ended but not yet told to the user."""
        return await self._fetch_all(f"{_JOB} WHERE {_UNFINISHED} ORDER BY id", _UNFINISHED_PARAMS)

    async def recent(self, limit: int = 10) -> list[Job]:
        """The latest started jobs, newest first (for operators)."""
        return await self._fetch_all(
            f"{_JOB} WHERE generate_at IS NOT NULL ORDER BY generate_at DESC, id DESC LIMIT ?",
            (limit,),
        )

    async def count_active(self) -> int:
        """Jobs being worked on right now, across all users."""
        value = await self._scalar(
            f"SELECT COUNT(*) FROM jobs WHERE state IN ({_placeholders(_ACTIVE)})", _ACTIVE
        )
        return int(value or 0)

    async def history(
        self,
        user_id: int,
        limit: int = 10,
        *,
        before_id: int | None = None,
        after_id: int | None = None,
        chat_id: int | None = None,
    ) -> HistoryPage:
        """A user's started jobs, newest first, a page at a time (ids are the cursor:
        they only grow, so a page does not shift when a new job starts)."""
        where = "user_id=? AND generate_at IS NOT NULL"
        params: list[Any] = [user_id]
        if chat_id is not None:
            where += " AND chat_id=?"
            params.append(chat_id)
        if after_id is not None:
            jobs = await self._fetch_all(
                f"{_JOB} WHERE {where} AND id>? ORDER BY id LIMIT ?",
                (*params, after_id, limit),
            )
            jobs.reverse()
        else:
            bound = "" if before_id is None else " AND id<?"
            bound_params = () if before_id is None else (before_id,)
            jobs = await self._fetch_all(
                f"{_JOB} WHERE {where}{bound} ORDER BY id DESC LIMIT ?",
                (*params, *bound_params, limit),
            )
        if not jobs:
            return HistoryPage([], has_older=False, has_newer=False)
        older = await self._scalar(
            f"SELECT EXISTS (SELECT 1 FROM jobs WHERE {where} AND id<?)",
            (*params, jobs[-1].id),
        )
        newer = await self._scalar(
            f"SELECT EXISTS (SELECT 1 FROM jobs WHERE {where} AND id>?)", (*params, jobs[0].id)
        )
        return HistoryPage(jobs, has_older=bool(older), has_newer=bool(newer))

    async def delivered_videos(self, user_id: int, limit: int = 20) -> list[Job]:
        """A user's delivered videos that Telegram holds (a file id), newest first."""
        return await self._fetch_all(
            f"{_JOB} WHERE user_id=? AND state=? AND video_file_id IS NOT NULL "
            "AND video_file_id<>'' ORDER BY id DESC LIMIT ?",
            (user_id, JobState.DELIVERED.value, limit),
        )

    async def started_since(self, since: float) -> list[Job]:
        """Jobs started (Generate pressed) since ``since``, for statistics."""
        return await self._fetch_all(f"{_JOB} WHERE generate_at>=? ORDER BY id", (since,))

    async def run_seconds(self, quality: str, duration: int, limit: int = 50) -> RunSeconds:
        """How long Segmind took for recent jobs like this one, whole and processing."""
        rows = await self._rows(
            "SELECT completed_at - submitted_at AS total, completed_at - processing_at AS "
            "processing FROM jobs WHERE quality=? AND duration=? AND completed_at IS NOT NULL "
            "AND submitted_at IS NOT NULL ORDER BY completed_at DESC LIMIT ?",
            (quality, duration, limit),
        )
        return RunSeconds(
            total=[float(r["total"]) for r in rows if r["total"] is not None and r["total"] >= 0],
            processing=[
                float(r["processing"])
                for r in rows
                if r["processing"] is not None and r["processing"] >= 0
            ],
        )

    # -- payments ---------------------------------------------------------------------

    async def set_invoice_message(self, job_id: int, message_id: int) -> None:
        """Remember the invoice message, to remove it when the options change."""
        await self._write(
            "UPDATE jobs SET invoice_message_id=?, updated_at=? WHERE id=?",
            (message_id, self._clock(), job_id),
        )

    async def reopen_draft(self, job_id: int, user_id: int) -> Job | None:
        """ "Change options" while an invoice is out: back to DRAFT; the invoice is void."""
        changed = await self._write(
            "UPDATE jobs SET state=?, updated_at=? WHERE id=? AND user_id=? AND state=?",
            (
                JobState.DRAFT.value,
                self._clock(),
                job_id,
                user_id,
                JobState.AWAITING_PAYMENT.value,
            ),
        )
        return await self.get(job_id) if changed else None

    async def check_payment(
        self, payload: str, user_id: int, amount: int, limits: Limits, now: float | None = None
    ) -> PreCheckout:
        """Pre-checkout: may this user pay this amount for this invoice now?"""
        parsed = parse_payload(payload)
        if parsed is None:
            return PreCheckout.UNKNOWN
        verdict = payability(await self.get(parsed[0]), parsed[1], user_id, amount)
        if verdict is not PreCheckout.OK:
            return verdict
        refused = await self._limit_outcome(user_id, limits, self._clock() if now is None else now)
        if refused is StartOutcome.TOO_MANY_ACTIVE:
            return PreCheckout.TOO_MANY_ACTIVE
        if refused is StartOutcome.DAILY_LIMIT:
            return PreCheckout.DAILY_LIMIT
        return PreCheckout.OK

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

    async def payment(self, charge_id: str) -> Payment | None:
        row = await self._row(f"{_PAYMENT} WHERE charge_id=?", (charge_id,))
        return row_to_payment(row) if row else None

    async def payments_of(self, user_id: int, limit: int = 10) -> list[Payment]:
        """A user's latest payments, newest first (for /paysupport)."""
        rows = await self._rows(
            f"{_PAYMENT} WHERE user_id=? ORDER BY paid_at DESC, charge_id LIMIT ?",
            (user_id, limit),
        )
        return [row_to_payment(row) for row in rows]

    async def refunds_to_work(self, now: float, limit: int = 50) -> list[Payment]:
        """Refunds due whose next attempt has come, and confirmed ones not yet told."""
        rows = await self._rows(
            f"{_PAYMENT} WHERE (refund=? AND next_refund_at<=?) "
            "OR (refund=? AND refund_told_at IS NULL) ORDER BY refund_due_at LIMIT ?",
            (RefundState.DUE.value, now, RefundState.DONE.value, limit),
        )
        return [row_to_payment(row) for row in rows]

    async def next_refund_at(self) -> float | None:
        """When the earliest due refund should be tried (None: nothing is due)."""
        value = await self._scalar(
            "SELECT MIN(next_refund_at) FROM payments WHERE refund=?", (RefundState.DUE.value,)
        )
        return float(value) if value is not None else None

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

    async def stars_since(self, since: float) -> tuple[int, int]:
        """(Stars taken, Stars refunded) by payments made since ``since``."""
        rows = await self._rows(
            "SELECT COALESCE(SUM(amount), 0) AS taken, "
            "COALESCE(SUM(CASE WHEN refund=? THEN amount ELSE 0 END), 0) AS refunded "
            "FROM payments WHERE paid_at>=?",
            (RefundState.DONE.value, since),
        )
        row = rows[0] if rows else None
        return (int(row["taken"]), int(row["refunded"])) if row else (0, 0)

    async def refunds_due_before(self, before: float) -> list[Payment]:
        """Refunds still due that became due before ``before`` (stuck ones)."""
        rows = await self._rows(
            f"{_PAYMENT} WHERE refund=? AND refund_due_at<? ORDER BY refund_due_at",
            (RefundState.DUE.value, before),
        )
        return [row_to_payment(row) for row in rows]

    # -- users -----------------------------------------------------------------------

    async def user_preferences(self, user_id: int) -> UserPreferences:
        """The user's chosen language and last options (empty for a user never seen)."""
        row = await self._row(
            "SELECT language, quality, duration, style FROM users WHERE user_id=?", (user_id,)
        )
        if row is None:
            return UserPreferences()
        options = None
        if row["quality"] is not None and row["duration"] is not None:
            options = VideoOptions(row["quality"], row["duration"], row["style"])
        return UserPreferences(language=row["language"], options=options)

    async def set_language(self, user_id: int, language: str, now: float | None = None) -> None:
        """Remember the language the user chose with /language."""
        await self._write(
            "INSERT INTO users (user_id, language, updated_at) VALUES (?,?,?) "
            "ON CONFLICT(user_id) DO UPDATE SET language=excluded.language, "
            "updated_at=excluded.updated_at",
            (user_id, language, self._clock() if now is None else now),
        )

    async def remember_options(
        self, user_id: int, options: VideoOptions, now: float | None = None
    ) -> None:
        """Remember the quality, duration and style the user just chose (not the seed)."""
        await self._write(
            "INSERT INTO users (user_id, quality, duration, style, updated_at) "
            "VALUES (?,?,?,?,?) ON CONFLICT(user_id) DO UPDATE SET quality=excluded.quality, "
            "duration=excluded.duration, style=excluded.style, updated_at=excluded.updated_at",
            (
                user_id,
                options.quality,
                options.duration,
                options.style,
                self._clock() if now is None else now,
            ),
        )

    # -- operator alerts -------------------------------------------------------------

    async def alert_state(self, kind: str) -> tuple[bool, float] | None:
        row = await self._row("SELECT active, last_sent_at FROM alerts WHERE kind=?", (kind,))
        return (bool(row["active"]), float(row["last_sent_at"])) if row else None

    async def save_alert_state(self, kind: str, active: bool, last_sent_at: float) -> None:
        await self._write(
            "INSERT INTO alerts (kind, active, last_sent_at) VALUES (?,?,?) "
            "ON CONFLICT(kind) DO UPDATE SET active=excluded.active, "
            "last_sent_at=excluded.last_sent_at",
            (kind, int(active), last_sent_at),
        )

    # -- updates (webhook mode) and operations ----------------------------------------

    async def receive_update(self, update_id: int, body: str, lease: Lease, now: float) -> bool:
        """One insert (claim, body and holder), a single statement and no transaction: a
        getUpdates batch is stored all at once (:mod:`bot.telegram.inbox`), and a
        transaction per update stopped every other write for each (docs/benchmarks.md).
        About once an hour old claims are pruned first, by a statement of their own:
        handled ones, and those nobody holds any more (given up)."""
        if now - self._claims_pruned_at >= 3600.0:
            pruned_at, self._claims_pruned_at = self._claims_pruned_at, now  # one at a time
            try:
                await self._write(
                    "DELETE FROM updates WHERE received_at < ? "
                    "AND (handled_at IS NOT NULL OR lease_until < ?)",
                    (now - UPDATE_CLAIM_SECONDS, now),
                )
            except BaseException:
                self._claims_pruned_at = pruned_at  # the next update tries again
                raise
        changed = await self._write(
            "INSERT INTO updates (update_id, received_at, body, owner, lease_until) "
            "VALUES (?,?,?,?,?) ON CONFLICT(update_id) DO NOTHING",
            (update_id, now, body, lease.owner, lease.until(now)),
        )
        return changed == 1

    async def updates_handled(self, update_ids: Sequence[int], now: float) -> None:
        if not update_ids:
            return
        await self._write(
            "UPDATE updates SET handled_at=?, owner=NULL, lease_until=NULL "
            f"WHERE update_id IN ({_placeholders(update_ids)}) AND handled_at IS NULL",
            (now, *update_ids),
        )

    async def renew_update_leases(self, lease: Lease, now: float) -> int:
        return await self._write(
            "UPDATE updates SET lease_until=? WHERE owner=? AND handled_at IS NULL",
            (lease.until(now), lease.owner),
        )

    async def claim_stranded_updates(
        self, lease: Lease, now: float, *, max_attempts: int, limit: int
    ) -> list[StoredUpdate]:
        rows = await self._write_returning(
            "UPDATE updates SET owner=?, lease_until=?, attempts=attempts+1 "
            "WHERE update_id IN (SELECT update_id FROM updates WHERE handled_at IS NULL "
            "AND (owner IS NULL OR lease_until<?) AND attempts<? AND body IS NOT NULL "
            "ORDER BY update_id LIMIT ?) RETURNING update_id, body, attempts",
            (lease.owner, lease.until(now), now, max_attempts, limit),
        )
        stored = [StoredUpdate(row["update_id"], row["body"], row["attempts"]) for row in rows]
        return sorted(stored, key=lambda update: update.update_id)

    async def jobs_by_state(self) -> dict[JobState, int]:
        rows = await self._rows("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {JobState(row[0]): int(row[1]) for row in rows}
