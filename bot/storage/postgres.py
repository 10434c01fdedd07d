"""The job ledger on PostgreSQL (``DATABASE_URL``): the same promises as the SQLite one.

The driver is asyncpg: asyncio-native, with its own connection pool, fast binary
encoding, and no libpq (psycopg 3 is built on libpq, from the system or bundled in its
binary wheels, for features this bot does not need). This module is imported only when
``DATABASE_URL`` is set, so the SQLite default never loads asyncpg.

How the SQLite ledger's guarantees carry over:

- Every read-then-write runs in one ``SERIALIZABLE`` transaction, retried from the start
  when PostgreSQL reports a serialization failure or a deadlock: the same outcome as
  SQLite's one writer at a time (``BEGIN IMMEDIATE``), with several connections — or
  several bot processes — at once. Single-statement writes are compare-and-set on the
  row (``WHERE state=$n``), atomic by themselves.
- Except the busiest ones: a photo's draft and the starts (Generate, Try again, Again).
  Their counts of a user's jobs (the limits, the free videos) made SERIALIZABLE's
  predicate locks conflict across users by the dozen when many arrived at once, until
  some ran out of retries. They run at READ COMMITTED; a start first takes its user's
  transaction-scoped advisory lock (:data:`_USER_STARTS`), so one user's starts count
  and write one at a time while other users' never wait on or fail for each other; a
  draft is one ``INSERT … ON CONFLICT DO NOTHING`` that needs no lock.
- Uniqueness on re-delivered updates is the same unique indexes (``jobs_trigger``,
  ``retry_of``, ``request_id``, the payment's ``charge_id``).
- A connection lost (PostgreSQL restarted, a network blip) expires the pool's other
  connections, and the call is made once more on a fresh one, unless the loss came at a
  transaction's ``COMMIT`` (whether it committed is unknown: the caller hears the
  failure, and since every write is compare-and-set or keyed, its retry finds what
  happened). A single statement made twice is harmless for the same reason.
  A call that still fails raises :class:`LedgerWriteFailed` or :class:`LedgerReadFailed`,
  like SQLite's faults; nothing above the ledger knows which database it is.
- Leases (which instance drives a job or works a refund) are single statements at READ
  COMMITTED: an ``UPDATE … WHERE`` re-checks its row after a concurrent writer commits,
  and batch claims lock their rows ``FOR UPDATE SKIP LOCKED``, so two instances claiming
  at once split the jobs without waiting on or retrying each other. A fenced write
  (the lease required in its ``WHERE``) is one statement too; one that must write more
  than one row (a refund owed with it), or that was refused and must say why, runs in
  one READ COMMITTED transaction.
- The statements and the rules around them are the SQLite ledger's, written once in
  :mod:`.common` with ``?`` placeholders (numbered for asyncpg); this module supplies how
  they run, and keeps what only PostgreSQL does.
- Migrations are ``migrations/postgres/000N_*.sql`` (SQLite's numbers and names), each
  in its own transaction with its version recorded in ``schema_migrations``, under an
  advisory lock so that bots starting together migrate once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg

from ..core.errors import (
    LedgerReadFailed,
    LedgerWriteFailed,
)
from .common import (
    Isolation,
    SqlLedger,
    Statements,
    numbered,
)
from .migrations import Migration, load_migrations
from .sqlite import LedgerUnusable
from .urls import redact_database_url

__all__ = ["PostgresLedger", "POSTGRES_SCHEMA_VERSION"]

log = logging.getLogger(__name__)

T = TypeVar("T")
if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]

_MIGRATIONS = load_migrations(f"{__package__}.migrations.postgres")
POSTGRES_SCHEMA_VERSION = len(_MIGRATIONS)

#: Key of the advisory lock held while migrating: bots starting together migrate once.
_MIGRATION_LOCK = 0x5741524D  # "WARM"
#: A serialization failure is retried this often before the call counts as failed.
_SERIALIZATION_RETRIES = 20
#: The pause before retrying a serialization failure: a random share of this many seconds,
#: doubling per conflict up to :data:`_RETRY_PAUSE_CAP` (about 3 s at most in all, 1.5 s
#: expected), so that a crowd of conflicting transactions spreads out instead of meeting
#: again at once.
_RETRY_PAUSE_FIRST = 0.005
_RETRY_PAUSE_CAP = 0.2
#: First key of the advisory locks (two-key form, apart from the migration's one-key
#: lock) that make one user's starts take turns; the second key is a hash of the user id.
_USER_STARTS = 0x53544152  # "STAR"
#: Seconds to connect before PostgreSQL counts as unreachable.
CONNECT_TIMEOUT = 10.0
#: Seconds one statement may take before the call counts as failed.
COMMAND_TIMEOUT = 30.0
POOL_MAX_SIZE = 10

#: The connection went away (restart, network): expire the pool, try once more.
_CONNECTION_LOST = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,  # includes ConnectionDoesNotExistError
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.CannotConnectNowError,  # the database system is starting up
    asyncpg.AdminShutdownError,  # pg_ctl stop/restart
    asyncpg.CrashShutdownError,
    # A connection cut mid-statement can leave asyncpg's protocol mid-operation; giving
    # it back to the pool then fails with "cannot switch to state …" (seen in tests).
    asyncpg.InternalClientError,
)
_RETRY_TRANSACTION = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)


def _why(error: BaseException) -> str:
    """An operator's words for what went wrong; never the URL (it holds the password)."""
    if isinstance(
        error, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return "refused the user name or password"
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return "has no such database"
    if isinstance(error, asyncpg.ClientConfigurationError):
        return f"has options the driver refuses ({error})"  # never quotes the password
    if isinstance(error, asyncpg.ReadOnlySQLTransactionError):
        return "cannot be written (the database is read-only)"
    if isinstance(error, asyncpg.DiskFullError):
        return "cannot be written: the database server's disk is full"
    if isinstance(error, ConnectionRefusedError):
        return "cannot be reached (connection refused)"
    if isinstance(error, TimeoutError):
        return "did not answer in time"
    if isinstance(error, OSError):
        return f"cannot be reached ({error.strerror or type(error).__name__})"
    if isinstance(error, _CONNECTION_LOST):
        return f"lost the connection ({type(error).__name__})"
    if isinstance(error, asyncpg.PostgresError):
        return f"refused it (PostgreSQL {error.sqlstate}: {error.args[0] if error.args else ''})"
    return f"cannot be used ({type(error).__name__})"


def _values(values: Sequence[Any]) -> list[Any]:
    return [value.value if isinstance(value, Enum) else value for value in values]


class PostgresLedger(SqlLedger):
    """The :class:`~bot.core.ports.Ledger` in one PostgreSQL database. Open, use, close.

    The ledger's rules hold across connections and processes, so several bots may run
    on one database: each job is driven by the instance holding its lease
    (:mod:`bot.core.leases`), and every paid step is fenced on that lease in the
    statement that records it. Unlike SQLite's exclusive open, nothing here can prove
    that another instance is gone: a dead instance's jobs wait for its leases to lapse.
    """

    _log = log

    #: Batch claims skip the rows another instance is claiming right now.
    _SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    #: A start locks the job it reads, so that the compare-and-set after cannot miss.
    _LOCK_ROW = " FOR UPDATE"

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        pool_size: int = POOL_MAX_SIZE,
    ) -> None:
        self._url = url
        self._clock = clock
        self._pool_size = pool_size
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        #: Where the ledger is, without the password: for log lines and errors.
        self.where = redact_database_url(url)

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, migrate to the current schema; any fault is one :class:`LedgerUnusable`
        with a plain reason (never the password)."""
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                # No floor kept: the pool would re-dial a restarting server in the
                # background and log a traceback each time; calls open what they need.
                min_size=0,
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise LedgerUnusable(_why(exc)) from None
        except ValueError:  # the URL did not parse (its text may hold the password)
            raise LedgerUnusable("is not a usable postgresql:// URL") from None
        try:
            await self._migrate()
        except LedgerUnusable:
            await self.close()
            raise
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self.close()
            raise LedgerUnusable(_why(exc)) from None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await pool.close()
            pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise RuntimeError("the ledger is not open")
        return self._pool

    async def _migrate(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
                )
                version = int(
                    await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                )
                if version > POSTGRES_SCHEMA_VERSION:
                    raise LedgerUnusable(
                        f"was written by a newer version of the bot (schema {version}; this"
                        f" bot knows {POSTGRES_SCHEMA_VERSION}): run that version"
                    )
                for migration in _MIGRATIONS[version:]:
                    await self._apply(conn, migration)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)

    async def _apply(self, conn: Connection, migration: Migration) -> None:
        async with conn.transaction():
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1,$2,$3)",
                migration.version,
                migration.name,
                time.time(),
            )
        log.info("ledger %s migrated to %s", self.where, migration.name)

    async def prove_writable(self) -> None:
        """A real write that changes nothing (the schema's row, rewritten): ``check``."""
        try:
            await self._run(
                lambda conn: conn.execute(
                    "UPDATE schema_migrations SET applied_at=applied_at WHERE version=$1",
                    POSTGRES_SCHEMA_VERSION,
                ),
                write=True,
            )
        except LedgerWriteFailed as exc:
            raise LedgerUnusable(str(exc)) from exc

    def gone(self) -> str | None:
        """Always None: a database cannot be deleted from under a path as SQLite's file
        can, and several bots may share it (leases say which drives each job)."""
        return None

    async def run_in_transaction(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """``work`` in one SERIALIZABLE write transaction (``copy-ledger``'s bulk copy)."""
        return await self._run(work, write=True, transaction=True)

    # -- running statements ----------------------------------------------------------

    async def _run(
        self,
        work: Callable[[Connection], Awaitable[T]],
        *,
        write: bool,
        transaction: bool = False,
        isolation: Isolation = "serializable",
    ) -> T:
        """``work`` on a pooled connection (in one transaction when asked, SERIALIZABLE
        unless ``isolation`` says otherwise).

        A serialization failure runs it again from the start; a connection lost before
        ``COMMIT`` runs it once more on a fresh connection; any other failure is the
        core's :class:`LedgerWriteFailed` (``write``) or :class:`LedgerReadFailed`.
        Unique violations and other bugs pass through as they are.
        """
        lost_once = False
        conflicts = 0
        while True:
            committing = False
            try:
                async with self.pool.acquire() as conn:
                    if not transaction:
                        return await work(conn)
                    tx = conn.transaction(isolation=isolation)
                    await tx.start()
                    try:
                        result = await work(conn)
                    except BaseException:
                        with contextlib.suppress(Exception):
                            await tx.rollback()
                        raise
                    committing = True
                    await tx.commit()
                    return result
            except _RETRY_TRANSACTION as exc:
                conflicts += 1
                if conflicts > _SERIALIZATION_RETRIES:
                    raise self._failed(exc, write) from exc
                await asyncio.sleep(_retry_pause(conflicts))
            except _CONNECTION_LOST as exc:
                await self.pool.expire_connections()
                if lost_once or committing:
                    raise self._failed(exc, write) from exc
                lost_once = True
                log.info("ledger %s: connection lost (%s); trying again", self.where, exc)
            except (
                asyncpg.IntegrityConstraintViolationError,
                asyncpg.SyntaxOrAccessError,
                asyncpg.DataError,
            ):
                raise  # a bug, not a fault of the database
            except asyncpg.PostgresError as exc:
                raise self._failed(exc, write) from exc

    def _failed(self, error: BaseException, write: bool) -> LedgerWriteFailed | LedgerReadFailed:
        """The caller logs it (once per incident at the top, not at every statement)."""
        return LedgerWriteFailed(_why(error)) if write else LedgerReadFailed(_why(error))

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[asyncpg.Record]:
        """Every row of one read (``?`` placeholders)."""
        return await self._run(
            lambda conn: conn.fetch(numbered(sql), *_values(params)), write=False
        )

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement on its own (atomic by itself); the rows it changed."""
        status = await self._run(
            lambda conn: conn.execute(numbered(sql), *_values(params)), write=True
        )
        return _rowcount(status)

    async def _write_returning(self, sql: str, params: Sequence[Any]) -> list[asyncpg.Record]:
        """One write ``… RETURNING`` on its own (READ COMMITTED, as every single
        statement here); its rows."""
        return await self._run(
            lambda conn: conn.fetch(numbered(sql), *_values(params)), write=True
        )

    async def _transact(
        self, work: Callable[[Statements], Awaitable[T]], *, isolation: Isolation = "serializable"
    ) -> T:
        """``work`` in one transaction (SERIALIZABLE unless ``isolation`` says otherwise),
        run again from the start on a serialization failure (:meth:`_run`)."""
        return await self._run(
            lambda conn: work(_InTransaction(conn)),
            write=True,
            transaction=True,
            isolation=isolation,
        )

    async def _in_users_turn(self, user_id: int, work: Callable[[Statements], Awaitable[T]]) -> T:
        """A start's ``work`` at READ COMMITTED, after taking its user's turn.

        Under the user's lock each statement sees every earlier start of that user
        committed, so the counts are exact; the job rows it reads are locked
        (``FOR UPDATE``) so the compare-and-set that follows cannot miss. Transitions
        made meanwhile by the tracker only lower the counts (a job ending), and a payment
        (checked at pre-checkout, never refused after) takes no turn, as before.
        """

        async def in_turn(conn: Connection) -> T:
            await _take_user_turn(conn, user_id)
            return await work(_InTransaction(conn))

        return await self._run(in_turn, write=True, transaction=True, isolation="read_committed")

    # -- the Telegram budget shared by every instance (bot.telegram.pacing) -------------
    # Kept in one block: PostgreSQL is the one ledger several instances share; a SQLite
    # bot is alone and keeps its budget in memory. Times are the server's clock.

    #: Places of the shared Telegram budget known to exist (the migration makes 30).
    _budget_places: int = 30
    #: When quiet chats' turns were last forgotten (monotonic; at most once a minute).
    _turns_pruned_at: float = float("-inf")

    async def take_send_places(
        self, limit: int, count: int, flight: float, reserve: int = 0
    ) -> tuple[list[tuple[int, float]], float | None]:
        """Up to ``count`` of the bot's ``limit`` places that are free now, held for
        ``flight`` seconds (unless given back sooner), leaving ``reserve`` of them free,
        in one statement. Returns each place with the moment it is held until (the proof
        of holding it, for the give-back), and when none was free, the seconds until the
        next one frees (None if unknown)."""

        async def work(conn: Connection) -> tuple[list[tuple[int, float]], float | None]:
            if limit > self._budget_places:
                await conn.execute(
                    "INSERT INTO telegram_places (place) SELECT generate_series(1, $1::int) "
                    "ON CONFLICT (place) DO NOTHING",
                    limit,
                )
                self._budget_places = limit
            row = await conn.fetchrow(_TAKE_PLACES, limit, count, flight, reserve)
            assert row is not None
            places = [
                (int(place), float(until))
                for place, until in zip(row["places"] or (), row["untils"] or (), strict=True)
            ]
            wait = row["wait"]
            return places, None if wait is None else max(0.0, float(wait))

        return await self._run(work, write=True)

    async def give_back_send_places(
        self, places: Sequence[tuple[int, float]], span: float
    ) -> None:
        """Each place comes free ``span`` seconds from now — unless it lapsed and another
        instance holds it meanwhile (then it is theirs to give back)."""
        if not places:
            return
        await self._write(
            "UPDATE telegram_places p SET busy_until = extract(epoch FROM clock_timestamp())"
            " + $3 FROM unnest($1::int[], $2::float8[]) AS r(place, held)"
            " WHERE p.place = r.place AND p.busy_until = r.held",
            ([place for place, _ in places], [held for _, held in places], span),
        )

    async def take_chat_turn(self, chat_id: int, flight: float) -> tuple[float | None, float]:
        """The chat's turn if it is free now, held for ``flight`` seconds: the moment it is
        held until (the proof of holding it), or None and the seconds until it frees."""

        async def work(conn: Connection) -> tuple[float | None, float]:
            held = await conn.fetchval(_TAKE_CHAT_TURN, chat_id, flight)
            if held is not None:
                return float(held), 0.0
            wait = await conn.fetchval(
                "SELECT busy_until - extract(epoch FROM clock_timestamp()) "
                "FROM telegram_chat_turns WHERE chat_id=$1",
                chat_id,
            )
            return None, max(0.0, float(wait or 0.0))

        return await self._run(work, write=True)

    async def end_chat_turn(self, chat_id: int, held: float, gap: float) -> None:
        """The chat's next turn comes ``gap`` seconds from now (if this turn still holds
        it); chats quiet for a minute are forgotten about once a minute."""
        prune = time.monotonic() - self._turns_pruned_at >= 60.0

        async def work(conn: Connection) -> None:
            await conn.execute(
                "UPDATE telegram_chat_turns SET busy_until = "
                "extract(epoch FROM clock_timestamp()) + $3 WHERE chat_id=$1 AND busy_until=$2",
                chat_id,
                held,
                gap,
            )
            if prune:
                await conn.execute(
                    "DELETE FROM telegram_chat_turns "
                    "WHERE busy_until < extract(epoch FROM clock_timestamp()) - 60"
                )

        await self._run(work, write=True)
        if prune:
            self._turns_pruned_at = time.monotonic()


class _InTransaction:
    """The statements of one transaction on its pooled connection (``?`` placeholders)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[asyncpg.Record]:
        return await self._conn.fetch(numbered(sql), *_values(params))

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return _rowcount(await self._conn.execute(numbered(sql), *_values(params)))


async def _take_user_turn(conn: Connection, user_id: int) -> None:
    """Inside a transaction: wait until no other transaction holds this user's turn,
    then hold it until this one ends (a hash collision only makes two users take turns)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1::int, hashint8($2::bigint))", _USER_STARTS, user_id
    )


def _retry_pause(conflicts: int) -> float:
    """Seconds to wait before the ``conflicts``-th retry: exponential, capped, with
    full jitter (a random share of the ceiling)."""
    ceiling = min(_RETRY_PAUSE_CAP, _RETRY_PAUSE_FIRST * 2 ** (conflicts - 1))
    return random.uniform(0, ceiling)


def _rowcount(status: str) -> int:
    """Rows a statement changed, from its status tag (``UPDATE 1``)."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


#: Takes up to $2 of the first $1 places that are free now, holding them $3 seconds, and
#: leaves $4 of the free ones alone (it locks up to $2 + $4 and takes those past the
#: first $4); also says how long until the next busy one frees (the outer query sees the
#: places as they were before this statement: those taken now were free, so they do not
#: count).
_TAKE_PLACES = """
WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t),
free AS (
    SELECT place FROM telegram_places, clock
    WHERE place <= $1 AND busy_until <= clock.t
    ORDER BY busy_until, place LIMIT $2::int + $4::int FOR UPDATE OF telegram_places SKIP LOCKED
),
chosen AS (SELECT place FROM free ORDER BY place OFFSET $4::int),
taken AS (
    UPDATE telegram_places p SET busy_until = clock.t + $3 FROM clock, chosen
    WHERE p.place = chosen.place RETURNING p.place, p.busy_until
)
SELECT
    (SELECT array_agg(place) FROM taken) AS places,
    (SELECT array_agg(busy_until) FROM taken) AS untils,
    (SELECT MIN(busy_until) FROM telegram_places, clock
     WHERE place <= $1 AND busy_until > clock.t) - (SELECT t FROM clock) AS wait
"""
#: Takes chat $1's turn for $2 seconds if nobody holds it now; the moment it is held until.
_TAKE_CHAT_TURN = """
WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t)
INSERT INTO telegram_chat_turns AS c (chat_id, busy_until) SELECT $1, clock.t + $2 FROM clock
ON CONFLICT (chat_id) DO UPDATE SET busy_until = excluded.busy_until
WHERE c.busy_until <= excluded.busy_until - $2
RETURNING c.busy_until
"""
