"""What only the SQLite ledger promises: its file, its pragmas, its migrations."""

import asyncio
import sqlite3
import threading

import pytest

from bot.core.jobs import JobState, Reason
from bot.core.leases import Lease, LeaseLost
from bot.core.limits import Limits, StartOutcome
from bot.core.options import VideoOptions
from bot.core.ports import RunSeconds
from bot.storage import SCHEMA_VERSION, LedgerUnusable, SqliteLedger
from bot.storage.common import Statements, first
from bot.storage.migrations import load_migrations, split_statements
from bot.storage.sqlite import _WriteGate
from tests.builders import new_job


async def test_open_creates_the_folder_and_migrates(tmp_path):
    path = tmp_path / "a" / "b" / "bot.sqlite3"
    ledger = SqliteLedger(path)
    await ledger.open()
    await ledger.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = SqliteLedger(path)  # reopening an up-to-date ledger is a no-op
    await again.open()
    await again.close()


async def test_writes_are_durable_and_foreign_keys_enforced(tmp_path):
    ledger = SqliteLedger(tmp_path / "bot.sqlite3")
    await ledger.open()
    try:
        for pragma, expected in (("synchronous", 2), ("foreign_keys", 1)):  # 2 = FULL
            async with ledger.db.execute(f"PRAGMA {pragma}") as cursor:
                row = await cursor.fetchone()
            assert row is not None
            assert row[0] == expected, pragma
    finally:
        await ledger.close()


def test_migrations_are_numbered_files_shipped_with_the_package():
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, SCHEMA_VERSION + 1))
    assert migrations[0].name == "0001_jobs.sql"
    assert all(m.statements for m in migrations)


def test_statements_skip_comment_lines():
    script = "-- a comment; with a semicolon\nCREATE TABLE a (x INT);\n\n-- more\nDROP TABLE a;\n"
    assert split_statements(script) == ("CREATE TABLE a (x INT)", "DROP TABLE a")


async def test_a_ledger_from_the_first_version_is_upgraded_with_its_jobs(tmp_path):
    path = tmp_path / "bot.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(";\n".join(load_migrations()[0].statements))
        db.execute(
            "INSERT INTO jobs (chat_id, user_id, chat_type, trigger_message_id,"
            " photo_message_id, file_id, file_unique_id, mime_type, quality, duration,"
            " state, request_id, created_at, submitted_at, updated_at)"
            " VALUES (1, 1, 'private', 10, 10, 'f', 'u', 'image/jpeg', '540p', 5,"
            " 'processing', 'req-1', 1.0, 2.0, 3.0)"
        )
        db.execute("PRAGMA user_version=1")
    ledger = SqliteLedger(path)
    await ledger.open()
    try:
        [job] = await ledger.unfinished()
        assert job.request_id == "req-1"  # the paid job is still there to be polled
        assert job.language == "en"  # jobs from before languages speak English
        assert job.state is JobState.PROCESSING
        done = await ledger.transition(
            job.id, JobState.PROCESSING, JobState.COMPLETED, output_url="u", completed_at=52.0
        )
        assert done is not None
        assert await ledger.run_seconds("540p", 5) == RunSeconds(total=[50.0], processing=[])
    finally:
        await ledger.close()


async def test_a_job_submitting_before_the_seed_columns_is_upgraded_untraceable(tmp_path):
    path = tmp_path / "bot.sqlite3"
    with sqlite3.connect(path) as db:
        for migration in load_migrations()[:3]:
            db.executescript(";\n".join(migration.statements))
        db.execute(
            "INSERT INTO jobs (chat_id, user_id, chat_type, trigger_message_id,"
            " photo_message_id, file_id, file_unique_id, mime_type, quality, duration,"
            " state, created_at, generate_at, updated_at)"
            " VALUES (1, 1, 'private', 10, 10, 'f', 'u', 'image/jpeg', '540p', 5,"
            " 'submitting', 1.0, 2.0, 3.0)"
        )
        db.execute("PRAGMA user_version=3")
    ledger = SqliteLedger(path)
    await ledger.open()
    try:
        [job] = await ledger.unfinished()
        assert job.state is JobState.SUBMITTING
        # Nothing to look it up by: the tracker will call it uncertain, as before.
        assert (job.options.seed, job.image_url, job.submit_sent_at) == (None, None, None)
    finally:
        await ledger.close()


async def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "bot.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    ledger = SqliteLedger(path)
    with pytest.raises(LedgerUnusable, match="newer version"):
        await ledger.open()


async def test_a_failed_transaction_leaves_nothing_behind(tmp_path, monkeypatch):
    """A migration that breaks halfway is rolled back whole: the ledger stays at its version."""
    path = tmp_path / "bot.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(";\n".join(load_migrations()[0].statements))
        db.execute("ALTER TABLE jobs ADD COLUMN processing_at REAL")  # 0002 will collide
        db.execute("PRAGMA user_version=1")
    ledger = SqliteLedger(path)
    with pytest.raises(LedgerUnusable, match="duplicate column"):
        await ledger.open()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1


async def a_ledger_with_a_job(path) -> None:
    ledger = SqliteLedger(path)
    await ledger.open()
    await ledger.create_draft(new_job(), VideoOptions())
    await ledger.close()


def damage_a_page(path) -> None:
    """Overwrite the jobs table's root page (not the header) with garbage."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name='jobs'").fetchone()[0]
    with path.open("r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\xde\xad\xbe\xef" * (page_size // 4))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("garbage", "is not a bot ledger"),
        ("truncated", "is "),
        ("page", "is damaged"),
        ("newer", "newer version of the bot (schema 99"),
        ("folder", "is a folder"),
        ("parent_is_a_file", "cannot be used"),
    ],
)
async def test_a_ledger_that_cannot_be_used_says_why_in_words_and_is_left_as_it_was(
    tmp_path, damage, reason
):
    path = tmp_path / "bot.sqlite3"
    if damage == "garbage":
        path.write_bytes(b"these are somebody's holiday photos" * 100)
    elif damage == "truncated":
        await a_ledger_with_a_job(path)
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        path.write_bytes(path.read_bytes()[:1500])
    elif damage == "page":
        await a_ledger_with_a_job(path)
        damage_a_page(path)
    elif damage == "newer":
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA user_version=99")
    elif damage == "folder":
        path.mkdir()
    else:
        (tmp_path / "data").write_text("a file where the folder should be")
        path = tmp_path / "data" / "bot.sqlite3"
    before = path.read_bytes() if path.is_file() else None
    ledger = SqliteLedger(path, exclusive=True)
    with pytest.raises(LedgerUnusable) as caught:
        await ledger.open()
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)
    if before is not None:
        assert path.read_bytes() == before  # untouched: the operator may still rescue it
    await ledger.close()


async def test_check_proves_the_ledger_can_be_written(tmp_path):
    ledger = SqliteLedger(tmp_path / "bot.sqlite3")
    await ledger.open()
    try:
        await ledger.prove_writable()
        assert await ledger.unfinished() == []  # and nothing changed
    finally:
        await ledger.close()


async def test_a_bot_opening_the_ledger_lets_go_of_leases_a_dead_process_left(tmp_path):
    """The OS lock proves no other bot has the file: a killed bot's leases (which would
    hold its jobs for 30 s) are let go at once, so a restart resumes them at once."""
    path = tmp_path / "ledger.sqlite3"
    killed = SqliteLedger(path)
    await killed.open()
    draft, _ = await killed.create_draft(new_job(), VideoOptions())
    await killed.start(draft.id, 1, Limits(max_active_per_user=2, daily_per_user=0))
    assert await killed.claim_job(draft.id, Lease("killed-instance")) is not None
    await killed.close()  # as if SIGKILLed: nothing released

    checking = SqliteLedger(path)  # `python -m bot check` beside it takes no lock
    await checking.open()
    assert await checking.claim_job(draft.id, Lease("new-instance")) is None
    await checking.close()

    restarted = SqliteLedger(path, exclusive=True)
    await restarted.open()
    try:
        [resumed] = await restarted.claim_jobs(Lease("new-instance"), 10)
        assert resumed.id == draft.id
    finally:
        await restarted.close()


async def test_a_write_cancelled_while_its_transaction_begins_leaves_no_transaction_open(
    tmp_path,
):
    """SIGTERM cancels job tasks wherever they wait; one waiting for its BEGIN IMMEDIATE
    must not leave that transaction open on the connection: every later write would
    join it, never be committed, and be undone when the process exits."""
    path = tmp_path / "bot.sqlite3"
    ledger = SqliteLedger(path)
    await ledger.open()
    job, _ = await ledger.create_draft(new_job(), VideoOptions())
    assert await ledger.transition(job.id, JobState.DRAFT, JobState.PREPARING) is not None
    # An end without a video owes a refund: a transaction from its first statement.
    cancelled = asyncio.create_task(
        ledger.transition(job.id, JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    )
    await asyncio.sleep(0)  # it runs until it waits for its BEGIN (sent to the thread)
    assert not cancelled.done()
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    # A write after it (the delivery a shielded upload records at a stop) is committed.
    submitting = await asyncio.wait_for(  # it used to hang or vanish at the close
        ledger.transition(job.id, JobState.PREPARING, JobState.SUBMITTING), 10
    )
    assert submitting is not None
    assert not ledger.db.in_transaction
    await ledger.close()
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT state FROM jobs WHERE id=?", (job.id,)).fetchone()
    assert row == ("submitting",)


async def test_each_step_of_a_free_job_is_one_statement_without_begin_or_commit(tmp_path):
    """Every statement is a trip to the connection's thread, and under load each trip
    waits for the event loop; writes queue behind one lock, so a step that took five to
    twelve trips held up every other write (docs/benchmarks.md, the N = 1000 latency
    regression). The steps a free job takes through a busy bot are one statement each."""
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3", exclusive=True)
    await ledger.open()
    statements: list[str] = []
    await ledger.db.set_trace_callback(statements.append)
    await ledger.reads.set_trace_callback(statements.append)
    lease = Lease("this-instance")
    limits = Limits(max_active_per_user=2, daily_per_user=20)

    async def count(step):
        statements.clear()
        result = await step
        return result, [" ".join(sql.split()[:2]) for sql in statements]

    try:
        (draft, created), sqls = await count(ledger.create_draft(new_job(), VideoOptions()))
        assert created
        assert sqls == ["INSERT INTO"]
        (again, created), sqls = await count(ledger.create_draft(new_job(), VideoOptions()))
        assert (again.id, created) == (draft.id, False)  # a re-delivered photo: a read more
        assert sqls == ["INSERT INTO", "SELECT *"]
        result, sqls = await count(ledger.start(draft.id, 1, limits))
        assert result.job.state is JobState.PREPARING
        assert sqls == ["UPDATE jobs"]
        claimed, sqls = await count(ledger.claim_job(draft.id, lease))
        assert claimed is not None
        assert sqls == ["UPDATE jobs"]
        for source, target in (
            (JobState.PREPARING, JobState.SUBMITTING),
            (JobState.SUBMITTING, JobState.QUEUED),
            (JobState.QUEUED, JobState.PROCESSING),
            (JobState.PROCESSING, JobState.COMPLETED),
        ):
            moved, sqls = await count(ledger.transition(draft.id, source, target, lease=lease))
            assert moved is not None
            assert moved.state is target
            assert sqls == ["UPDATE jobs"]
        held, sqls = await count(ledger.hold_job(draft.id, JobState.COMPLETED, lease))
        assert held
        assert sqls == ["UPDATE jobs"]
        done, sqls = await count(
            ledger.transition(draft.id, JobState.COMPLETED, JobState.DELIVERED, lease=lease)
        )
        assert done is not None
        assert sqls == ["UPDATE jobs"]
        _, sqls = await count(ledger.mark_notified(draft.id, lease=lease))
        assert sqls == ["UPDATE jobs"]
    finally:
        await ledger.close()


async def test_updates_are_received_by_single_statements_that_go_together(tmp_path):
    """A getUpdates batch is stored all at once (bot.telegram.inbox): each receipt is a
    statement alone, no BEGIN/COMMIT, so the batch's receipts run back to back on the
    connection's thread, and no receipt stops the other writes (a transaction would
    wait for every statement in flight and hold up every new one)."""
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3", exclusive=True)
    await ledger.open()
    statements: list[str] = []
    await ledger.db.set_trace_callback(statements.append)
    lease = Lease("this-instance")
    try:
        claimed = await asyncio.gather(
            *(
                ledger.receive_update(100 + n, f'{{"update_id": {100 + n}}}', lease, 1e9)
                for n in range(5)
            )
        )
        assert claimed == [True] * 5
        assert [" ".join(sql.split()[:2]) for sql in statements] == ["DELETE FROM"] + [
            "INSERT INTO"
        ] * 5  # the first one prunes old claims too, once an hour
        statements.clear()
        assert not await ledger.receive_update(102, "{}", Lease("another"), 1e9 + 1)
        assert [" ".join(sql.split()[:2]) for sql in statements] == ["INSERT INTO"]
    finally:
        await ledger.close()


async def test_a_refused_start_and_a_refused_fenced_write_still_say_why(tmp_path):
    """The one-statement paths fall back to reading why nothing changed: a start over a
    limit is refused by name, and a write by an instance that lost its lease raises."""
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    try:
        one_at_a_time = Limits(max_active_per_user=1, daily_per_user=0)
        first, _ = await ledger.create_draft(new_job(1), VideoOptions())
        second, _ = await ledger.create_draft(new_job(2), VideoOptions())
        assert (await ledger.start(first.id, 1, one_at_a_time)).outcome is StartOutcome.STARTED
        refused = await ledger.start(second.id, 1, one_at_a_time)
        assert refused.outcome is StartOutcome.TOO_MANY_ACTIVE
        assert await ledger.get(second.id) == second  # still the draft it was
        assert await ledger.claim_job(first.id, Lease("other")) is not None
        with pytest.raises(LeaseLost):
            await ledger.transition(
                first.id, JobState.PREPARING, JobState.SUBMITTING, lease=Lease("this")
            )
        still = await ledger.get(first.id)
        assert still is not None
        assert still.state is JobState.PREPARING
    finally:
        await ledger.close()


async def test_single_writes_go_together_and_a_transaction_goes_alone():
    """Statements are queued to the connection's thread together; a transaction waits
    for those in flight, and holds back new ones until it is done."""
    gate = _WriteGate()
    order: list[str] = []
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def statement(name: str, until: asyncio.Event | None = None) -> None:
        async with gate.statement():
            order.append(f"{name} in")
            if until is not None:
                first_in.set()
                await until.wait()
            order.append(f"{name} out")

    async def transaction() -> None:
        async with gate.alone():
            order.append("tx in")
            await asyncio.sleep(0)  # a trip to the thread: statements must not slip in
            await asyncio.sleep(0)
            order.append("tx out")

    first = asyncio.create_task(statement("a", release_first))
    await first_in.wait()
    await statement("b")  # not held up by "a" still in flight
    assert order == ["a in", "b in", "b out"]
    tx = asyncio.create_task(transaction())
    await asyncio.sleep(0)
    late = asyncio.create_task(statement("c"))
    await asyncio.sleep(0)
    assert "tx in" not in order  # waits for "a"
    assert "c in" not in order  # and "c" waits behind the transaction
    release_first.set()
    await asyncio.gather(first, tx, late)
    assert order[3:] == ["a out", "tx in", "tx out", "c in", "c out"]


async def test_reads_go_to_their_own_connection_and_see_the_last_commit(tmp_path):
    """A button's answer reads the ledger first: on a connection of its own it does not
    queue behind the writes and their fsyncs on the writer's thread (issue 16), and it
    reads what was committed, never a transaction still under way. A transaction's own
    reads are on its connection: they see what it wrote. The reader cannot write."""
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3", exclusive=True)
    await ledger.open()
    try:
        assert ledger.reads is not ledger.db
        draft, _ = await ledger.create_draft(new_job(), VideoOptions())

        async def work(tx: Statements) -> tuple[str, str]:
            await tx.execute("UPDATE jobs SET quality='1080p' WHERE id=?", (draft.id,))
            mine = await first(tx, "SELECT quality FROM jobs WHERE id=?", (draft.id,))
            outside = await ledger.get(draft.id)
            assert mine is not None
            assert outside is not None
            return mine["quality"], outside.options.quality

        assert await ledger._transact(work) == ("1080p", draft.options.quality)
        committed = await ledger.get(draft.id)
        assert committed is not None
        assert committed.options.quality == "1080p"
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await ledger.reads.execute("UPDATE jobs SET quality='360p'")
    finally:
        await ledger.close()


async def test_a_close_with_reads_in_flight_ends_both_connections(tmp_path):
    """A stop closes the ledger while reads may be under way: each one already asked is
    answered, one asked after the close began finds the ledger closed, the close returns,
    and both connections' threads end (aiosqlite's are not daemons: one left running keeps
    a stopped bot's process alive). The next open reads what was written."""
    before = set(threading.enumerate())
    path = tmp_path / "ledger.sqlite3"
    ledger = SqliteLedger(path, exclusive=True)
    await ledger.open()
    draft, _ = await ledger.create_draft(new_job(), VideoOptions())
    reads = [asyncio.create_task(ledger.get(draft.id)) for _ in range(20)]
    await asyncio.sleep(0)  # each is on the reader's queue
    closing = asyncio.create_task(ledger.close())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="not open"):
        await ledger.get(draft.id)
    await closing
    assert [job and job.id for job in await asyncio.gather(*reads)] == [draft.id] * 20
    started = [thread for thread in threading.enumerate() if thread not in before]
    for thread in started:
        thread.join(timeout=5)
    assert [thread for thread in started if thread.is_alive()] == []
    again = SqliteLedger(path, exclusive=True)  # the lock was let go too
    await again.open()
    try:
        assert again.reads is not again.db
        reopened = await again.get(draft.id)
        assert reopened is not None
        assert reopened.state is JobState.DRAFT
    finally:
        await again.close()
