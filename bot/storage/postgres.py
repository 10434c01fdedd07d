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
  (the lease required in its ``WHERE``) that must write more than one row runs in one
  READ COMMITTED transaction.
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
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

import asyncpg

from ..core.errors import (
    InvalidTransition,
    LedgerReadFailed,
    LedgerWriteFailed,
)
from ..core.jobs import TERMINAL_STATES, Job, JobState, NewJob, can_transition, offers_retry
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
from .migrations import Migration, load_migrations
from .sqlite import (
    _ACTIVE,
    _SETTABLE,
    _TERMINAL,
    _UNDELIVERED,
    LedgerUnusable,
    row_to_job,
    row_to_payment,
)
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

#: Transaction isolation levels asyncpg takes.
Isolation: TypeAlias = Literal["serializable", "read_committed"]

_JOB = "SELECT * FROM jobs"
#: Jobs the tracker must (re)drive: active, or ended and the user not told yet (two
#: ``text[]`` parameters, the active and the terminal states).
_UNFINISHED = (
    "(state = ANY({active}::text[]) OR (state = ANY({terminal}::text[]) AND notified_at IS NULL))"
)
#: What a fenced write adds to its WHERE: the row leased to the writer, unlapsed.
_FENCE = " AND owner={owner} AND lease_until>={now}"
_PAYMENT = "SELECT * FROM payments"


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


class PostgresLedger:
    """The :class:`~bot.core.ports.Ledger` in one PostgreSQL database. Open, use, close.

    The ledger's rules hold across connections and processes, so several bots may run
    on one database: each job is driven by the instance holding its lease
    (:mod:`bot.core.leases`), and every paid step is fenced on that lease in the
    statement that records it. Unlike SQLite's exclusive open, nothing here can prove
    that another instance is gone: a dead instance's jobs wait for its leases to lapse.
    """

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
        #: When old update claims were last pruned (at most once an hour).
        self._claims_pruned_at = float("-inf")

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
                await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT)
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

    async def _execute(self, sql: str, *params: Any) -> int:
        """One write statement on its own (atomic by itself); the rows it changed."""
        status = await self._run(lambda conn: conn.execute(sql, *_values(params)), write=True)
        return _rowcount(status)

    async def _fetch_one(self, sql: str, *params: Any) -> Job | None:
        row = await self._run(lambda conn: conn.fetchrow(sql, *_values(params)), write=False)
        return row_to_job(row) if row else None

    async def _fetch_all(self, sql: str, *params: Any) -> list[Job]:
        rows = await self._run(lambda conn: conn.fetch(sql, *_values(params)), write=False)
        return [row_to_job(row) for row in rows]

    async def _payments(self, sql: str, *params: Any) -> list[Payment]:
        rows = await self._run(lambda conn: conn.fetch(sql, *_values(params)), write=False)
        return [row_to_payment(row) for row in rows]

    async def _scalar(self, sql: str, *params: Any) -> Any:
        return await self._run(lambda conn: conn.fetchval(sql, *_values(params)), write=False)

    # -- drafts ----------------------------------------------------------------------

    async def create_draft(
        self, new: NewJob, options: VideoOptions, now: float | None = None
    ) -> tuple[Job, bool]:
        """Insert a draft for a photo unless one exists for the same asking message.

        Returns the job and whether this call created it (False on re-delivery).
        """
        now = self._clock() if now is None else now

        async def work(conn: Connection) -> tuple[Job, bool]:
            row = await conn.fetchrow(
                "INSERT INTO jobs (chat_id, user_id, chat_type, trigger_message_id, "
                "photo_message_id, thread_id, file_id, file_unique_id, file_size, "
                "mime_type, quality, duration, style, seed, state, language, created_at, "
                "updated_at) "
                "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$17) "
                "ON CONFLICT (chat_id, trigger_message_id) WHERE retry_of IS NULL DO NOTHING "
                "RETURNING *",
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
            )
            if row is not None:
                return row_to_job(row), True
            existing = await conn.fetchrow(
                f"{_JOB} WHERE chat_id=$1 AND trigger_message_id=$2 AND retry_of IS NULL",
                new.chat_id,
                new.trigger_message_id,
            )
            return _job(existing), False

        # READ COMMITTED: ON CONFLICT waits for a racing insert of the same photo, and
        # the SELECT after it (a snapshot of its own) sees that insert committed.
        return await self._run(work, write=True, transaction=True, isolation="read_committed")

    async def set_keyboard_message(self, job_id: int, message_id: int) -> None:
        """Remember which bot message shows this job's keyboard, then its status."""
        await self._execute(
            "UPDATE jobs SET keyboard_message_id=$1, updated_at=$2 WHERE id=$3",
            message_id,
            self._clock(),
            job_id,
        )

    async def update_options(self, job_id: int, options: VideoOptions) -> Job | None:
        """Change a draft's options; None when the job is gone or no longer a draft."""
        row = await self._run(
            lambda conn: conn.fetchrow(
                "UPDATE jobs SET quality=$1, duration=$2, style=$3, seed=$4, updated_at=$5 "
                "WHERE id=$6 AND state=$7 RETURNING *",
                options.quality,
                options.duration,
                options.style,
                options.seed,
                self._clock(),
                job_id,
                JobState.DRAFT.value,
            ),
            write=True,
        )
        return row_to_job(row) if row else None

    # -- starting a paid job ---------------------------------------------------------

    async def _limit_outcome(
        self, conn: Connection, user_id: int, limits: Limits, now: float
    ) -> StartOutcome | None:
        active = await conn.fetchval(
            "SELECT COUNT(*) FROM jobs WHERE user_id=$1 AND state = ANY($2::text[])",
            user_id,
            list(_ACTIVE),
        )
        if int(active) >= limits.max_active_per_user:
            return StartOutcome.TOO_MANY_ACTIVE
        if limits.daily_per_user > 0:
            started_today = await self._count_started(conn, user_id, utc_day_start(now))
            if started_today >= limits.daily_per_user:
                return StartOutcome.DAILY_LIMIT
        return None

    @staticmethod
    async def _count_started(conn: Connection, user_id: int, since: float) -> int:
        value = await conn.fetchval(
            "SELECT COUNT(*) FROM jobs WHERE user_id=$1 AND generate_at>=$2 AND state<>$3",
            user_id,
            since,
            JobState.REJECTED.value,
        )
        return int(value or 0)

    async def count_started_since(self, user_id: int, since: float) -> int:
        """Jobs a user started (pressed Generate) since ``since``; refused submits don't count."""
        return await self._run(lambda conn: self._count_started(conn, user_id, since), write=False)

    @staticmethod
    async def _free_used(conn: Connection, user_id: int) -> int:
        value = await conn.fetchval(
            "SELECT COUNT(*) FROM jobs WHERE user_id=$1 AND generate_at IS NOT NULL "
            "AND charge_id IS NULL AND NOT (state = ANY($2::text[]))",
            user_id,
            list(_UNDELIVERED),
        )
        return int(value or 0)

    async def free_videos_used(self, user_id: int) -> int:
        """Free jobs a user started that made (or may still make) a video."""
        return await self._run(lambda conn: self._free_used(conn, user_id), write=False)

    async def _needs_payment(
        self, conn: Connection, user_id: int, price: int, free_videos: int
    ) -> bool:
        return price > 0 and await self._free_used(conn, user_id) >= free_videos

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

        async def work(conn: Connection) -> StartResult:
            await _take_user_turn(conn, user_id)
            job = await _get(conn, job_id, lock=True)
            if job is None:
                return StartResult(StartOutcome.NOT_FOUND)
            if job.user_id != user_id:
                return StartResult(StartOutcome.NOT_OWNER, job)
            if job.state is JobState.AWAITING_PAYMENT:
                return StartResult(StartOutcome.AWAITING_PAYMENT, job)
            if job.state is not JobState.DRAFT:
                return StartResult(StartOutcome.ALREADY_STARTED, job)
            refused = await self._limit_outcome(conn, user_id, limits, now)
            if refused is not None:
                return StartResult(refused, job)
            if await self._needs_payment(conn, user_id, price, free_videos):
                row = await conn.fetchrow(
                    "UPDATE jobs SET state=$1, price_stars=$2, invoice_no=invoice_no+1, "
                    "updated_at=$3 WHERE id=$4 AND state=$5 RETURNING *",
                    JobState.AWAITING_PAYMENT.value,
                    price,
                    now,
                    job_id,
                    JobState.DRAFT.value,
                )
                return StartResult(StartOutcome.INVOICE, _job(row))
            row = await conn.fetchrow(
                "UPDATE jobs SET state=$1, price_stars=0, generate_at=$2, updated_at=$2 "
                "WHERE id=$3 AND state=$4 RETURNING *",
                JobState.PREPARING.value,
                now,
                job_id,
                JobState.DRAFT.value,
            )
            return StartResult(StartOutcome.STARTED, _job(row))

        return await self._start_in_turn(work)

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

        async def work(conn: Connection) -> StartResult:
            await _take_user_turn(conn, user_id)
            old = await _get(conn, old_job_id, lock=True)
            if old is None or not offers_retry(old):
                return StartResult(StartOutcome.NOT_FOUND)
            if old.user_id != user_id:
                return StartResult(StartOutcome.NOT_OWNER, old)
            existing = await conn.fetchrow(f"{_JOB} WHERE retry_of=$1", old_job_id)
            if existing is not None:
                return StartResult(StartOutcome.ALREADY_STARTED, row_to_job(existing))
            refused = await self._limit_outcome(conn, user_id, limits, now)
            if refused is not None:
                return StartResult(refused, old)
            return await self._start_follow_up(
                conn,
                old,
                price=price,
                free_videos=free_videos,
                now=now,
                status_message_id=status_message_id,
                reuse_image_url=False,
            )

        return await self._start_in_turn(work)

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
        """ "Again" under a delivered video: one new job per video, however often pressed
        (``retry_of`` names the delivered job); it copies the photo, the options and the
        re-hosted ``image_url`` and gets a seed of its own at its submit."""
        now = self._clock() if now is None else now

        async def work(conn: Connection) -> StartResult:
            await _take_user_turn(conn, user_id)
            old = await _get(conn, old_job_id, lock=True)
            if old is None or old.state is not JobState.DELIVERED:
                return StartResult(StartOutcome.NOT_FOUND)
            if old.user_id != user_id:
                return StartResult(StartOutcome.NOT_OWNER, old)
            found = await conn.fetchrow(f"{_JOB} WHERE retry_of=$1", old_job_id)
            if found is not None:
                existing = row_to_job(found)
                if existing.state is JobState.AWAITING_PAYMENT:
                    return StartResult(StartOutcome.AWAITING_PAYMENT, existing)
                return StartResult(StartOutcome.ALREADY_STARTED, existing)
            refused = await self._limit_outcome(conn, user_id, limits, now)
            if refused is not None:
                return StartResult(refused, old)
            return await self._start_follow_up(
                conn,
                old,
                price=price,
                free_videos=free_videos,
                now=now,
                status_message_id=None,
                reuse_image_url=True,
            )

        return await self._start_in_turn(work)

    async def _start_in_turn(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """A start's ``work`` (which first takes its user's turn) at READ COMMITTED.

        Under the user's lock each statement sees every earlier start of that user
        committed, so the counts are exact; the job rows it reads are locked
        (``FOR UPDATE``) so the compare-and-set that follows cannot miss. Transitions
        made meanwhile by the tracker only lower the counts (a job ending), and a payment
        (checked at pre-checkout, never refused after) takes no turn, as before.
        """
        return await self._run(work, write=True, transaction=True, isolation="read_committed")

    async def _start_follow_up(
        self,
        conn: Connection,
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
        priced = await self._needs_payment(conn, old.user_id, price, free_videos)
        state = JobState.AWAITING_PAYMENT if priced else JobState.PREPARING
        row = await conn.fetchrow(
            "INSERT INTO jobs (chat_id, user_id, chat_type, trigger_message_id, "
            "photo_message_id, thread_id, file_id, file_unique_id, file_size, mime_type, "
            "quality, duration, style, seed, image_url, state, keyboard_message_id, "
            "retry_of, price_stars, invoice_no, created_at, generate_at, updated_at, language) "
            "SELECT chat_id, user_id, chat_type, trigger_message_id, photo_message_id, "
            "thread_id, file_id, file_unique_id, file_size, mime_type, quality, duration, "
            "style, NULL, CASE WHEN $1 THEN image_url END, $2, $3, id, $4, $5, $6, $7, $6, "
            "language FROM jobs WHERE id=$8 RETURNING *",
            reuse_image_url,
            state.value,
            status_message_id,
            price if priced else 0,
            1 if priced else 0,
            now,
            None if priced else now,
            old.id,
        )
        return StartResult(StartOutcome.INVOICE if priced else StartOutcome.STARTED, _job(row))

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

        Entering a terminal state stamps ``finished_at``; ending a paid job without a
        video owes its payment back in the same transaction. With ``lease``, fenced: the
        same statement requires the lease and extends it (or lets it go once the user is
        told), and :class:`LeaseLost` says it is not held (nothing written).
        """
        if not can_transition(source, target):
            raise InvalidTransition(f"{source.value} -> {target.value}")
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"not settable: {sorted(unknown)}")
        now = self._clock()
        values: dict[str, Any] = dict(zip(fields, _values(list(fields.values())), strict=True))
        if target in TERMINAL_STATES:
            values.setdefault("finished_at", now)
        # Column names come from _SETTABLE only; values are parameters.
        params: list[Any] = [target.value, now, *values.values()]
        assignments = "".join(f", {key}=${n}" for n, key in enumerate(values, start=3))
        if lease is not None and values.get("notified_at") is not None:
            assignments += ", owner=NULL, lease_until=NULL"  # told: nobody needs to drive it
        elif lease is not None:
            params.append(lease.until(now))
            assignments += f", lease_until=${len(params)}"
        params += [job_id, source.value]
        where = f"id=${len(params) - 1} AND state=${len(params)}"
        if lease is not None:
            params += [lease.owner, now]
            where += f" AND owner=${len(params) - 1} AND lease_until>=${len(params)}"
        update = f"UPDATE jobs SET state=$1, updated_at=$2{assignments} WHERE {where} RETURNING *"
        owes_refund = target.value in _UNDELIVERED

        async def work(conn: Connection) -> Job | None:
            row = await conn.fetchrow(update, *params)
            if row is not None and owes_refund:
                await _owe_refund(conn, job_id, RefundReason.JOB_ENDED, now)
            if row is None and lease is not None:
                await _check_lease(conn, "jobs", "id", job_id, lease, now)
            return row_to_job(row) if row else None

        if lease is None:
            job = await self._run(work, write=True, transaction=owes_refund)
        else:
            job = await self._run(work, write=True, transaction=True, isolation="read_committed")
        if job is not None:
            since = f", {now - job.generate_at:.1f}s after Generate" if job.generate_at else ""
            why = f" ({job.reason.value})" if job.reason and target in TERMINAL_STATES else ""
            log.info("job %s: %s -> %s%s%s", job.short_id, source.value, target.value, why, since)
        return job

    async def mark_notified(
        self, job_id: int, now: float | None = None, *, lease: Lease | None = None
    ) -> None:
        """The user has heard the outcome: the job leaves the tracker for good, and its
        lease is let go. With ``lease``, fenced (LeaseLost when it is not held)."""
        stamp = self._clock()
        params: list[Any] = [stamp if now is None else now, stamp, job_id]
        update = (
            "UPDATE jobs SET notified_at=$1, updated_at=$2, owner=NULL, lease_until=NULL "
            "WHERE id=$3 AND notified_at IS NULL"
        )
        if lease is None:
            await self._execute(update, *params)
            return
        fenced = f"{update} AND owner=$4 AND lease_until>=$5"
        held = lease

        async def work(conn: Connection) -> None:
            if _rowcount(await conn.execute(fenced, *params, held.owner, stamp)) == 0:
                told = await conn.fetchval(
                    "SELECT notified_at IS NOT NULL FROM jobs WHERE id=$1", job_id
                )
                if not told:
                    await _check_lease(conn, "jobs", "id", job_id, held, stamp)

        await self._run(work, write=True, transaction=True, isolation="read_committed")

    # -- leases (bot.core.leases) ---------------------------------------------------------

    async def _claim(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        """One claiming ``UPDATE … RETURNING`` on its own (READ COMMITTED); its rows."""
        return await self._run(lambda conn: conn.fetch(sql, *_values(params)), write=True)

    async def claim_job(self, job_id: int, lease: Lease, now: float | None = None) -> Job | None:
        """Claim (or extend) one unfinished job's lease unless another instance holds it
        unlapsed; the job, or None."""
        now = self._clock() if now is None else now
        rows = await self._claim(
            "UPDATE jobs SET owner=$1, lease_until=$2 "
            "WHERE id=$3 AND (owner IS NULL OR owner=$1 OR lease_until<$4) "
            f"AND {_UNFINISHED.format(active='$5', terminal='$6')} RETURNING *",
            lease.owner,
            lease.until(now),
            job_id,
            now,
            list(_ACTIVE),
            list(_TERMINAL),
        )
        return row_to_job(rows[0]) if rows else None

    async def claim_jobs(self, lease: Lease, limit: int, now: float | None = None) -> list[Job]:
        """Up to ``limit`` unfinished jobs nobody holds, oldest first, now ``lease``'s.
        Rows another instance is claiming right now are skipped, not waited for."""
        now = self._clock() if now is None else now
        rows = await self._claim(
            "UPDATE jobs SET owner=$1, lease_until=$2 WHERE id IN (SELECT id FROM jobs "
            f"WHERE {_UNFINISHED.format(active='$3', terminal='$4')} "
            "AND (owner IS NULL OR lease_until<$5) "
            "ORDER BY id LIMIT $6 FOR UPDATE SKIP LOCKED) RETURNING *",
            lease.owner,
            lease.until(now),
            list(_ACTIVE),
            list(_TERMINAL),
            now,
            limit,
        )
        return sorted((row_to_job(row) for row in rows), key=lambda job: job.id)

    async def renew_leases(self, lease: Lease, now: float | None = None) -> list[int]:
        """One statement: every unlapsed lease of ``lease.owner`` extended; their job ids."""
        now = self._clock() if now is None else now
        rows = await self._claim(
            "UPDATE jobs SET lease_until=$1 WHERE owner=$2 AND lease_until>=$3 "
            "AND notified_at IS NULL RETURNING id",
            lease.until(now),
            lease.owner,
            now,
        )
        return sorted(int(row["id"]) for row in rows)

    async def hold_job(
        self, job_id: int, state: JobState, lease: Lease, now: float | None = None
    ) -> bool:
        """Still ``lease.owner``'s, unlapsed, and in ``state``: extended, True."""
        now = self._clock() if now is None else now
        changed = await self._execute(
            "UPDATE jobs SET lease_until=$1 WHERE id=$2 AND state=$3 AND owner=$4 "
            "AND lease_until>=$5",
            lease.until(now),
            job_id,
            state,
            lease.owner,
            now,
        )
        return changed == 1

    async def release_leases(self, owner: str) -> None:
        await self._execute("UPDATE jobs SET owner=NULL, lease_until=NULL WHERE owner=$1", owner)

    async def claim_refunds(self, lease: Lease, now: float, limit: int = 10) -> list[Payment]:
        """Refunds to work (as refunds_to_work) that no other instance holds, now
        ``lease``'s; rows another instance is claiming right now are skipped."""
        rows = await self._claim(
            "UPDATE payments SET owner=$1, lease_until=$2 WHERE charge_id IN (SELECT charge_id "
            "FROM payments WHERE ((refund=$3 AND next_refund_at<=$4) "
            "OR (refund=$5 AND refund_told_at IS NULL)) "
            "AND (owner IS NULL OR owner=$1 OR lease_until<$4) "
            "ORDER BY refund_due_at LIMIT $6 FOR UPDATE SKIP LOCKED) RETURNING *",
            lease.owner,
            lease.until(now),
            RefundState.DUE,
            now,
            RefundState.DONE,
            limit,
        )
        payments = [row_to_payment(row) for row in rows]
        return sorted(payments, key=lambda p: (p.refund_due_at or 0.0, p.charge_id))

    async def release_refunds(self, owner: str) -> None:
        await self._execute(
            "UPDATE payments SET owner=NULL, lease_until=NULL WHERE owner=$1", owner
        )

    async def _fenced_payment_write(
        self, sql: str, params: list[Any], charge_id: str, lease: Lease | None, now: float
    ) -> None:
        """A refund's write; with ``lease`` (its owner and ``now`` are the statement's
        last two parameters) fenced on the payment's claim (LeaseLost)."""
        if lease is None:
            await self._execute(sql, *params)
            return
        held = lease

        async def work(conn: Connection) -> None:
            status = await conn.execute(sql, *_values(params), held.owner, now)
            if _rowcount(status) == 0:
                await _check_lease(conn, "payments", "charge_id", charge_id, held, now)

        await self._run(work, write=True, transaction=True, isolation="read_committed")

    # -- reads -----------------------------------------------------------------------

    async def get(self, job_id: int) -> Job | None:
        return await self._fetch_one(f"{_JOB} WHERE id=$1", job_id)

    async def unfinished(self) -> list[Job]:
        """Jobs the tracker must (re)drive: active, or ended but not yet told to the user."""
        return await self._fetch_all(
            f"{_JOB} WHERE {_UNFINISHED.format(active='$1', terminal='$2')} ORDER BY id",
            list(_ACTIVE),
            list(_TERMINAL),
        )

    async def recent(self, limit: int = 10) -> list[Job]:
        """The latest started jobs, newest first (for operators)."""
        return await self._fetch_all(
            f"{_JOB} WHERE generate_at IS NOT NULL ORDER BY generate_at DESC, id DESC LIMIT $1",
            limit,
        )

    async def count_active(self) -> int:
        """Jobs being worked on right now, across all users."""
        value = await self._scalar(
            "SELECT COUNT(*) FROM jobs WHERE state = ANY($1::text[])", list(_ACTIVE)
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
        where = "user_id=$1 AND generate_at IS NOT NULL"
        params: list[Any] = [user_id]
        if chat_id is not None:
            params.append(chat_id)
            where += f" AND chat_id=${len(params)}"
        n = len(params)
        if after_id is not None:
            jobs = await self._fetch_all(
                f"{_JOB} WHERE {where} AND id>${n + 1} ORDER BY id LIMIT ${n + 2}",
                *params,
                after_id,
                limit,
            )
            jobs.reverse()
        elif before_id is not None:
            jobs = await self._fetch_all(
                f"{_JOB} WHERE {where} AND id<${n + 1} ORDER BY id DESC LIMIT ${n + 2}",
                *params,
                before_id,
                limit,
            )
        else:
            jobs = await self._fetch_all(
                f"{_JOB} WHERE {where} ORDER BY id DESC LIMIT ${n + 1}", *params, limit
            )
        if not jobs:
            return HistoryPage([], has_older=False, has_newer=False)
        older = await self._scalar(
            f"SELECT EXISTS (SELECT 1 FROM jobs WHERE {where} AND id<${n + 1})",
            *params,
            jobs[-1].id,
        )
        newer = await self._scalar(
            f"SELECT EXISTS (SELECT 1 FROM jobs WHERE {where} AND id>${n + 1})",
            *params,
            jobs[0].id,
        )
        return HistoryPage(jobs, has_older=bool(older), has_newer=bool(newer))

    async def delivered_videos(self, user_id: int, limit: int = 20) -> list[Job]:
        """A user's delivered videos that Telegram holds (a file id), newest first."""
        return await self._fetch_all(
            f"{_JOB} WHERE user_id=$1 AND state=$2 AND video_file_id IS NOT NULL "
            "AND video_file_id<>'' ORDER BY id DESC LIMIT $3",
            user_id,
            JobState.DELIVERED,
            limit,
        )

    async def started_since(self, since: float) -> list[Job]:
        """Jobs started (Generate pressed) since ``since``, for statistics."""
        return await self._fetch_all(f"{_JOB} WHERE generate_at>=$1 ORDER BY id", since)

    async def run_seconds(self, quality: str, duration: int, limit: int = 50) -> RunSeconds:
        """How long Segmind took for recent jobs like this one, whole and processing."""
        rows = await self._run(
            lambda conn: conn.fetch(
                "SELECT completed_at - submitted_at AS total, completed_at - processing_at "
                "AS processing FROM jobs WHERE quality=$1 AND duration=$2 "
                "AND completed_at IS NOT NULL AND submitted_at IS NOT NULL "
                "ORDER BY completed_at DESC LIMIT $3",
                quality,
                duration,
                limit,
            ),
            write=False,
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
        await self._execute(
            "UPDATE jobs SET invoice_message_id=$1, updated_at=$2 WHERE id=$3",
            message_id,
            self._clock(),
            job_id,
        )

    async def reopen_draft(self, job_id: int, user_id: int) -> Job | None:
        """ "Change options" while an invoice is out: back to DRAFT; the invoice is void."""
        row = await self._run(
            lambda conn: conn.fetchrow(
                "UPDATE jobs SET state=$1, updated_at=$2 WHERE id=$3 AND user_id=$4 "
                "AND state=$5 RETURNING *",
                JobState.DRAFT.value,
                self._clock(),
                job_id,
                user_id,
                JobState.AWAITING_PAYMENT.value,
            ),
            write=True,
        )
        return row_to_job(row) if row else None

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
        stamp = self._clock() if now is None else now
        refused = await self._run(
            lambda conn: self._limit_outcome(conn, user_id, limits, stamp), write=False
        )
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
        stamp = self._clock() if now is None else now

        async def work(
            conn: Connection,
        ) -> tuple[PaymentOutcome | None, Payment, Job | None, RefundReason | None]:
            existing = await conn.fetchrow(f"{_PAYMENT} WHERE charge_id=$1", new.charge_id)
            if existing is not None:
                payment = row_to_payment(existing)
                job = await _get(conn, payment.job_id) if payment.job_id else None
                return PaymentOutcome.ALREADY_RECORDED, payment, job, None
            parsed = parse_payload(new.payload)
            job = await _get(conn, parsed[0]) if parsed else None
            verdict = (
                payability(job, parsed[1], new.user_id, new.amount)
                if parsed
                else PreCheckout.UNKNOWN
            )
            reason: RefundReason | None = None
            if verdict is not PreCheckout.OK:
                reason = (
                    RefundReason.ALREADY_PAID
                    if verdict is PreCheckout.ALREADY_PAID
                    else RefundReason.NOT_PAYABLE
                )
            row = await conn.fetchrow(
                "INSERT INTO payments (charge_id, provider_charge_id, user_id, chat_id, job_id, "
                "payload, amount, currency, paid_at, refund, refund_reason, refund_due_at, "
                "next_refund_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$12) "
                "RETURNING *",
                new.charge_id,
                new.provider_charge_id,
                new.user_id,
                new.chat_id,
                job.id if job else None,
                new.payload,
                new.amount,
                new.currency,
                stamp,
                (RefundState.DUE if reason else RefundState.NONE).value,
                reason.value if reason else None,
                stamp if reason else None,
            )
            if job is not None and reason is None:
                updated = await conn.fetchrow(
                    "UPDATE jobs SET state=$1, charge_id=$2, generate_at=$3, updated_at=$3 "
                    "WHERE id=$4 AND state=$5 RETURNING *",
                    JobState.PREPARING.value,
                    new.charge_id,
                    stamp,
                    job.id,
                    JobState.AWAITING_PAYMENT.value,
                )
                job = row_to_job(updated) if updated else await _get(conn, job.id)
            assert row is not None  # INSERT … RETURNING
            return None, row_to_payment(row), job, reason

        outcome, payment, job, reason = await self._run(work, write=True, transaction=True)
        if outcome is not None:
            return outcome, payment, job
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
        found = await self._payments(f"{_PAYMENT} WHERE charge_id=$1", charge_id)
        return found[0] if found else None

    async def payments_of(self, user_id: int, limit: int = 10) -> list[Payment]:
        """A user's latest payments, newest first (for /paysupport)."""
        return await self._payments(
            f"{_PAYMENT} WHERE user_id=$1 ORDER BY paid_at DESC, charge_id LIMIT $2",
            user_id,
            limit,
        )

    async def refunds_to_work(self, now: float, limit: int = 50) -> list[Payment]:
        """Refunds due whose next attempt has come, and confirmed ones not yet told."""
        return await self._payments(
            f"{_PAYMENT} WHERE (refund=$1 AND next_refund_at<=$2) "
            "OR (refund=$3 AND refund_told_at IS NULL) ORDER BY refund_due_at LIMIT $4",
            RefundState.DUE,
            now,
            RefundState.DONE,
            limit,
        )

    async def next_refund_at(self) -> float | None:
        """When the earliest due refund should be tried (None: nothing is due)."""
        value = await self._scalar(
            "SELECT MIN(next_refund_at) FROM payments WHERE refund=$1", RefundState.DUE
        )
        return float(value) if value is not None else None

    async def refund_confirmed(
        self, charge_id: str, now: float | None = None, *, lease: Lease | None = None
    ) -> None:
        """Telegram confirmed the refund (or said it already happened). With ``lease``,
        fenced on the claim, which it extends (the payer is told next)."""
        stamp = self._clock()
        params: list[Any] = [RefundState.DONE, stamp if now is None else now]
        extend = ""
        if lease is not None:
            params.append(lease.until(stamp))
            extend = ", lease_until=$3"
        n = len(params)
        params += [charge_id, RefundState.DUE]
        sql = (
            f"UPDATE payments SET refund=$1, refunded_at=$2{extend} "
            f"WHERE charge_id=${n + 1} AND refund=${n + 2}"
        )
        await self._fenced_payment_write(
            sql + _FENCE.format(owner=f"${n + 3}", now=f"${n + 4}") if lease else sql,
            params,
            charge_id,
            lease,
            stamp,
        )

    async def refund_failed(
        self, charge_id: str, retry_at: float, *, lease: Lease | None = None
    ) -> None:
        """This attempt failed: try again at ``retry_at`` (the claim is let go)."""
        sql = (
            "UPDATE payments SET refund_attempts=refund_attempts+1, next_refund_at=$1, "
            "owner=NULL, lease_until=NULL WHERE charge_id=$2 AND refund=$3"
        )
        await self._fenced_payment_write(
            sql + _FENCE.format(owner="$4", now="$5") if lease else sql,
            [retry_at, charge_id, RefundState.DUE],
            charge_id,
            lease,
            self._clock(),
        )

    async def refund_told(
        self, charge_id: str, now: float | None = None, *, lease: Lease | None = None
    ) -> None:
        """The payer has heard the refund went through (or cannot be reached); the claim
        is let go."""
        stamp = self._clock()
        sql = (
            "UPDATE payments SET refund_told_at=$1, owner=NULL, lease_until=NULL "
            "WHERE charge_id=$2 AND refund_told_at IS NULL"
        )
        await self._fenced_payment_write(
            sql + _FENCE.format(owner="$3", now="$4") if lease else sql,
            [stamp if now is None else now, charge_id],
            charge_id,
            lease,
            stamp,
        )

    async def request_refund(self, charge_id: str, now: float | None = None) -> Payment | None:
        """An operator's /refund: owed back unless it already is (or was); None if unknown."""
        stamp = self._clock() if now is None else now

        async def work(conn: Connection) -> Payment | None:
            await conn.execute(
                "UPDATE payments SET refund=$1, refund_reason=$2, refund_due_at=$3, "
                "next_refund_at=$3 WHERE charge_id=$4 AND refund=$5",
                RefundState.DUE.value,
                RefundReason.OPERATOR.value,
                stamp,
                charge_id,
                RefundState.NONE.value,
            )
            row = await conn.fetchrow(f"{_PAYMENT} WHERE charge_id=$1", charge_id)
            return row_to_payment(row) if row else None

        return await self._run(work, write=True, transaction=True)

    async def stars_since(self, since: float) -> tuple[int, int]:
        """(Stars taken, Stars refunded) by payments made since ``since``."""
        row = await self._run(
            lambda conn: conn.fetchrow(
                "SELECT COALESCE(SUM(amount), 0) AS taken, "
                "COALESCE(SUM(CASE WHEN refund=$1 THEN amount ELSE 0 END), 0) AS refunded "
                "FROM payments WHERE paid_at>=$2",
                RefundState.DONE.value,
                since,
            ),
            write=False,
        )
        return (int(row["taken"]), int(row["refunded"])) if row else (0, 0)

    async def refunds_due_before(self, before: float) -> list[Payment]:
        """Refunds still due that became due before ``before`` (stuck ones)."""
        return await self._payments(
            f"{_PAYMENT} WHERE refund=$1 AND refund_due_at<$2 ORDER BY refund_due_at",
            RefundState.DUE,
            before,
        )

    # -- users -----------------------------------------------------------------------

    async def user_preferences(self, user_id: int) -> UserPreferences:
        """The user's chosen language and last options (empty for a user never seen)."""
        row = await self._run(
            lambda conn: conn.fetchrow(
                "SELECT language, quality, duration, style FROM users WHERE user_id=$1", user_id
            ),
            write=False,
        )
        if row is None:
            return UserPreferences()
        options = None
        if row["quality"] is not None and row["duration"] is not None:
            options = VideoOptions(row["quality"], row["duration"], row["style"])
        return UserPreferences(language=row["language"], options=options)

    async def set_language(self, user_id: int, language: str, now: float | None = None) -> None:
        """Remember the language the user chose with /language."""
        await self._execute(
            "INSERT INTO users (user_id, language, updated_at) VALUES ($1,$2,$3) "
            "ON CONFLICT (user_id) DO UPDATE SET language=excluded.language, "
            "updated_at=excluded.updated_at",
            user_id,
            language,
            self._clock() if now is None else now,
        )

    async def remember_options(
        self, user_id: int, options: VideoOptions, now: float | None = None
    ) -> None:
        """Remember the quality, duration and style the user just chose (not the seed)."""
        await self._execute(
            "INSERT INTO users (user_id, quality, duration, style, updated_at) "
            "VALUES ($1,$2,$3,$4,$5) ON CONFLICT (user_id) DO UPDATE SET "
            "quality=excluded.quality, duration=excluded.duration, style=excluded.style, "
            "updated_at=excluded.updated_at",
            user_id,
            options.quality,
            options.duration,
            options.style,
            self._clock() if now is None else now,
        )

    # -- operator alerts -------------------------------------------------------------

    async def alert_state(self, kind: str) -> tuple[bool, float] | None:
        row = await self._run(
            lambda conn: conn.fetchrow(
                "SELECT active, last_sent_at FROM alerts WHERE kind=$1", kind
            ),
            write=False,
        )
        return (bool(row["active"]), float(row["last_sent_at"])) if row else None

    async def save_alert_state(self, kind: str, active: bool, last_sent_at: float) -> None:
        await self._execute(
            "INSERT INTO alerts (kind, active, last_sent_at) VALUES ($1,$2,$3) "
            "ON CONFLICT (kind) DO UPDATE SET active=excluded.active, "
            "last_sent_at=excluded.last_sent_at",
            kind,
            int(active),
            last_sent_at,
        )

    # -- updates (webhook mode) and operations ----------------------------------------

    async def receive_update(self, update_id: int, body: str, lease: Lease, now: float) -> bool:
        """Take this update id once across every instance sharing the database and store
        it, held by this instance (one insert, keyed on the id); old claims are pruned
        along with it about once an hour: handled ones, and those nobody holds (given up)."""
        prune = now - self._claims_pruned_at >= 3600.0

        async def work(conn: Connection) -> bool:
            status = await conn.execute(
                "INSERT INTO updates (update_id, received_at, body, owner, lease_until) "
                "VALUES ($1,$2,$3,$4,$5) ON CONFLICT (update_id) DO NOTHING",
                update_id,
                now,
                body,
                lease.owner,
                lease.until(now),
            )
            if prune:
                await conn.execute(
                    "DELETE FROM updates WHERE received_at < $1 "
                    "AND (handled_at IS NOT NULL OR lease_until < $2)",
                    now - UPDATE_CLAIM_SECONDS,
                    now,
                )
            return _rowcount(status) == 1

        claimed = await self._run(work, write=True, transaction=prune)
        if prune:
            self._claims_pruned_at = now
        return claimed

    async def updates_handled(self, update_ids: Sequence[int], now: float) -> None:
        if not update_ids:
            return
        await self._execute(
            "UPDATE updates SET handled_at=$1, owner=NULL, lease_until=NULL "
            "WHERE update_id = ANY($2::bigint[]) AND handled_at IS NULL",
            now,
            list(update_ids),
        )

    async def renew_update_leases(self, lease: Lease, now: float) -> int:
        return await self._execute(
            "UPDATE updates SET lease_until=$1 WHERE owner=$2 AND handled_at IS NULL",
            lease.until(now),
            lease.owner,
        )

    async def claim_stranded_updates(
        self, lease: Lease, now: float, *, max_attempts: int, limit: int
    ) -> list[StoredUpdate]:
        """Rows another instance is claiming right now are skipped, not waited for."""
        rows = await self._claim(
            "UPDATE updates SET owner=$1, lease_until=$2, attempts=attempts+1 "
            "WHERE update_id IN (SELECT update_id FROM updates WHERE handled_at IS NULL "
            "AND (owner IS NULL OR lease_until<$3) AND attempts<$4 AND body IS NOT NULL "
            "ORDER BY update_id LIMIT $5 FOR UPDATE SKIP LOCKED) "
            "RETURNING update_id, body, attempts",
            lease.owner,
            lease.until(now),
            now,
            max_attempts,
            limit,
        )
        stored = [
            StoredUpdate(int(row["update_id"]), row["body"], int(row["attempts"])) for row in rows
        ]
        return sorted(stored, key=lambda update: update.update_id)

    async def jobs_by_state(self) -> dict[JobState, int]:
        rows = await self._run(
            lambda conn: conn.fetch("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"),
            write=False,
        )
        return {JobState(row["state"]): int(row["n"]) for row in rows}

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
        await self._execute(
            "UPDATE telegram_places p SET busy_until = extract(epoch FROM clock_timestamp())"
            " + $3 FROM unnest($1::int[], $2::float8[]) AS r(place, held)"
            " WHERE p.place = r.place AND p.busy_until = r.held",
            [place for place, _ in places],
            [held for _, held in places],
            span,
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


async def _check_lease(
    conn: Connection, table: str, key_column: str, key: Any, lease: Lease, now: float
) -> None:
    """After a fenced write changed nothing (in its transaction): LeaseLost unless the
    row is still leased to ``lease.owner`` (then the row was elsewhere in its life, and
    the caller's compare-and-set says so). ``table`` and ``key_column`` are this
    module's own names, never input."""
    row = await conn.fetchrow(f"SELECT owner, lease_until FROM {table} WHERE {key_column}=$1", key)
    if row is not None and not (
        row["owner"] == lease.owner
        and row["lease_until"] is not None
        and row["lease_until"] >= now
    ):
        raise LeaseLost(f"{table} {key}")


def _job(row: asyncpg.Record | None) -> Job:
    """A row a statement of this transaction must have returned."""
    assert row is not None, "a row this transaction holds is gone"
    return row_to_job(row)


async def _get(conn: Connection, job_id: int, *, lock: bool = False) -> Job | None:
    """The job; with ``lock``, its row locked until the transaction ends."""
    row = await conn.fetchrow(f"{_JOB} WHERE id=$1{' FOR UPDATE' if lock else ''}", job_id)
    return row_to_job(row) if row else None


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


async def _owe_refund(conn: Connection, job_id: int, reason: RefundReason, now: float) -> None:
    """Inside a transaction: the payment that started this job is owed back."""
    await conn.execute(
        "UPDATE payments SET refund=$1, refund_reason=$2, refund_due_at=$3, next_refund_at=$3 "
        "WHERE refund=$4 AND charge_id=(SELECT charge_id FROM jobs WHERE id=$5)",
        RefundState.DUE.value,
        reason.value,
        now,
        RefundState.NONE.value,
        job_id,
    )


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
