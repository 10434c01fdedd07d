import asyncio
import sqlite3

import pytest

from bot.core.errors import InvalidTransition
from bot.core.jobs import JobState, NewJob, Reason, can_transition
from bot.core.limits import Limits, StartOutcome, utc_day_start
from bot.core.options import VideoOptions
from bot.core.ports import RunSeconds
from bot.storage import SCHEMA_VERSION
from bot.storage import SqliteLedger as JobStore
from bot.storage.migrations import load_migrations

LIMITS = Limits(max_active_per_user=2, daily_per_user=3)


def new_job(message_id: int = 10, user_id: int = 1, chat_id: int = 1) -> NewJob:
    return NewJob(
        chat_id=chat_id,
        user_id=user_id,
        chat_type="private",
        trigger_message_id=message_id,
        photo_message_id=message_id,
        thread_id=None,
        file_id=f"file-{message_id}",
        file_unique_id=f"u-{message_id}",
        file_size=1000,
        mime_type="image/jpeg",
    )


@pytest.fixture
async def store(tmp_path):
    store = JobStore(tmp_path / "sub" / "ledger.sqlite3")
    await store.open()
    yield store
    await store.close()


async def test_open_creates_folder_and_migrates(tmp_path):
    path = tmp_path / "a" / "b" / "bot.sqlite3"
    store = JobStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = JobStore(path)  # reopening an up-to-date ledger is a no-op
    await again.open()
    await again.close()


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
    store = JobStore(path)
    await store.open()
    try:
        [job] = await store.unfinished()
        assert job.request_id == "req-1"  # the paid job is still there to be polled
        assert job.state is JobState.PROCESSING
        done = await store.transition(
            job.id, JobState.PROCESSING, JobState.COMPLETED, output_url="u", completed_at=52.0
        )
        assert done is not None
        assert await store.run_seconds("540p", 5) == RunSeconds(total=[50.0], processing=[])
    finally:
        await store.close()


async def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "bot.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    store = JobStore(path)
    with pytest.raises(RuntimeError, match="newer version"):
        await store.open()


async def test_redelivered_photo_finds_the_same_draft(store):
    first, created = await store.create_draft(new_job(), VideoOptions())
    again, created_again = await store.create_draft(new_job(), VideoOptions())
    assert created
    assert not created_again
    assert first.id == again.id
    assert first.state is JobState.DRAFT


async def test_start_moves_a_draft_once(store):
    job, _ = await store.create_draft(new_job(), VideoOptions())
    results = await asyncio.gather(*(store.start(job.id, 1, LIMITS) for _ in range(5)))
    outcomes = sorted(r.outcome.value for r in results)
    assert outcomes.count(StartOutcome.STARTED.value) == 1
    assert outcomes.count(StartOutcome.ALREADY_STARTED.value) == 4
    started = await store.get(job.id)
    assert started is not None
    assert started.state is JobState.PREPARING
    assert started.generate_at is not None


async def test_only_the_owner_may_start(store):
    job, _ = await store.create_draft(new_job(), VideoOptions())
    result = await store.start(job.id, 2, LIMITS)
    assert result.outcome is StartOutcome.NOT_OWNER
    assert (await store.get(job.id)).state is JobState.DRAFT


async def test_unknown_job_cannot_start(store):
    assert (await store.start(12345, 1, LIMITS)).outcome is StartOutcome.NOT_FOUND


async def test_active_and_daily_limits_are_counted_from_the_ledger(store):
    ids = []
    for message_id in range(1, 6):
        job, _ = await store.create_draft(new_job(message_id), VideoOptions())
        ids.append(job.id)
    assert (await store.start(ids[0], 1, LIMITS)).outcome is StartOutcome.STARTED
    assert (await store.start(ids[1], 1, LIMITS)).outcome is StartOutcome.STARTED
    assert (await store.start(ids[2], 1, LIMITS)).outcome is StartOutcome.TOO_MANY_ACTIVE
    # One finishes: a slot frees up, but the day's count keeps growing.
    await store.transition(ids[0], JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    await store.transition(ids[1], JobState.PREPARING, JobState.SUBMITTING)
    await store.transition(ids[1], JobState.SUBMITTING, JobState.UNCERTAIN)
    assert (await store.start(ids[2], 1, LIMITS)).outcome is StartOutcome.STARTED
    await store.transition(ids[2], JobState.PREPARING, JobState.SUBMITTING)
    await store.transition(ids[2], JobState.SUBMITTING, JobState.UNCERTAIN)
    # Refused submits cost nothing and do not count: 2 of 3 used today.
    assert (await store.start(ids[3], 1, LIMITS)).outcome is StartOutcome.STARTED
    await store.transition(ids[3], JobState.PREPARING, JobState.SUBMITTING)
    await store.transition(ids[3], JobState.SUBMITTING, JobState.UNCERTAIN)
    assert (await store.start(ids[4], 1, LIMITS)).outcome is StartOutcome.DAILY_LIMIT
    # Another user is not affected.
    other, _ = await store.create_draft(new_job(99, user_id=2, chat_id=2), VideoOptions())
    assert (await store.start(other.id, 2, LIMITS)).outcome is StartOutcome.STARTED


async def test_daily_limit_zero_means_no_cap(store):
    limits = Limits(max_active_per_user=100, daily_per_user=0)
    for message_id in range(1, 8):
        job, _ = await store.create_draft(new_job(message_id), VideoOptions())
        assert (await store.start(job.id, 1, limits)).outcome is StartOutcome.STARTED


def test_utc_day_start():
    assert utc_day_start(86_400 * 3 + 5) == 86_400 * 3


async def test_transition_is_compare_and_set(store):
    job, _ = await store.create_draft(new_job(), VideoOptions())
    await store.start(job.id, 1, LIMITS)
    moved = await store.transition(job.id, JobState.PREPARING, JobState.SUBMITTING)
    assert moved is not None
    assert moved.state is JobState.SUBMITTING
    assert await store.transition(job.id, JobState.PREPARING, JobState.SUBMITTING) is None
    with pytest.raises(InvalidTransition):
        await store.transition(job.id, JobState.SUBMITTING, JobState.DELIVERED)
    queued = await store.transition(
        job.id, JobState.SUBMITTING, JobState.QUEUED, request_id="r-1", submitted_at=5.0
    )
    assert queued is not None
    assert queued.request_id == "r-1"
    assert queued.submitted_at == 5.0


def test_state_machine_has_no_way_out_of_terminal_states():
    for state in JobState:
        for target in JobState:
            if state in (JobState.DELIVERED, JobState.FAILED, JobState.UNCERTAIN):
                assert not can_transition(state, target)
    assert can_transition(JobState.QUEUED, JobState.UNDELIVERABLE)
    assert not can_transition(JobState.DRAFT, JobState.UNDELIVERABLE)


async def test_unfinished_includes_unnotified_outcomes(store):
    job, _ = await store.create_draft(new_job(), VideoOptions())
    assert await store.unfinished() == []  # a draft costs nothing and needs no tracking
    await store.start(job.id, 1, LIMITS)
    assert [j.id for j in await store.unfinished()] == [job.id]
    await store.transition(job.id, JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    unfinished = await store.unfinished()
    assert [j.id for j in unfinished] == [job.id]
    assert unfinished[0].reason is Reason.BUSY
    await store.mark_notified(job.id)
    assert await store.unfinished() == []


async def test_retry_starts_one_new_job_however_often_pressed(store):
    job, _ = await store.create_draft(new_job(), VideoOptions(quality="720p", duration=8))
    await store.start(job.id, 1, LIMITS)
    await store.transition(job.id, JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    results = await asyncio.gather(
        *(store.start_retry(job.id, 1, LIMITS, status_message_id=77) for _ in range(3))
    )
    started = [r for r in results if r.outcome is StartOutcome.STARTED]
    assert len(started) == 1
    retry = started[0].job
    assert retry is not None
    assert retry.id != job.id
    assert retry.retry_of == job.id
    assert retry.options == VideoOptions(quality="720p", duration=8)
    assert retry.keyboard_message_id == 77
    assert retry.state is JobState.PREPARING


async def test_retry_of_an_unfinished_job_is_refused(store):
    job, _ = await store.create_draft(new_job(), VideoOptions())
    assert (await store.start_retry(job.id, 1, LIMITS, None)).outcome is StartOutcome.NOT_FOUND


async def test_options_change_only_while_draft(store):
    job, _ = await store.create_draft(new_job(), VideoOptions())
    changed = await store.update_options(job.id, VideoOptions(quality="720p"))
    assert changed is not None
    assert changed.options.quality == "720p"
    await store.start(job.id, 1, LIMITS)
    assert await store.update_options(job.id, VideoOptions(quality="360p")) is None


async def test_run_seconds_learns_from_completed_jobs(store):
    job, _ = await store.create_draft(new_job(), VideoOptions())
    await store.start(job.id, 1, LIMITS)
    await store.transition(job.id, JobState.PREPARING, JobState.SUBMITTING)
    await store.transition(
        job.id, JobState.SUBMITTING, JobState.QUEUED, request_id="r", submitted_at=100.0
    )
    await store.transition(job.id, JobState.QUEUED, JobState.PROCESSING, processing_at=110.0)
    await store.transition(
        job.id, JobState.PROCESSING, JobState.COMPLETED, output_url="u", completed_at=151.0
    )
    assert await store.run_seconds("540p", 5) == RunSeconds(total=[51.0], processing=[41.0])
    assert await store.run_seconds("720p", 5) == RunSeconds(total=[], processing=[])
