"""What the SQLite and PostgreSQL ledgers share: each rule of the ledger written once.

Statements are written with ``?`` placeholders in SQL that both databases read alike;
asyncpg gets them numbered (:func:`numbered`). A backend supplies how one statement runs
(:meth:`SqlLedger._rows`, :meth:`~SqlLedger._write`, :meth:`~SqlLedger._write_returning`)
and keeps what only it does: SQLite's write gate and one-trip statements, PostgreSQL's
pool, retries and locks. Rows are read by column name.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..core.jobs import ACTIVE_STATES, TERMINAL_STATES, Job, JobState, Reason
from ..core.options import VideoOptions
from ..core.payments import Payment, RefundReason, RefundState
from ..core.ports import HistoryPage, RunSeconds
from ..core.users import UserPreferences

__all__ = ["Row", "SqlLedger", "numbered", "row_to_job", "row_to_payment"]

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


def placeholders(values: Sequence[object]) -> str:
    """One ``?`` per value, for ``IN (…)``."""
    return ",".join("?" for _ in values)


@functools.lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """``sql`` with its ``?`` placeholders numbered as asyncpg takes them (``$1``, ``$2``,
    …). The statements of the ledgers hold no ``?`` anywhere else."""
    parts = sql.split("?")
    return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], start=1)) + parts[-1]


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


class SqlLedger(abc.ABC):
    """The :class:`~bot.core.ports.Ledger`'s reads and writes over a backend's statements.

    A subclass runs one statement its own way; what the statements are, and what their
    rows mean, is written here once.
    """

    _clock: Callable[[], float]

    # -- what a backend supplies -----------------------------------------------------

    @abc.abstractmethod
    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Row]:
        """Every row of one read (``?`` placeholders); a failure is LedgerReadFailed."""

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
