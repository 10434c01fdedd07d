"""What only the PostgreSQL ledger promises: its migrations, several connections (and
bots) at once, and surviving a PostgreSQL restart. Against the test run's own server."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys

import asyncpg
import pytest

from bot.core.errors import LedgerReadFailed, LedgerWriteFailed
from bot.core.jobs import JobState
from bot.core.leases import Lease
from bot.core.limits import Limits, StartOutcome
from bot.core.options import VideoOptions
from bot.core.payments import NewPayment, PaymentOutcome, invoice_payload
from bot.storage import SCHEMA_VERSION, LedgerUnusable
from bot.storage.migrations import load_migrations
from bot.storage.postgres import (
    _SERIALIZATION_RETRIES,
    _USER_STARTS,
    POSTGRES_SCHEMA_VERSION,
    PostgresLedger,
    _retry_pause,
)
from tests.builders import new_job
from tests.pgserver import PASSWORD, PostgresServer, closed_port
from tests.storage.test_ledger_contract import started

LIMITS = Limits(max_active_per_user=2, daily_per_user=10)


def test_both_dialects_ship_the_same_migrations():
    sqlite = [m.name for m in load_migrations()]
    postgres = [m.name for m in load_migrations("bot.storage.migrations.postgres")]
    assert postgres == sqlite
    assert POSTGRES_SCHEMA_VERSION == SCHEMA_VERSION
    assert all(m.statements for m in load_migrations("bot.storage.migrations.postgres"))


async def versions(url: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [(row["version"], row["name"]) for row in rows]


async def test_bots_starting_together_migrate_once_and_record_each_version(postgres_url):
    ledgers = [PostgresLedger(postgres_url) for _ in range(4)]
    await asyncio.gather(*(ledger.open() for ledger in ledgers))
    try:
        expected = [(m.version, m.name) for m in load_migrations()]
        assert await versions(postgres_url) == expected
        job, created = await ledgers[0].create_draft(new_job(), VideoOptions())
        assert created
        assert (await ledgers[3].get(job.id)) == job
    finally:
        for ledger in ledgers:
            await ledger.close()
    again = PostgresLedger(postgres_url)  # reopening an up-to-date ledger is a no-op
    await again.open()
    await again.close()
    assert len(await versions(postgres_url)) == SCHEMA_VERSION


async def test_a_ledger_from_a_newer_bot_is_refused_untouched(postgres_url):
    ledger = PostgresLedger(postgres_url)
    await ledger.open()
    await ledger.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(
            "INSERT INTO schema_migrations VALUES ($1, '9999_future.sql', 0)", SCHEMA_VERSION + 1
        )
    finally:
        await conn.close()
    with pytest.raises(LedgerUnusable, match="newer version of the bot"):
        await PostgresLedger(postgres_url).open()


async def test_two_bots_on_one_database_start_a_job_and_record_a_payment_once(postgres_url):
    """The ledger's rules hold across connections, as between two bot processes."""
    one, two = PostgresLedger(postgres_url), PostgresLedger(postgres_url)
    await one.open()
    await two.open()
    try:
        draft, _ = await one.create_draft(new_job(), VideoOptions())
        again, created = await two.create_draft(new_job(), VideoOptions())
        assert (again.id, created) == (draft.id, False)
        results = await asyncio.gather(
            *(ledger.start(draft.id, 1, LIMITS, price=50) for ledger in (one, two) * 3)
        )
        outcomes = [result.outcome for result in results]
        assert outcomes.count(StartOutcome.INVOICE) == 1
        assert outcomes.count(StartOutcome.AWAITING_PAYMENT) == 5
        job = await one.get(draft.id)
        assert job is not None
        paid = NewPayment(
            charge_id="ch-1",
            provider_charge_id="",
            user_id=1,
            chat_id=1,
            payload=invoice_payload(job.id, job.invoice_no),
            amount=50,
        )
        recorded = await asyncio.gather(*(ledger.record_payment(paid) for ledger in (one, two)))
        assert sorted(outcome.value for outcome, _, _ in recorded) == sorted(
            [PaymentOutcome.STARTED.value, PaymentOutcome.ALREADY_RECORDED.value]
        )
        assert (await two.get(job.id)).state is JobState.PREPARING  # type: ignore[union-attr]
    finally:
        await one.close()
        await two.close()


async def test_unreachable_at_open_is_one_plain_reason(postgres_server: PostgresServer):
    ledger = PostgresLedger(postgres_server.url(port=closed_port()))
    with pytest.raises(LedgerUnusable, match=r"^cannot be reached \(connection refused\)$"):
        await ledger.open()


async def test_a_wrong_password_or_database_is_named_without_the_password(
    postgres_server: PostgresServer,
):
    wrong = postgres_server.url().replace("s3cret", "wrong")
    with pytest.raises(LedgerUnusable) as refused:
        await PostgresLedger(wrong).open()
    assert str(refused.value) == "refused the user name or password"
    with pytest.raises(LedgerUnusable) as missing:
        await PostgresLedger(postgres_server.url("no_such_db")).open()
    assert str(missing.value) == "has no such database"
    for message in (str(refused.value), str(missing.value)):
        assert PASSWORD not in message
        assert "wrong" not in message


async def test_a_postgres_restart_between_two_calls_loses_nothing(
    postgres_server: PostgresServer, postgres_url
):
    ledger = PostgresLedger(postgres_url)
    await ledger.open()
    try:
        job, _ = await ledger.create_draft(new_job(), VideoOptions())
        assert (await ledger.start(job.id, 1, LIMITS)).outcome is StartOutcome.STARTED
        first_pid = postgres_server.pid()
        # Every pooled connection is cut; the ledger's next calls reconnect on their own.
        await asyncio.to_thread(postgres_server.restart)
        moved = await ledger.transition(job.id, JobState.PREPARING, JobState.SUBMITTING)
        assert moved is not None
        await asyncio.to_thread(postgres_server.restart)
        [unfinished] = await ledger.unfinished()
        assert (unfinished.id, unfinished.state) == (job.id, JobState.SUBMITTING)
        assert postgres_server.pid() != first_pid  # really restarted, twice
    finally:
        await ledger.close()


async def test_while_postgres_is_down_calls_fail_as_the_core_errors_then_recover(
    postgres_server: PostgresServer, postgres_url
):
    ledger = PostgresLedger(postgres_url)
    await ledger.open()
    try:
        job, _ = await ledger.create_draft(new_job(), VideoOptions())
        await asyncio.to_thread(postgres_server.stop_only)
        try:
            with pytest.raises(LedgerReadFailed) as read:
                await ledger.get(job.id)
            with pytest.raises(LedgerWriteFailed) as write:
                await ledger.start(job.id, 1, LIMITS)
            with pytest.raises(LedgerUnusable):
                await ledger.prove_writable()
        finally:
            await asyncio.to_thread(postgres_server.start_again)
        for failure in (read.value, write.value):
            assert PASSWORD not in str(failure)
            assert str(failure).startswith(("cannot be reached", "lost the connection"))
        assert (await ledger.start(job.id, 1, LIMITS)).outcome is StartOutcome.STARTED
        await ledger.prove_writable()
    finally:
        await ledger.close()


@pytest.mark.long
def test_the_sqlite_default_never_imports_the_postgresql_driver(tmp_path):
    """DATABASE_URL unset: the bot's modules and its ledger load no asyncpg (memory)."""
    script = (
        "import asyncio, sys\n"
        "import bot.__main__, bot.app, bot.check\n"
        "from bot.storage import make_ledger\n"
        "from pathlib import Path\n"
        f"ledger = make_ledger(database_url=None, database_path=Path({str(tmp_path / 'l.db')!r}),"
        " exclusive=True)\n"
        "asyncio.run(ledger.open()); asyncio.run(ledger.close())\n"
        "print('asyncpg' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


async def test_options_the_driver_refuses_are_named_without_the_password(
    postgres_server: PostgresServer,
):
    with pytest.raises(LedgerUnusable) as refused:
        await PostgresLedger(postgres_server.url() + "?sslmode=bogus").open()
    assert str(refused.value).startswith("has options the driver refuses (`sslmode`")
    assert PASSWORD not in str(refused.value)


async def test_several_bots_open_one_database_at_once_and_none_is_locked_out(postgres_url):
    """No single-bot lock any more: bots share the database, each job leased to one."""
    ledgers = [PostgresLedger(postgres_url) for _ in range(3)]
    for ledger in ledgers:
        await ledger.open()  # one after another, each while the others stay open
    try:
        assert [ledger.gone() for ledger in ledgers] == [None, None, None]
        job_id = await started(ledgers[0])
        claims = await asyncio.gather(
            *(ledger.claim_job(job_id, Lease(f"bot-{n}")) for n, ledger in enumerate(ledgers))
        )
        assert len([job for job in claims if job is not None]) == 1
    finally:
        for ledger in ledgers:
            await ledger.close()


async def test_a_batch_claim_skips_a_row_another_instance_is_claiming_without_waiting(
    postgres_url,
):
    """FOR UPDATE SKIP LOCKED: a job whose row another transaction holds (another
    instance's claim in flight) is left to it; the others are claimed at once."""
    ledger = PostgresLedger(postgres_url)
    await ledger.open()
    other = await asyncpg.connect(postgres_url)
    try:
        ids = [await started(ledger, message_id=m, user_id=m) for m in (1, 2, 3)]
        async with other.transaction():
            await other.execute("SELECT id FROM jobs WHERE id=$1 FOR UPDATE", ids[0])
            claimed = await asyncio.wait_for(ledger.claim_jobs(Lease("bot-a"), 10), 5)
            assert [job.id for job in claimed] == ids[1:]
        # Once that transaction ended (without claiming it), the row is free again.
        assert [job.id for job in await ledger.claim_jobs(Lease("bot-b"), 10)] == ids[:1]
    finally:
        await other.close()
        await ledger.close()


async def waiting_for_an_advisory_lock(conn: asyncpg.Connection) -> bool:
    """Whether some backend waits for an advisory lock (a start waiting for its turn)."""
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype='advisory' AND NOT granted"
        )
    )


async def test_a_start_waits_for_its_own_users_turn_only(postgres_url):
    """Starts take turns per user (READ COMMITTED under the user's advisory lock): while
    user 1's turn is held, user 2 starts at once and user 1's start waits, then runs."""
    ledger = PostgresLedger(postgres_url)
    await ledger.open()
    other = await asyncpg.connect(postgres_url)
    try:
        mine, _ = await ledger.create_draft(new_job(1, 1, 1), VideoOptions())
        theirs, _ = await ledger.create_draft(new_job(2, 2, 2), VideoOptions())
        async with other.transaction():
            # User 1's turn, as the ledger's starts take it.
            await other.execute(
                "SELECT pg_advisory_xact_lock($1::int, hashint8($2::bigint))", _USER_STARTS, 1
            )
            waiting = asyncio.create_task(ledger.start(mine.id, 1, LIMITS))
            result = await asyncio.wait_for(ledger.start(theirs.id, 2, LIMITS), 5)
            assert result.outcome is StartOutcome.STARTED
            async with asyncio.timeout(5):
                # PostgreSQL's lock table has no event to await: it is read until it shows.
                while not await waiting_for_an_advisory_lock(other):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            assert not waiting.done()
        assert (await asyncio.wait_for(waiting, 5)).outcome is StartOutcome.STARTED
    finally:
        await other.close()
        await ledger.close()


def test_serialization_retries_back_off_exponentially_to_a_cap(monkeypatch):
    """Each pause is a random share of a ceiling that doubles from 5 ms to 200 ms; all
    retries together wait a few seconds at most (a crowd spreads out, nobody hangs)."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    ceilings = [_retry_pause(n) for n in range(1, _SERIALIZATION_RETRIES + 1)]
    assert ceilings[:7] == [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.2]
    assert set(ceilings[6:]) == {0.2}
    assert 2.0 <= sum(ceilings) <= 4.0
    monkeypatch.setattr(random, "uniform", lambda low, high: low)
    assert _retry_pause(1) == 0.0  # full jitter: from no pause at all
