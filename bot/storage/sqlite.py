"""The job ledger on SQLite: how the ledger's statements (:mod:`.common`) run on one file.

WAL mode with ``synchronous=FULL``: a committed transition of a paid job must survive a
power cut. A read-then-write runs in :meth:`_transaction` (``BEGIN IMMEDIATE``) so it
never meets ``SQLITE_BUSY`` halfway, alone on the connection; the common steps of a job
are single statements (``… RETURNING`` the row), atomic by themselves, and queued to the
connection's thread together (:class:`_WriteGate`). Every trip to that thread waits for
the event loop, so each step is as few trips as it can be: at 25 photos a second, steps
of three to twelve trips, one write at a time, made writes queue for seconds
(docs/benchmarks.md). Reads outside a transaction go to a second, read-only connection
with a thread of its own: WAL lets it read the last commit while the writer writes, so a
button's answer does not queue behind the writes and their fsyncs; a transaction's own
reads stay on its connection. State changes are compare-and-set on the current state,
so a re-delivered update or a second task cannot move a job twice. Rows are read by
column name.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import aiosqlite

from ..core.errors import LedgerError, LedgerReadFailed, LedgerWriteFailed
from ..core.jobs import (
    Job,
    JobState,
)
from ..core.limits import Limits, utc_day_start
from .common import (
    ACTIVE,
    Isolation,
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
        # On the transaction's own connection: it sees what the transaction wrote.
        return await self._ledger._rows_on(self._db, sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return (await self._db.execute(sql, tuple(params))).rowcount


class SqliteLedger(SqlLedger):
    """The :class:`~bot.core.ports.Ledger` on one SQLite file. Open, use, close.

    A running bot holds an exclusive OS lock on ``<ledger>.lock`` while the ledger is
    open (``exclusive=True``): a second bot on the same file stops at start, and since
    the OS drops the lock with the process, a SIGKILL leaves nothing stale. ``check``
    opens without it, beside a running bot.
    """

    _log = log

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
        #: A second, read-only connection (its own thread) for reads outside a
        #: transaction: WAL lets it read the last commit while the first one writes, so a
        #: button's answer does not wait behind every write and its fsync (issue 16).
        self._reader: aiosqlite.Connection | None = None
        self._writes = _WriteGate()
        #: (device, inode) of the file opened: the path must still name it.
        self._identity: tuple[int, int] | None = None

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
                # Last: the file is migrated and in WAL mode by now.
                self._reader = await self._open_reader()
        except BaseException:
            self._db = None
            self._identity = None
            await db.close()
            self._release_lock()
            raise

    async def _open_reader(self) -> aiosqlite.Connection:
        """The read-only connection, on the file the writer has open (in WAL mode)."""
        uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?mode=ro"
        reader = await aiosqlite.connect(uri, uri=True, isolation_level=None)
        reader.row_factory = sqlite3.Row
        try:
            await reader.execute("PRAGMA busy_timeout=5000")
        except BaseException:
            await reader.close()
            raise
        return reader

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
        """Close both connections and let the lock go. Reads already queued are answered
        first (a connection's thread works in order); a read asked for after this began
        finds the ledger closed. Each connection's thread ends with it: aiosqlite's are
        not daemons, and one left running would keep the stopped bot's process alive."""
        reader, self._reader = self._reader, None
        db, self._db = self._db, None
        try:
            if reader is not None:
                await reader.close()
        finally:
            try:
                if db is not None:
                    await db.close()
            finally:
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
    def reads(self) -> aiosqlite.Connection:
        """The connection reads outside a transaction go to (the read-only one, once
        open; an in-memory ledger has only the one)."""
        return self._reader or self.db

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
        """Every row of one read, on the read-only connection (the last commit)."""
        return await self._rows_on(self.reads, sql, params)

    async def _rows_on(
        self, db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()
    ) -> list[sqlite3.Row]:
        """Every row of one statement on ``db``; SQLite's failure to read (I/O error, a
        damaged file) is raised as :class:`LedgerReadFailed`, so callers need not know
        SQLite."""
        try:
            # One trip to the connection's thread, not three (execute, fetch, close):
            # each trip waits for the event loop, and under load those waits add up.
            return list(await db.execute_fetchall(sql, tuple(params)))
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

    async def _write_returning(self, sql: str, params: Iterable[Any]) -> list[sqlite3.Row]:
        """One write statement ``… RETURNING`` on its own, the rows it wrote: one is
        atomic without ``BEGIN``/``COMMIT`` (SQLite commits it when it is done), and so
        costs one trip to the connection's thread instead of five."""
        async with self._writes.statement():
            try:
                return list(await self.db.execute_fetchall(sql, tuple(params)))
            except sqlite3.OperationalError as exc:
                raise self._write_failed(exc) from exc
