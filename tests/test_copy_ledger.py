"""``python -m bot copy-ledger``: a SQLite ledger's unfinished jobs and owed payments
copied into PostgreSQL, once however often it runs, keeping job ids (invoices name them)."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from bot.core.jobs import JobState, Reason
from bot.core.limits import Limits, StartOutcome
from bot.core.options import VideoOptions
from bot.core.payments import NewPayment, PaymentOutcome, RefundState, invoice_payload
from bot.storage import SqliteLedger
from bot.storage.postgres import PostgresLedger
from bot.storage.urls import redact_database_url
from tests.builders import new_job
from tests.pgserver import PASSWORD

LIMITS = Limits(max_active_per_user=9, daily_per_user=0)


def payment(job_id: int, invoice_no: int, charge: str, amount: int = 50) -> NewPayment:
    return NewPayment(
        charge_id=charge,
        provider_charge_id="",
        user_id=1,
        chat_id=1,
        payload=invoice_payload(job_id, invoice_no),
        amount=amount,
    )


async def a_used_sqlite_ledger(path: Path) -> dict[str, int]:
    """One job of each kind the copy must take or leave; their ids by name."""
    ledger = SqliteLedger(path)
    await ledger.open()
    ids: dict[str, int] = {}

    async def draft(name: str, message_id: int) -> int:
        job, _ = await ledger.create_draft(new_job(message_id), VideoOptions())
        ids[name] = job.id
        return job.id

    try:
        await draft("draft", 1)  # left: nothing started
        done = await draft("delivered", 2)  # left: finished and told
        await ledger.start(done, 1, LIMITS)
        for source, target in (
            (JobState.PREPARING, JobState.SUBMITTING),
            (JobState.SUBMITTING, JobState.QUEUED),
            (JobState.QUEUED, JobState.COMPLETED),
            (JobState.COMPLETED, JobState.DELIVERED),
        ):
            await ledger.transition(done, source, target, request_id=f"r-{done}")
        await ledger.mark_notified(done)
        queued = await draft("queued", 3)  # taken: at Segmind
        await ledger.start(queued, 1, LIMITS)
        await ledger.transition(queued, JobState.PREPARING, JobState.SUBMITTING, seed=7)
        await ledger.transition(queued, JobState.SUBMITTING, JobState.QUEUED, request_id="r-q")
        invoiced = await draft("invoiced", 4)  # taken: its invoice may still be paid
        assert (await ledger.start(invoiced, 1, LIMITS, price=50)).outcome is (
            StartOutcome.INVOICE
        )
        paid = await draft("paid_failed", 5)  # taken: told, but its Stars are owed back
        await ledger.start(paid, 1, LIMITS, price=50)
        outcome, _, _ = await ledger.record_payment(payment(paid, 1, "ch-failed"))
        assert outcome is PaymentOutcome.STARTED
        await ledger.transition(paid, JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
        await ledger.mark_notified(paid)
        ended = await draft("retried", 6)  # taken: a retry of it is running
        await ledger.start(ended, 1, LIMITS)
        await ledger.transition(ended, JobState.PREPARING, JobState.SUBMITTING)
        await ledger.transition(ended, JobState.SUBMITTING, JobState.UNCERTAIN)
        await ledger.mark_notified(ended)
        retry = await ledger.start_retry(ended, 1, LIMITS, None)
        assert retry.job is not None
        ids["retry"] = retry.job.id
        await ledger.set_language(1, "pt_BR")  # taken: what the user chose
        await ledger.remember_options(1, VideoOptions("720p", 8))
    finally:
        await ledger.close()
    return ids


async def copy(spawn, env, url: str) -> tuple[int, str, str]:
    process = await spawn({**env, "DATABASE_URL": url}, "copy-ledger")
    code = await process.wait(timeout=30)
    stdout, stderr = await process.output()
    assert PASSWORD not in stdout + stderr
    assert "Traceback" not in stderr
    return code, stdout.strip(), "\n".join(errors(stderr))


def errors(stderr: str) -> list[str]:
    """The operator's lines (the log, at DEBUG here, goes to stderr too)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


async def test_copy_ledger_copies_what_is_owed_once(spawn, env, database, postgres_url):
    ids = await a_used_sqlite_ledger(database)
    where = f"DATABASE_PATH {database} to DATABASE_URL {redact_database_url(postgres_url)}"

    code, stdout, stderr = await copy(spawn, env, postgres_url)
    assert (code, stderr) == (0, "")
    assert stdout == (
        f"ok: copied 5 unfinished jobs, 1 payments and 1 users' language and options"
        f" from {where} (0 jobs and 0 payments were there already)"
    )
    code, stdout, _ = await copy(spawn, env, postgres_url)  # again: nothing twice
    assert code == 0
    assert stdout == (
        f"ok: copied 0 unfinished jobs, 0 payments and 0 users' language and options"
        f" from {where} (5 jobs and 1 payments were there already)"
    )

    conn = await asyncpg.connect(postgres_url)
    try:
        copied = {row["id"]: row for row in await conn.fetch("SELECT * FROM jobs")}
    finally:
        await conn.close()
    assert set(copied) == {
        ids[name] for name in ("queued", "invoiced", "paid_failed", "retried", "retry")
    }
    assert (copied[ids["queued"]]["request_id"], copied[ids["queued"]]["seed"]) == ("r-q", 7)
    assert copied[ids["retry"]]["retry_of"] == ids["retried"]

    ledger = PostgresLedger(postgres_url)
    await ledger.open()
    try:
        prefs = await ledger.user_preferences(1)
        assert (prefs.language, prefs.options) == ("pt_BR", VideoOptions("720p", 8))
        unfinished = {job.id for job in await ledger.unfinished()}
        assert unfinished == {ids["queued"], ids["retry"]}
        [owed] = await ledger.refunds_to_work(now=10**10)
        assert (owed.charge_id, owed.refund, owed.job_id) == (
            "ch-failed",
            RefundState.DUE,
            ids["paid_failed"],
        )
        # The invoice sent before the move still pays for its job, by its id.
        invoiced = await ledger.get(ids["invoiced"])
        assert invoiced is not None
        outcome, _, job = await ledger.record_payment(
            payment(invoiced.id, invoiced.invoice_no, "ch-late")
        )
        assert outcome is PaymentOutcome.STARTED
        assert job is not None
        assert job.state is JobState.PREPARING
        # New jobs are numbered after the copied ones.
        fresh, _ = await ledger.create_draft(new_job(99), VideoOptions())
        assert fresh.id > max(ids.values())
    finally:
        await ledger.close()


async def test_copy_ledger_refuses_a_database_holding_other_jobs(
    spawn, env, database, postgres_url
):
    await a_used_sqlite_ledger(database)
    other = PostgresLedger(postgres_url)
    await other.open()
    for message_id in range(500, 505):  # other photos, at the ids the copy would use
        await other.create_draft(new_job(message_id, chat_id=77), VideoOptions())
    await other.close()

    code, stdout, stderr = await copy(spawn, env, postgres_url)
    assert code == 1
    assert stdout == ""
    assert stderr.startswith(f"error: DATABASE_URL {redact_database_url(postgres_url)} already")
    assert stderr.endswith("copy into a fresh database (nothing was copied)")
    assert len(stderr.splitlines()) == 1
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT COUNT(*) FROM jobs") == 5
        assert await conn.fetchval("SELECT COUNT(*) FROM payments") == 0
    finally:
        await conn.close()


async def test_copy_ledger_needs_database_url_and_an_existing_file(spawn, env, database):
    process = await spawn(env, "copy-ledger")
    assert await process.wait() == 2
    _, stderr = await process.output()
    [line] = errors(stderr)
    assert line.startswith("error: DATABASE_URL is not set")
    process = await spawn(
        {**env, "DATABASE_URL": "postgresql://bot:x@127.0.0.1:1/db"}, "copy-ledger"
    )
    assert await process.wait() == 1
    _, stderr = await process.output()
    assert errors(stderr) == [
        f"error: DATABASE_PATH {database} does not exist: there is nothing to copy"
    ]
    assert not database.exists()
