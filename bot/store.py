"""The job ledger: every SQL statement of the bot lives in this module.

SQLite in WAL mode with ``synchronous=FULL``: a committed transition of a paid job must
survive a power cut, and the bot needs a few commits per second at most (thousands are
available). Writes run under one lock with ``BEGIN IMMEDIATE`` so a read-then-write
never meets ``SQLITE_BUSY`` halfway. State changes are compare-and-set on the current
state, so a re-delivered update or a second task cannot move a job twice.

The interface is small and typed so a PostgreSQL ledger can implement it later.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import aiosqlite

from .jobs import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    Job,
    JobState,
    NewJob,
    Reason,
    can_transition,
)
from .options import VideoOptions

__all__ = [
    "JobStore",
    "Limits",
    "RunSeconds",
    "StartOutcome",
    "StartResult",
    "InvalidTransition",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        chat_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        chat_type TEXT NOT NULL,
        trigger_message_id INTEGER NOT NULL,
        photo_message_id INTEGER NOT NULL,
        thread_id INTEGER,
        file_id TEXT NOT NULL,
        file_unique_id TEXT NOT NULL,
        file_size INTEGER,
        mime_type TEXT NOT NULL,
        quality TEXT NOT NULL,
        duration INTEGER NOT NULL,
        style TEXT,
        seed INTEGER,
        state TEXT NOT NULL,
        reason TEXT,
        keyboard_message_id INTEGER,
        request_id TEXT UNIQUE,
        output_url TEXT,
        video_file_id TEXT,
        retry_of INTEGER UNIQUE REFERENCES jobs(id),
        poll_count INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        generate_at REAL,
        submitted_at REAL,
        completed_at REAL,
        finished_at REAL,
        notified_at REAL,
        updated_at REAL NOT NULL
    );
    -- A re-delivered update must find its job, not make a second one.
    CREATE UNIQUE INDEX jobs_trigger ON jobs(chat_id, trigger_message_id)
        WHERE retry_of IS NULL;
    CREATE INDEX jobs_state ON jobs(state);
    CREATE INDEX jobs_user_generate ON jobs(user_id, generate_at);
    CREATE TABLE alerts (
        kind TEXT PRIMARY KEY,
        active INTEGER NOT NULL,
        last_sent_at REAL NOT NULL
    );
    """,
    # When a poll first saw the job PROCESSING: how long processing takes is learnt from it.
    2: """
    ALTER TABLE jobs ADD COLUMN processing_at REAL;
    """,
}

_COLUMNS = (
    "id, chat_id, user_id, chat_type, trigger_message_id, photo_message_id, thread_id, "
    "file_id, file_unique_id, file_size, mime_type, quality, duration, style, seed, state, "
    "reason, keyboard_message_id, request_id, output_url, video_file_id, retry_of, "
    "poll_count, created_at, generate_at, submitted_at, completed_at, finished_at, notified_at"
)

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
    }
)


@dataclass(frozen=True)
class RunSeconds:
    """Seconds recent jobs took: submit → COMPLETED, and PROCESSING seen → COMPLETED."""

    total: list[float]
    processing: list[float]


class InvalidTransition(RuntimeError):
    """A bug: code asked for a transition the state machine does not allow."""


@dataclass(frozen=True)
class Limits:
    max_active_per_user: int
    daily_per_user: int  #: 0 = no cap


class StartOutcome(StrEnum):
    STARTED = "started"  #: this call moved the job to PREPARING
    ALREADY_STARTED = "already_started"  #: an earlier press (or re-delivery) did
    NOT_FOUND = "not_found"
    NOT_OWNER = "not_owner"
    TOO_MANY_ACTIVE = "too_many_active"
    DAILY_LIMIT = "daily_limit"


@dataclass(frozen=True)
class StartResult:
    outcome: StartOutcome
    job: Job | None = None


def _row_to_job(row: sqlite3.Row | tuple[Any, ...]) -> Job:
    (
        id_,
        chat_id,
        user_id,
        chat_type,
        trigger_message_id,
        photo_message_id,
        thread_id,
        file_id,
        file_unique_id,
        file_size,
        mime_type,
        quality,
        duration,
        style,
        seed,
        state,
        reason,
        keyboard_message_id,
        request_id,
        output_url,
        video_file_id,
        retry_of,
        poll_count,
        created_at,
        generate_at,
        submitted_at,
        completed_at,
        finished_at,
        notified_at,
    ) = tuple(row)
    return Job(
        id=id_,
        chat_id=chat_id,
        user_id=user_id,
        chat_type=chat_type,
        trigger_message_id=trigger_message_id,
        photo_message_id=photo_message_id,
        thread_id=thread_id,
        file_id=file_id,
        file_unique_id=file_unique_id,
        file_size=file_size,
        mime_type=mime_type,
        options=VideoOptions(quality=quality, duration=duration, style=style, seed=seed),
        state=JobState(state),
        reason=Reason(reason) if reason else None,
        keyboard_message_id=keyboard_message_id,
        request_id=request_id,
        output_url=output_url,
        video_file_id=video_file_id,
        retry_of=retry_of,
        poll_count=poll_count,
        created_at=created_at,
        generate_at=generate_at,
        submitted_at=submitted_at,
        completed_at=completed_at,
        finished_at=finished_at,
        notified_at=notified_at,
    )


def utc_day_start(now: float) -> float:
    """Start of the UTC day containing ``now`` (daily limits reset then)."""
    return now - (now % 86_400)


def _placeholders(values: Sequence[object]) -> str:
    return ",".join("?" for _ in values)


class JobStore:
    """The ledger. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating the folder) and migrate to the current schema."""
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=5000")
            await db.execute("PRAGMA foreign_keys=ON")
            await self._migrate(db)
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        async with db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database {self.path} was written by a newer version of the bot "
                f"(schema {version}, this bot knows {SCHEMA_VERSION})"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            await db.execute("BEGIN IMMEDIATE")
            try:
                # executescript() would commit first; one statement at a time keeps the
                # whole migration in this transaction.
                for statement in _split_sql(_MIGRATIONS[target]):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version={target}")
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("JobStore is not open")
        return self._db

    async def _fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Job | None:
        async with self.db.execute(sql, tuple(params)) as cursor:
            row = await cursor.fetchone()
        return _row_to_job(row) if row else None

    async def _fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Job]:
        async with self.db.execute(sql, tuple(params)) as cursor:
            rows = await cursor.fetchall()
        return [_row_to_job(row) for row in rows]

    async def _scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        async with self.db.execute(sql, tuple(params)) as cursor:
            row = await cursor.fetchone()
        return row[0] if row else None

    # -- drafts ----------------------------------------------------------------------

    async def create_draft(
        self, new: NewJob, options: VideoOptions, now: float | None = None
    ) -> tuple[Job, bool]:
        """Insert a draft for a photo unless one exists for the same asking message.

        Returns the job and whether this call created it (False on re-delivery).
        """
        now = time.time() if now is None else now
        async with self._write_lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                existing = await self._fetch_one(
                    f"SELECT {_COLUMNS} FROM jobs WHERE chat_id=? AND trigger_message_id=? "
                    "AND retry_of IS NULL",
                    (new.chat_id, new.trigger_message_id),
                )
                if existing is not None:
                    await self.db.execute("COMMIT")
                    return existing, False
                cursor = await self.db.execute(
                    "INSERT INTO jobs (chat_id, user_id, chat_type, trigger_message_id, "
                    "photo_message_id, thread_id, file_id, file_unique_id, file_size, "
                    "mime_type, quality, duration, style, seed, state, created_at, updated_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
                        now,
                        now,
                    ),
                )
                job_id = cursor.lastrowid
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
        job = await self.get(int(job_id or 0))
        assert job is not None
        return job, True

    async def set_keyboard_message(self, job_id: int, message_id: int) -> None:
        """Remember which bot message shows this job's keyboard, then its status."""
        async with self._write_lock:
            await self.db.execute(
                "UPDATE jobs SET keyboard_message_id=?, updated_at=? WHERE id=?",
                (message_id, time.time(), job_id),
            )

    async def update_options(self, job_id: int, options: VideoOptions) -> Job | None:
        """Change a draft's options; None when the job is gone or no longer a draft."""
        async with self._write_lock:
            cursor = await self.db.execute(
                "UPDATE jobs SET quality=?, duration=?, style=?, seed=?, updated_at=? "
                "WHERE id=? AND state=?",
                (
                    options.quality,
                    options.duration,
                    options.style,
                    options.seed,
                    time.time(),
                    job_id,
                    JobState.DRAFT.value,
                ),
            )
            changed = cursor.rowcount
        if not changed:
            return None
        return await self.get(job_id)

    # -- starting a paid job ---------------------------------------------------------

    async def _limit_outcome(
        self, user_id: int, limits: Limits, now: float
    ) -> StartOutcome | None:
        active_states = [s.value for s in ACTIVE_STATES]
        active = await self._scalar(
            f"SELECT COUNT(*) FROM jobs WHERE user_id=? AND state IN "
            f"({_placeholders(active_states)})",
            (user_id, *active_states),
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

    async def start(
        self, job_id: int, user_id: int, limits: Limits, now: float | None = None
    ) -> StartResult:
        """Generate pressed: move a draft to PREPARING once, within the user's limits."""
        now = time.time() if now is None else now
        async with self._write_lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                result = await self._start_locked(job_id, user_id, limits, now)
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
        return result

    async def _start_locked(
        self, job_id: int, user_id: int, limits: Limits, now: float
    ) -> StartResult:
        job = await self._fetch_one(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,))
        if job is None:
            return StartResult(StartOutcome.NOT_FOUND)
        if job.user_id != user_id:
            return StartResult(StartOutcome.NOT_OWNER, job)
        if job.state is not JobState.DRAFT:
            return StartResult(StartOutcome.ALREADY_STARTED, job)
        refused = await self._limit_outcome(user_id, limits, now)
        if refused is not None:
            return StartResult(refused, job)
        await self.db.execute(
            "UPDATE jobs SET state=?, generate_at=?, updated_at=? WHERE id=? AND state=?",
            (JobState.PREPARING.value, now, now, job_id, JobState.DRAFT.value),
        )
        started = await self._fetch_one(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,))
        return StartResult(StartOutcome.STARTED, started)

    async def start_retry(
        self,
        old_job_id: int,
        user_id: int,
        limits: Limits,
        status_message_id: int | None,
        now: float | None = None,
    ) -> StartResult:
        """ "Try again" pressed: start one new job copying an ended one, however often pressed."""
        now = time.time() if now is None else now
        async with self._write_lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                result = await self._start_retry_locked(
                    old_job_id, user_id, limits, status_message_id, now
                )
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
        return result

    async def _start_retry_locked(
        self,
        old_job_id: int,
        user_id: int,
        limits: Limits,
        status_message_id: int | None,
        now: float,
    ) -> StartResult:
        old = await self._fetch_one(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (old_job_id,))
        if old is None or not old.is_terminal:
            return StartResult(StartOutcome.NOT_FOUND)
        if old.user_id != user_id:
            return StartResult(StartOutcome.NOT_OWNER, old)
        existing = await self._fetch_one(
            f"SELECT {_COLUMNS} FROM jobs WHERE retry_of=?", (old_job_id,)
        )
        if existing is not None:
            return StartResult(StartOutcome.ALREADY_STARTED, existing)
        refused = await self._limit_outcome(user_id, limits, now)
        if refused is not None:
            return StartResult(refused, old)
        cursor = await self.db.execute(
            "INSERT INTO jobs (chat_id, user_id, chat_type, trigger_message_id, "
            "photo_message_id, thread_id, file_id, file_unique_id, file_size, mime_type, "
            "quality, duration, style, seed, state, keyboard_message_id, retry_of, "
            "created_at, generate_at, updated_at) "
            "SELECT chat_id, user_id, chat_type, trigger_message_id, photo_message_id, "
            "thread_id, file_id, file_unique_id, file_size, mime_type, quality, duration, "
            "style, seed, ?, ?, id, ?, ?, ? FROM jobs WHERE id=?",
            (JobState.PREPARING.value, status_message_id, now, now, now, old_job_id),
        )
        new = await self._fetch_one(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (cursor.lastrowid,))
        return StartResult(StartOutcome.STARTED, new)

    # -- transitions -----------------------------------------------------------------

    async def transition(
        self, job_id: int, source: JobState, target: JobState, **fields: Any
    ) -> Job | None:
        """Compare-and-set ``source`` → ``target``; None if the job was not in ``source``.

        Entering a terminal state stamps ``finished_at``.
        """
        if not can_transition(source, target):
            raise InvalidTransition(f"{source.value} -> {target.value}")
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"not settable: {sorted(unknown)}")
        now = time.time()
        values: dict[str, Any] = {
            key: (value.value if isinstance(value, Enum) else value)
            for key, value in fields.items()
        }
        if target in TERMINAL_STATES:
            values.setdefault("finished_at", now)
        assignments = "".join(f", {key}=?" for key in values)
        async with self._write_lock:
            cursor = await self.db.execute(
                f"UPDATE jobs SET state=?, updated_at=?{assignments} WHERE id=? AND state=?",
                (target.value, now, *values.values(), job_id, source.value),
            )
            changed = cursor.rowcount
        if not changed:
            return None
        job = await self.get(job_id)
        if job is not None:
            since = f", {now - job.generate_at:.1f}s after Generate" if job.generate_at else ""
            why = f" ({job.reason.value})" if job.reason and target in TERMINAL_STATES else ""
            log.info("job %s: %s -> %s%s%s", job.short_id, source.value, target.value, why, since)
        return job

    async def mark_notified(self, job_id: int, now: float | None = None) -> None:
        """The user has heard the outcome: the job leaves the tracker for good."""
        async with self._write_lock:
            await self.db.execute(
                "UPDATE jobs SET notified_at=?, updated_at=? WHERE id=? AND notified_at IS NULL",
                (time.time() if now is None else now, time.time(), job_id),
            )

    # -- reads -----------------------------------------------------------------------

    async def get(self, job_id: int) -> Job | None:
        return await self._fetch_one(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,))

    async def unfinished(self) -> list[Job]:
        """Jobs the tracker must (re)drive: active, or ended but not yet told to the user."""
        active = [s.value for s in ACTIVE_STATES]
        terminal = [s.value for s in TERMINAL_STATES]
        return await self._fetch_all(
            f"SELECT {_COLUMNS} FROM jobs WHERE state IN ({_placeholders(active)}) "
            f"OR (state IN ({_placeholders(terminal)}) AND notified_at IS NULL) ORDER BY id",
            (*active, *terminal),
        )

    async def recent(self, limit: int = 10) -> list[Job]:
        """The latest started jobs, newest first (for operators)."""
        return await self._fetch_all(
            f"SELECT {_COLUMNS} FROM jobs WHERE generate_at IS NOT NULL "
            "ORDER BY generate_at DESC, id DESC LIMIT ?",
            (limit,),
        )

    async def count_active(self) -> int:
        """Jobs being worked on right now, across all users."""
        active = [s.value for s in ACTIVE_STATES]
        value = await self._scalar(
            f"SELECT COUNT(*) FROM jobs WHERE state IN ({_placeholders(active)})", active
        )
        return int(value or 0)

    async def started_since(self, since: float) -> list[Job]:
        """Jobs started (Generate pressed) since ``since``, for statistics."""
        return await self._fetch_all(
            f"SELECT {_COLUMNS} FROM jobs WHERE generate_at>=? ORDER BY id", (since,)
        )

    async def run_seconds(self, quality: str, duration: int, limit: int = 50) -> RunSeconds:
        """How long Segmind took for recent jobs like this one, whole and processing."""
        async with self.db.execute(
            "SELECT completed_at - submitted_at, completed_at - processing_at FROM jobs "
            "WHERE quality=? AND duration=? AND completed_at IS NOT NULL "
            "AND submitted_at IS NOT NULL ORDER BY completed_at DESC LIMIT ?",
            (quality, duration, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return RunSeconds(
            total=[float(row[0]) for row in rows if row[0] is not None and row[0] >= 0],
            processing=[float(row[1]) for row in rows if row[1] is not None and row[1] >= 0],
        )

    # -- operator alerts -------------------------------------------------------------

    async def alert_state(self, kind: str) -> tuple[bool, float] | None:
        async with self.db.execute(
            "SELECT active, last_sent_at FROM alerts WHERE kind=?", (kind,)
        ) as cursor:
            row = await cursor.fetchone()
        return (bool(row[0]), float(row[1])) if row else None

    async def save_alert_state(self, kind: str, active: bool, last_sent_at: float) -> None:
        async with self._write_lock:
            await self.db.execute(
                "INSERT INTO alerts (kind, active, last_sent_at) VALUES (?,?,?) "
                "ON CONFLICT(kind) DO UPDATE SET active=excluded.active, "
                "last_sent_at=excluded.last_sent_at",
                (kind, int(active), last_sent_at),
            )


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script (no semicolons inside its comments or strings)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]
