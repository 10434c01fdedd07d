"""What the SQLite and PostgreSQL ledgers share: each rule of the ledger written once.

Statements are written with ``?`` placeholders in SQL that both databases read alike;
asyncpg gets them numbered (:func:`numbered`). A backend supplies how one statement runs
(:meth:`SqlLedger._rows`, :meth:`~SqlLedger._write`, :meth:`~SqlLedger._write_returning`)
and how a read-then-write runs as one transaction (:meth:`~SqlLedger._transact`, and
:meth:`~SqlLedger._in_users_turn` for a start), and keeps what only it does: SQLite's
write gate and one-statement free start, PostgreSQL's pool, retries, row and advisory
locks. Each step is as few statements as it can be: a fenced write or a claim is one,
with a transaction only where a second row must change with it or a refusal must say
why. Rows are read by column name.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import Any, ClassVar, Literal, Protocol, TypeAlias, TypeVar

from ..core.errors import InvalidTransition
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

__all__ = ["Isolation", "Row", "SqlLedger", "Statements", "numbered", "row_to_job"]

T = TypeVar("T")

#: How a PostgreSQL transaction is isolated (SQLite's write one at a time, whatever it
#: says): SERIALIZABLE for a read-then-write, READ COMMITTED where a lock or the
#: statement's own ``WHERE`` keeps it right.
Isolation: TypeAlias = Literal["serializable", "read_committed"]

JOB = "SELECT * FROM jobs"
PAYMENT = "SELECT * FROM payments"

#: Columns a transition may set besides ``state``.
SETTABLE = frozenset(
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
    """A ledger row as the core's :class:`Job`: each field from the column of its name,
    the options from their four columns, the state and reason as their enums."""
    return Job(
        **_by_name(row, Job, "options", "state", "reason"),
        options=VideoOptions(
            quality=row["quality"],
            duration=row["duration"],
            style=row["style"],
            seed=row["seed"],
        ),
        state=JobState(row["state"]),
        reason=Reason(row["reason"]) if row["reason"] else None,
    )


def row_to_payment(row: Row) -> Payment:
    """A payments row as the core's :class:`Payment` (the refund's state and reason as
    their enums)."""
    return Payment(
        **_by_name(row, Payment, "refund", "refund_reason"),
        refund=RefundState(row["refund"]),
        refund_reason=RefundReason(row["refund_reason"]) if row["refund_reason"] else None,
    )


def _by_name(row: Row, cls: type, *besides: str) -> dict[str, Any]:
    """The row's value for each field of the dataclass ``cls``, read from the column of
    the same name, but for the fields named ``besides``."""
    return {name: row[name] for name in _field_names(cls) if name not in besides}


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(cls))


def placeholders(values: Sequence[object]) -> str:
    """One ``?`` per value, for ``IN (…)``."""
    return ",".join("?" for _ in values)


@functools.lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """``sql`` with its ``?`` placeholders numbered as asyncpg takes them (``$1``, ``$2``,
    …). The statements of the ledgers hold no ``?`` anywhere else."""
    parts = sql.split("?")
    return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], start=1)) + parts[-1]


class Statements(Protocol):
    """The statements of one transaction (``?`` placeholders), on its connection."""

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Row]:
        """Every row the statement returns."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """The rows the statement changed."""


async def first(tx: Statements, sql: str, params: Sequence[Any] = ()) -> Row | None:
    rows = await tx.rows(sql, params)
    return rows[0] if rows else None


async def first_job(tx: Statements, sql: str, params: Sequence[Any] = ()) -> Job | None:
    row = await first(tx, sql, params)
    return row_to_job(row) if row else None


async def count(tx: Statements, sql: str, params: Sequence[Any]) -> int:
    """The number a ``SELECT COUNT(*) AS value …`` reads."""
    row = await first(tx, sql, params)
    return int(row["value"] or 0) if row else 0


ACTIVE = tuple(state.value for state in ACTIVE_STATES)
TERMINAL = tuple(state.value for state in TERMINAL_STATES)
#: Ended without a video: a paid job in one of these owes its payment back.
UNDELIVERED = tuple(s.value for s in TERMINAL_STATES if s is not JobState.DELIVERED)
#: Jobs the tracker must (re)drive: active, or ended and the user not told yet. The
#: parameters are ``UNFINISHED_PARAMS``.
UNFINISHED = (
    f"(state IN ({placeholders(ACTIVE)}) "
    f"OR (state IN ({placeholders(TERMINAL)}) AND notified_at IS NULL))"
)
UNFINISHED_PARAMS = (*ACTIVE, *TERMINAL)
#: Refunds to work: due and their time has come (parameter: now), or done and untold.
REFUNDS_TO_WORK = "((refund=? AND next_refund_at<=?) OR (refund=? AND refund_told_at IS NULL))"


def holds(row: Row | None, owner: str, now: float) -> bool:
    """Whether a row (its ``owner`` and ``lease_until``) is leased to ``owner`` at ``now``."""
    return (
        row is not None
        and row["owner"] == owner
        and row["lease_until"] is not None
        and row["lease_until"] >= now
    )


def lease_clauses(
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


async def check_lease(
    tx: Statements, table: str, key_column: str, key: Any, lease: Lease, now: float
) -> None:
    """After a fenced write changed nothing (inside its transaction): LeaseLost unless
    the row is still leased to ``lease.owner`` (then the row was elsewhere in its life,
    and the caller's compare-and-set says so). ``table`` and ``key_column`` are this
    package's own names, never input."""
    row = await first(tx, f"SELECT owner, lease_until FROM {table} WHERE {key_column}=?", (key,))
    if row is not None and not holds(row, lease.owner, now):
        raise LeaseLost(f"{table} {key}")


async def owe_refund(tx: Statements, job_id: int, reason: RefundReason, now: float) -> None:
    """Inside a transaction: the payment that started this job is owed back."""
    await tx.execute(
        "UPDATE payments SET refund=?, refund_reason=?, refund_due_at=?, next_refund_at=? "
        "WHERE refund=? AND charge_id=(SELECT charge_id FROM jobs WHERE id=?)",
        (RefundState.DUE.value, reason.value, now, now, RefundState.NONE.value, job_id),
    )


class SqlLedger(abc.ABC):
    """The :class:`~bot.core.ports.Ledger`'s reads and writes over a backend's statements.

    A subclass runs one statement its own way; what the statements are, and what their
    rows mean, is written here once.
    """

    _clock: Callable[[], float]
    #: Where the ledger's lines go: the backend module's own logger.
    _log: ClassVar[logging.Logger]
    #: When old update claims were last pruned (at most once an hour).
    _claims_pruned_at: float = float("-inf")
    #: What a claim's inner ``SELECT`` adds so that instances claiming at once split the
    #: rows instead of waiting on each other (PostgreSQL); SQLite writes one at a time.
    _SKIP_LOCKED: ClassVar[str] = ""
    #: What a start's read of a job adds to lock the row until its transaction ends
    #: (PostgreSQL); SQLite's transaction writes alone.
    _LOCK_ROW: ClassVar[str] = ""

    # -- what a backend supplies -----------------------------------------------------

    @abc.abstractmethod
    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Row]:
        """Every row of one read (``?`` placeholders); a failure is LedgerReadFailed."""

    @abc.abstractmethod
    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement on its own (atomic by itself); the rows it changed. A
        failure is LedgerWriteFailed."""

    @abc.abstractmethod
    async def _write_returning(self, sql: str, params: Sequence[Any]) -> Sequence[Row]:
        """One write statement ``… RETURNING`` on its own; the rows it wrote."""

    @abc.abstractmethod
    async def _transact(
        self, work: Callable[[Statements], Awaitable[T]], *, isolation: Isolation = "serializable"
    ) -> T:
        """``work`` in one write transaction; a failure is LedgerWriteFailed."""

    @abc.abstractmethod
    async def _in_users_turn(self, user_id: int, work: Callable[[Statements], Awaitable[T]]) -> T:
        """``work``, a start, in one write transaction that no other start of this user
        runs beside (the user's counts it reads hold until it commits)."""

    async def _start_free(
        self, job_id: int, user_id: int, limits: Limits, now: float
    ) -> Job | None:
        """A free draft started in one statement where the backend can (None: not
        started; :meth:`start`'s transaction then says why, or starts it)."""
        return None

    @property
    def _reads(self) -> Statements:
        """The ledger's reads outside any transaction, as statements."""
        return _Reads(self)

    # -- reading ---------------------------------------------------------------------

    async def _row(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The one value of a read named ``value`` (None when it found no row)."""
        row = await self._row(sql, params)
        return row["value"] if row else None

    async def _fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Job | None:
        row = await self._row(sql, params)
        return row_to_job(row) if row else None

    async def _fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Job]:
        return [row_to_job(row) for row in await self._rows(sql, params)]

    async def _write_job(self, sql: str, params: Sequence[Any]) -> Job | None:
        """The job one write ``… RETURNING *`` changed, or None."""
        rows = await self._write_returning(sql, params)
        return row_to_job(rows[0]) if rows else None

    async def _payments(self, sql: str, params: Sequence[Any] = ()) -> list[Payment]:
        return [row_to_payment(row) for row in await self._rows(sql, params)]

    async def get(self, job_id: int) -> Job | None:
        return await self._fetch_one(f"{JOB} WHERE id=?", (job_id,))

    async def unfinished(self) -> list[Job]:
        """Jobs the tracker must (re)drive: active, or ended but not yet told to the user."""
        return await self._fetch_all(f"{JOB} WHERE {UNFINISHED} ORDER BY id", UNFINISHED_PARAMS)

    async def recent(self, limit: int = 10) -> list[Job]:
        """The latest started jobs, newest first (for operators)."""
        return await self._fetch_all(
            f"{JOB} WHERE generate_at IS NOT NULL ORDER BY generate_at DESC, id DESC LIMIT ?",
            (limit,),
        )

    async def count_active(self) -> int:
        """Jobs being worked on right now, across all users."""
        value = await self._scalar(
            f"SELECT COUNT(*) AS value FROM jobs WHERE state IN ({placeholders(ACTIVE)})",
            ACTIVE,
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
                f"{JOB} WHERE {where} AND id>? ORDER BY id LIMIT ?",
                (*params, after_id, limit),
            )
            jobs.reverse()
        else:
            bound = "" if before_id is None else " AND id<?"
            bound_params = () if before_id is None else (before_id,)
            jobs = await self._fetch_all(
                f"{JOB} WHERE {where}{bound} ORDER BY id DESC LIMIT ?",
                (*params, *bound_params, limit),
            )
        if not jobs:
            return HistoryPage([], has_older=False, has_newer=False)
        older = await self._scalar(
            f"SELECT EXISTS (SELECT 1 FROM jobs WHERE {where} AND id<?) AS value",
            (*params, jobs[-1].id),
        )
        newer = await self._scalar(
            f"SELECT EXISTS (SELECT 1 FROM jobs WHERE {where} AND id>?) AS value",
            (*params, jobs[0].id),
        )
        return HistoryPage(jobs, has_older=bool(older), has_newer=bool(newer))

    async def delivered_videos(self, user_id: int, limit: int = 20) -> list[Job]:
        """A user's delivered videos that Telegram holds (a file id), newest first."""
        return await self._fetch_all(
            f"{JOB} WHERE user_id=? AND state=? AND video_file_id IS NOT NULL "
            "AND video_file_id<>'' ORDER BY id DESC LIMIT ?",
            (user_id, JobState.DELIVERED.value, limit),
        )

    async def started_since(self, since: float) -> list[Job]:
        """Jobs started (Generate pressed) since ``since``, for statistics."""
        return await self._fetch_all(f"{JOB} WHERE generate_at>=? ORDER BY id", (since,))

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

    async def jobs_by_state(self) -> dict[JobState, int]:
        rows = await self._rows("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {JobState(row["state"]): int(row["n"]) for row in rows}

    # -- payments, users and alerts, read --------------------------------------------

    async def payment(self, charge_id: str) -> Payment | None:
        found = await self._payments(f"{PAYMENT} WHERE charge_id=?", (charge_id,))
        return found[0] if found else None

    async def payments_of(self, user_id: int, limit: int = 10) -> list[Payment]:
        """A user's latest payments, newest first (for /paysupport)."""
        return await self._payments(
            f"{PAYMENT} WHERE user_id=? ORDER BY paid_at DESC, charge_id LIMIT ?",
            (user_id, limit),
        )

    async def refunds_to_work(self, now: float, limit: int = 50) -> list[Payment]:
        """Refunds due whose next attempt has come, and confirmed ones not yet told."""
        return await self._payments(
            f"{PAYMENT} WHERE (refund=? AND next_refund_at<=?) "
            "OR (refund=? AND refund_told_at IS NULL) ORDER BY refund_due_at LIMIT ?",
            (RefundState.DUE.value, now, RefundState.DONE.value, limit),
        )

    async def next_refund_at(self) -> float | None:
        """When the earliest due refund should be tried (None: nothing is due)."""
        value = await self._scalar(
            "SELECT MIN(next_refund_at) AS value FROM payments WHERE refund=?",
            (RefundState.DUE.value,),
        )
        return float(value) if value is not None else None

    async def stars_since(self, since: float) -> tuple[int, int]:
        """(Stars taken, Stars refunded) by payments made since ``since``."""
        row = await self._row(
            "SELECT COALESCE(SUM(amount), 0) AS taken, "
            "COALESCE(SUM(CASE WHEN refund=? THEN amount ELSE 0 END), 0) AS refunded "
            "FROM payments WHERE paid_at>=?",
            (RefundState.DONE.value, since),
        )
        return (int(row["taken"]), int(row["refunded"])) if row else (0, 0)

    async def refunds_due_before(self, before: float) -> list[Payment]:
        """Refunds still due that became due before ``before`` (stuck ones)."""
        return await self._payments(
            f"{PAYMENT} WHERE refund=? AND refund_due_at<? ORDER BY refund_due_at",
            (RefundState.DUE.value, before),
        )

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

    async def alert_state(self, kind: str) -> tuple[bool, float] | None:
        row = await self._row("SELECT active, last_sent_at FROM alerts WHERE kind=?", (kind,))
        return (bool(row["active"]), float(row["last_sent_at"])) if row else None

    # -- drafts ----------------------------------------------------------------------

    async def create_draft(
        self, new: NewJob, options: VideoOptions, now: float | None = None
    ) -> tuple[Job, bool]:
        """Insert a draft for a photo unless one exists for the same asking message.

        Returns the job and whether this call created it (False on re-delivery).
        """
        now = self._clock() if now is None else now
        # One statement: the unique index on the asking message makes a re-delivered
        # photo insert nothing (on PostgreSQL it waits for a racing insert of the same
        # photo to commit, so the read after it finds that row).
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
            f"{JOB} WHERE chat_id=? AND trigger_message_id=? AND retry_of IS NULL",
            (new.chat_id, new.trigger_message_id),
        )
        assert existing is not None  # drafts are never deleted
        return existing, False

    async def set_keyboard_message(self, job_id: int, message_id: int) -> None:
        """Remember which bot message shows this job's keyboard, then its status."""
        await self._remember_message("keyboard_message_id", job_id, message_id)

    async def _remember_message(self, column: str, job_id: int, message_id: int) -> None:
        """``column`` is one of this module's own names, never input."""
        await self._write(
            f"UPDATE jobs SET {column}=?, updated_at=? WHERE id=?",
            (message_id, self._clock(), job_id),
        )

    async def update_options(self, job_id: int, options: VideoOptions) -> Job | None:
        """Change a draft's options; None when the job is gone or no longer a draft."""
        return await self._write_job(
            "UPDATE jobs SET quality=?, duration=?, style=?, seed=?, updated_at=? "
            "WHERE id=? AND state=? RETURNING *",
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

    async def set_invoice_message(self, job_id: int, message_id: int) -> None:
        """Remember the invoice message, to remove it when the options change."""
        await self._remember_message("invoice_message_id", job_id, message_id)

    async def reopen_draft(self, job_id: int, user_id: int) -> Job | None:
        """ "Change options" while an invoice is out: back to DRAFT; the invoice is void."""
        return await self._write_job(
            "UPDATE jobs SET state=?, updated_at=? WHERE id=? AND user_id=? AND state=? "
            "RETURNING *",
            (
                JobState.DRAFT.value,
                self._clock(),
                job_id,
                user_id,
                JobState.AWAITING_PAYMENT.value,
            ),
        )

    # -- leases (bot.core.leases) ----------------------------------------------------

    async def claim_job(self, job_id: int, lease: Lease, now: float | None = None) -> Job | None:
        """Claim (or extend) one unfinished job's lease unless another instance holds it
        unlapsed; the job, or None."""
        now = self._clock() if now is None else now
        return await self._write_job(
            "UPDATE jobs SET owner=?, lease_until=? WHERE id=? "
            f"AND (owner IS NULL OR owner=? OR lease_until<?) AND {UNFINISHED} RETURNING *",
            (lease.owner, lease.until(now), job_id, lease.owner, now, *UNFINISHED_PARAMS),
        )

    async def claim_jobs(self, lease: Lease, limit: int, now: float | None = None) -> list[Job]:
        """Up to ``limit`` unfinished jobs nobody holds, oldest first, now ``lease``'s."""
        now = self._clock() if now is None else now
        rows = await self._write_returning(
            "UPDATE jobs SET owner=?, lease_until=? WHERE id IN (SELECT id FROM jobs "
            f"WHERE {UNFINISHED} AND (owner IS NULL OR lease_until<?) ORDER BY id LIMIT ?"
            f"{self._SKIP_LOCKED}) RETURNING *",
            (lease.owner, lease.until(now), *UNFINISHED_PARAMS, now, limit),
        )
        return sorted((row_to_job(row) for row in rows), key=lambda job: job.id)

    async def renew_leases(self, lease: Lease, now: float | None = None) -> list[int]:
        """One statement: every lease ``lease.owner`` still has extended; their job ids.

        A lease that lapsed but that nobody took is still this owner's (a claim makes
        the row another's in one statement), so it is extended too: a renewal late under
        load would otherwise give up jobs this instance is driving, for another
        instance to drive them as well (the scale bench's duplicate videos)."""
        now = self._clock() if now is None else now
        rows = await self._write_returning(
            "UPDATE jobs SET lease_until=? WHERE owner=? AND notified_at IS NULL RETURNING id",
            (lease.until(now), lease.owner),
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
        await self._release("jobs", owner)

    async def _release(self, table: str, owner: str) -> None:
        """Every lease of ``owner`` in ``table`` (this module's own name) let go."""
        await self._write(
            f"UPDATE {table} SET owner=NULL, lease_until=NULL WHERE owner=?", (owner,)
        )

    async def claim_refunds(self, lease: Lease, now: float, limit: int = 10) -> list[Payment]:
        """Refunds to work (as refunds_to_work) that no other instance holds, now
        ``lease``'s."""
        rows = await self._write_returning(
            "UPDATE payments SET owner=?, lease_until=? WHERE charge_id IN (SELECT charge_id "
            f"FROM payments WHERE {REFUNDS_TO_WORK} AND (owner IS NULL OR owner=? "
            f"OR lease_until<?) ORDER BY refund_due_at LIMIT ?{self._SKIP_LOCKED}) RETURNING *",
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
        await self._release("payments", owner)

    # -- users and alerts, written ---------------------------------------------------

    async def set_language(self, user_id: int, language: str, now: float | None = None) -> None:
        """Remember the language the user chose with /language."""
        await self._write(
            "INSERT INTO users (user_id, language, updated_at) VALUES (?,?,?) "
            "ON CONFLICT (user_id) DO UPDATE SET language=excluded.language, "
            "updated_at=excluded.updated_at",
            (user_id, language, self._clock() if now is None else now),
        )

    async def remember_options(
        self, user_id: int, options: VideoOptions, now: float | None = None
    ) -> None:
        """Remember the quality, duration and style the user just chose (not the seed)."""
        await self._write(
            "INSERT INTO users (user_id, quality, duration, style, updated_at) "
            "VALUES (?,?,?,?,?) ON CONFLICT (user_id) DO UPDATE SET quality=excluded.quality, "
            "duration=excluded.duration, style=excluded.style, updated_at=excluded.updated_at",
            (
                user_id,
                options.quality,
                options.duration,
                options.style,
                self._clock() if now is None else now,
            ),
        )

    async def save_alert_state(self, kind: str, active: bool, last_sent_at: float) -> None:
        await self._write(
            "INSERT INTO alerts (kind, active, last_sent_at) VALUES (?,?,?) "
            "ON CONFLICT (kind) DO UPDATE SET active=excluded.active, "
            "last_sent_at=excluded.last_sent_at",
            (kind, int(active), last_sent_at),
        )

    # -- updates (webhook mode) ------------------------------------------------------

    async def receive_update(self, update_id: int, body: str, lease: Lease, now: float) -> bool:
        """Take this update id once across every instance sharing the ledger and store
        it, held by ``lease``: one insert keyed on the id, no transaction (a getUpdates
        batch is stored all at once, :mod:`bot.telegram.inbox`, and a transaction per
        update stopped every other write for each: docs/benchmarks.md). About once an
        hour old claims are pruned first, by one statement of their own: handled ones,
        and those nobody holds (given up)."""
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
            "VALUES (?,?,?,?,?) ON CONFLICT (update_id) DO NOTHING",
            (update_id, now, body, lease.owner, lease.until(now)),
        )
        return changed == 1

    async def updates_handled(self, update_ids: Sequence[int], now: float) -> None:
        if not update_ids:
            return
        await self._write(
            "UPDATE updates SET handled_at=?, owner=NULL, lease_until=NULL "
            f"WHERE update_id IN ({placeholders(update_ids)}) AND handled_at IS NULL",
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
            f"ORDER BY update_id LIMIT ?{self._SKIP_LOCKED}) RETURNING update_id, body, attempts",
            (lease.owner, lease.until(now), now, max_attempts, limit),
        )
        stored = [
            StoredUpdate(int(row["update_id"]), row["body"], int(row["attempts"])) for row in rows
        ]
        return sorted(stored, key=lambda update: update.update_id)

    # -- starting a job --------------------------------------------------------------

    async def _locked_job(self, tx: Statements, job_id: int) -> Job | None:
        return await first_job(tx, f"{JOB} WHERE id=?{self._LOCK_ROW}", (job_id,))

    @staticmethod
    async def _limit_outcome(
        tx: Statements, user_id: int, limits: Limits, now: float
    ) -> StartOutcome | None:
        active = await count(
            tx,
            "SELECT COUNT(*) AS value FROM jobs WHERE user_id=? "
            f"AND state IN ({placeholders(ACTIVE)})",
            (user_id, *ACTIVE),
        )
        if active >= limits.max_active_per_user:
            return StartOutcome.TOO_MANY_ACTIVE
        if limits.daily_per_user > 0:
            started_today = await _count_started(tx, user_id, utc_day_start(now))
            if started_today >= limits.daily_per_user:
                return StartOutcome.DAILY_LIMIT
        return None

    async def count_started_since(self, user_id: int, since: float) -> int:
        """Jobs a user started (pressed Generate) since ``since``; refused submits don't count."""
        return await _count_started(self._reads, user_id, since)

    async def free_videos_used(self, user_id: int) -> int:
        """Free jobs a user started that made (or may still make) a video."""
        return await _free_used(self._reads, user_id)

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

        async def work(tx: Statements) -> StartResult:
            job = await self._locked_job(tx, job_id)
            if job is None:
                return StartResult(StartOutcome.NOT_FOUND)
            if job.user_id != user_id:
                return StartResult(StartOutcome.NOT_OWNER, job)
            if job.state is JobState.AWAITING_PAYMENT:
                return StartResult(StartOutcome.AWAITING_PAYMENT, job)
            if job.state is not JobState.DRAFT:
                return StartResult(StartOutcome.ALREADY_STARTED, job)
            refused = await self._limit_outcome(tx, user_id, limits, now)
            if refused is not None:
                return StartResult(refused, job)
            if await _needs_payment(tx, user_id, price, free_videos):
                invoiced = await first_job(
                    tx,
                    "UPDATE jobs SET state=?, price_stars=?, invoice_no=invoice_no+1, "
                    "updated_at=? WHERE id=? AND state=? RETURNING *",
                    (JobState.AWAITING_PAYMENT.value, price, now, job_id, JobState.DRAFT.value),
                )
                return StartResult(StartOutcome.INVOICE, _held(invoiced))
            started = await first_job(
                tx,
                "UPDATE jobs SET state=?, price_stars=0, generate_at=?, updated_at=? "
                "WHERE id=? AND state=? RETURNING *",
                (JobState.PREPARING.value, now, now, job_id, JobState.DRAFT.value),
            )
            return StartResult(StartOutcome.STARTED, _held(started))

        return await self._in_users_turn(user_id, work)

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
        return await self._follow_up(
            old_job_id,
            user_id,
            limits,
            self._clock() if now is None else now,
            price=price,
            free_videos=free_videos,
            again=False,
            status_message_id=status_message_id,
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
        return await self._follow_up(
            old_job_id,
            user_id,
            limits,
            self._clock() if now is None else now,
            price=price,
            free_videos=free_videos,
            again=True,
            status_message_id=None,
        )

    async def _follow_up(
        self,
        old_job_id: int,
        user_id: int,
        limits: Limits,
        now: float,
        *,
        price: int,
        free_videos: int,
        again: bool,
        status_message_id: int | None,
    ) -> StartResult:
        """The new job of "Try again" or (``again``) "Again": a copy of the old job
        (photo, options, language; for "Again" its upload too) with no seed yet, free or
        awaiting its own payment. ``retry_of`` names the old job (unique: one per press)."""

        async def work(tx: Statements) -> StartResult:
            old = await self._locked_job(tx, old_job_id)
            followable = old is not None and (
                old.state is JobState.DELIVERED if again else offers_retry(old)
            )
            if old is None or not followable:
                return StartResult(StartOutcome.NOT_FOUND)
            if old.user_id != user_id:
                return StartResult(StartOutcome.NOT_OWNER, old)
            existing = await first_job(tx, f"{JOB} WHERE retry_of=?", (old_job_id,))
            if existing is not None:
                if again and existing.state is JobState.AWAITING_PAYMENT:
                    return StartResult(StartOutcome.AWAITING_PAYMENT, existing)
                return StartResult(StartOutcome.ALREADY_STARTED, existing)
            refused = await self._limit_outcome(tx, user_id, limits, now)
            if refused is not None:
                return StartResult(refused, old)
            priced = await _needs_payment(tx, old.user_id, price, free_videos)
            state = JobState.AWAITING_PAYMENT if priced else JobState.PREPARING
            new = await first_job(
                tx,
                "INSERT INTO jobs (chat_id, user_id, chat_type, trigger_message_id, "
                "photo_message_id, thread_id, file_id, file_unique_id, file_size, mime_type, "
                "quality, duration, style, seed, image_url, state, keyboard_message_id, "
                "retry_of, price_stars, invoice_no, created_at, generate_at, updated_at, "
                "language) SELECT chat_id, user_id, chat_type, trigger_message_id, "
                "photo_message_id, thread_id, file_id, file_unique_id, file_size, mime_type, "
                "quality, duration, style, NULL, CASE WHEN ? THEN image_url END, ?, ?, id, ?, "
                "?, ?, ?, ?, language FROM jobs WHERE id=? RETURNING *",
                (
                    again,
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
            outcome = StartOutcome.INVOICE if priced else StartOutcome.STARTED
            return StartResult(outcome, _held(new))

        return await self._in_users_turn(user_id, work)

    # -- payments --------------------------------------------------------------------

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
        now = self._clock() if now is None else now
        refused = await self._limit_outcome(self._reads, user_id, limits, now)
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
            tx: Statements,
        ) -> tuple[PaymentOutcome | None, Payment, Job | None, RefundReason | None]:
            existing = await first(tx, f"{PAYMENT} WHERE charge_id=?", (new.charge_id,))
            if existing is not None:
                payment = row_to_payment(existing)
                job = await _job(tx, payment.job_id) if payment.job_id else None
                return PaymentOutcome.ALREADY_RECORDED, payment, job, None
            parsed = parse_payload(new.payload)
            job = await _job(tx, parsed[0]) if parsed else None
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
            row = await first(
                tx,
                "INSERT INTO payments (charge_id, provider_charge_id, user_id, chat_id, job_id, "
                "payload, amount, currency, paid_at, refund, refund_reason, refund_due_at, "
                "next_refund_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING *",
                (
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
                    stamp if reason else None,
                ),
            )
            assert row is not None  # INSERT … RETURNING
            if job is not None and reason is None:
                started = await first_job(
                    tx,
                    "UPDATE jobs SET state=?, charge_id=?, generate_at=?, updated_at=? "
                    "WHERE id=? AND state=? RETURNING *",
                    (
                        JobState.PREPARING.value,
                        new.charge_id,
                        stamp,
                        stamp,
                        job.id,
                        JobState.AWAITING_PAYMENT.value,
                    ),
                )
                job = started or await _job(tx, job.id)
            return None, row_to_payment(row), job, reason

        outcome, payment, job, reason = await self._transact(work)
        if outcome is not None:
            return outcome, payment, job
        if reason is None:
            self._log.info(
                "payment %s: %d %s started job J%s",
                new.charge_id,
                new.amount,
                new.currency,
                payment.job_id,
            )
            return PaymentOutcome.STARTED, payment, job
        self._log.warning(
            "payment %s: %d %s owed back (%s)",
            new.charge_id,
            new.amount,
            new.currency,
            reason.value,
        )
        return PaymentOutcome.REFUND_DUE, payment, job

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
        lease_sql, lease_params, fence_sql, fence_params = lease_clauses(
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
        owes_refund = target.value in UNDELIVERED
        rows: Sequence[Row] = []
        if not owes_refund:
            # The common step: one statement, atomic on its own.
            rows = await self._write_returning(update, params)
        if not rows and (owes_refund or lease is not None):
            # A refund to owe with it, or a fenced write refused: in one transaction,
            # so that the lease check tells why of the very state the write found.

            async def work(tx: Statements) -> Sequence[Row]:
                written = await tx.rows(update, params)
                if written and owes_refund:
                    await owe_refund(tx, job_id, RefundReason.JOB_ENDED, now)
                elif not written and lease is not None:
                    await check_lease(tx, "jobs", "id", job_id, lease, now)
                return written

            rows = await self._transact(
                work, isolation="serializable" if lease is None else "read_committed"
            )
        if not rows:
            return None
        job = row_to_job(rows[0])
        since = f", {now - job.generate_at:.1f}s after Generate" if job.generate_at else ""
        why = f" ({job.reason.value})" if job.reason and target in TERMINAL_STATES else ""
        self._log.info(
            "job %s: %s -> %s%s%s", job.short_id, source.value, target.value, why, since
        )
        return job

    async def mark_notified(
        self, job_id: int, now: float | None = None, *, lease: Lease | None = None
    ) -> None:
        """The user has heard the outcome: the job leaves the tracker for good, and its
        lease is let go. With ``lease``, fenced (LeaseLost when it is not held)."""
        stamp = self._clock()
        _, _, fence_sql, fence_params = lease_clauses(lease, stamp)
        update = (
            "UPDATE jobs SET notified_at=?, updated_at=?, owner=NULL, lease_until=NULL "
            f"WHERE id=? AND notified_at IS NULL{fence_sql}"
        )
        params = (stamp if now is None else now, stamp, job_id, *fence_params)
        if await self._write(update, params) or lease is None:
            return  # the common case: one statement
        held = lease

        async def work(tx: Statements) -> None:
            # Refused: again in one transaction, so the checks tell why of the state it
            # found.
            if await tx.execute(update, params) == 0:
                told = await first(
                    tx, "SELECT notified_at IS NOT NULL AS value FROM jobs WHERE id=?", (job_id,)
                )
                if not (told and told["value"]):
                    await check_lease(tx, "jobs", "id", job_id, held, stamp)

        await self._transact(work, isolation="read_committed")

    # -- refunds ---------------------------------------------------------------------

    async def _fenced_payment_write(
        self, sql: str, params: tuple[Any, ...], charge_id: str, lease: Lease | None, now: float
    ) -> None:
        """A refund's write; with ``lease`` fenced on the payment's claim (LeaseLost): the
        fence ends the statement's ``WHERE``."""
        _, _, fence_sql, fence_params = lease_clauses(lease, now)
        sql, params = sql + fence_sql, (*params, *fence_params)
        if lease is None:
            await self._write(sql, params)
            return
        held = lease

        async def work(tx: Statements) -> None:
            if await tx.execute(sql, params) == 0:
                await check_lease(tx, "payments", "charge_id", charge_id, held, now)

        await self._transact(work, isolation="read_committed")

    async def refund_confirmed(
        self, charge_id: str, now: float | None = None, *, lease: Lease | None = None
    ) -> None:
        """Telegram confirmed the refund (or said it already happened). With ``lease``,
        fenced on the claim, which it extends (the payer is told next)."""
        stamp = self._clock()
        lease_sql, lease_params, _, _ = lease_clauses(lease, stamp)
        await self._fenced_payment_write(
            f"UPDATE payments SET refund=?, refunded_at=?{lease_sql} "
            "WHERE charge_id=? AND refund=?",
            (
                RefundState.DONE.value,
                stamp if now is None else now,
                *lease_params,
                charge_id,
                RefundState.DUE.value,
            ),
            charge_id,
            lease,
            stamp,
        )

    async def refund_failed(
        self, charge_id: str, retry_at: float, *, lease: Lease | None = None
    ) -> None:
        """This attempt failed: try again at ``retry_at`` (the claim is let go)."""
        await self._fenced_payment_write(
            "UPDATE payments SET refund_attempts=refund_attempts+1, next_refund_at=?, "
            "owner=NULL, lease_until=NULL WHERE charge_id=? AND refund=?",
            (retry_at, charge_id, RefundState.DUE.value),
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
        await self._fenced_payment_write(
            "UPDATE payments SET refund_told_at=?, owner=NULL, lease_until=NULL "
            "WHERE charge_id=? AND refund_told_at IS NULL",
            (stamp if now is None else now, charge_id),
            charge_id,
            lease,
            stamp,
        )

    async def request_refund(self, charge_id: str, now: float | None = None) -> Payment | None:
        """An operator's /refund: owed back unless it already is (or was); None if unknown."""
        now = self._clock() if now is None else now

        async def work(tx: Statements) -> Payment | None:
            await tx.execute(
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
            row = await first(tx, f"{PAYMENT} WHERE charge_id=?", (charge_id,))
            return row_to_payment(row) if row else None

        return await self._transact(work)


class _Reads:
    """A ledger's own reads (one statement each, outside any transaction) as
    :class:`Statements`, for the counts that a start also makes inside one."""

    def __init__(self, ledger: SqlLedger) -> None:
        self._ledger = ledger

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Row]:
        return await self._ledger._rows(sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        raise TypeError("reads only: a write runs in the ledger's transaction")


async def _job(tx: Statements, job_id: int) -> Job | None:
    return await first_job(tx, f"{JOB} WHERE id=?", (job_id,))


def _held(job: Job | None) -> Job:
    """A row a statement of this transaction must have returned."""
    assert job is not None, "a row this transaction holds is gone"
    return job


async def _count_started(tx: Statements, user_id: int, since: float) -> int:
    return await count(
        tx,
        "SELECT COUNT(*) AS value FROM jobs WHERE user_id=? AND generate_at>=? AND state<>?",
        (user_id, since, JobState.REJECTED.value),
    )


async def _free_used(tx: Statements, user_id: int) -> int:
    return await count(
        tx,
        "SELECT COUNT(*) AS value FROM jobs WHERE user_id=? AND generate_at IS NOT NULL "
        f"AND charge_id IS NULL AND state NOT IN ({placeholders(UNDELIVERED)})",
        (user_id, *UNDELIVERED),
    )


async def _needs_payment(tx: Statements, user_id: int, price: int, free_videos: int) -> bool:
    return price > 0 and await _free_used(tx, user_id) >= free_videos
