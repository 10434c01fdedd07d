"""The Ledger contract: what every backend promises the core, run against each backend.

Typed against :class:`bot.core.ports.Ledger` only; backend-specific checks (files,
pragmas, migrations) live beside each backend's own tests.
"""

import asyncio
from typing import Any

import pytest

from bot.core.errors import InvalidTransition
from bot.core.jobs import TERMINAL_STATES, JobState, Reason
from bot.core.leases import Lease, LeaseLost
from bot.core.limits import Limits, StartOutcome, utc_day_start
from bot.core.options import VideoOptions
from bot.core.payments import PaymentOutcome, RefundState
from bot.core.ports import Ledger, RunSeconds
from tests.builders import new_job
from tests.storage.conftest import Clock

LIMITS = Limits(max_active_per_user=2, daily_per_user=3)


async def started(ledger: Ledger, message_id: int = 10, user_id: int = 1) -> int:
    """A job past Generate (PREPARING); its id."""
    job, _ = await ledger.create_draft(new_job(message_id, user_id, user_id), VideoOptions())
    result = await ledger.start(job.id, user_id, LIMITS)
    assert result.outcome is StartOutcome.STARTED
    return job.id


async def test_redelivered_photo_finds_the_same_draft(ledger):
    first, created = await ledger.create_draft(new_job(), VideoOptions())
    again, created_again = await ledger.create_draft(new_job(), VideoOptions())
    assert created
    assert not created_again
    assert first.id == again.id
    assert first.state is JobState.DRAFT


async def test_start_moves_a_draft_once(ledger):
    job, _ = await ledger.create_draft(new_job(), VideoOptions())
    results = await asyncio.gather(*(ledger.start(job.id, 1, LIMITS) for _ in range(5)))
    outcomes = sorted(r.outcome.value for r in results)
    assert outcomes.count(StartOutcome.STARTED.value) == 1
    assert outcomes.count(StartOutcome.ALREADY_STARTED.value) == 4
    started = await ledger.get(job.id)
    assert started is not None
    assert started.state is JobState.PREPARING
    assert started.generate_at is not None


async def test_only_the_owner_may_start(ledger):
    job, _ = await ledger.create_draft(new_job(), VideoOptions())
    result = await ledger.start(job.id, 2, LIMITS)
    assert result.outcome is StartOutcome.NOT_OWNER
    assert (await ledger.get(job.id)).state is JobState.DRAFT


async def test_unknown_job_cannot_start(ledger):
    assert (await ledger.start(12345, 1, LIMITS)).outcome is StartOutcome.NOT_FOUND


async def test_active_and_daily_limits_are_counted_from_the_ledger(ledger):
    ids = []
    for message_id in range(1, 6):
        job, _ = await ledger.create_draft(new_job(message_id), VideoOptions())
        ids.append(job.id)
    assert (await ledger.start(ids[0], 1, LIMITS)).outcome is StartOutcome.STARTED
    assert (await ledger.start(ids[1], 1, LIMITS)).outcome is StartOutcome.STARTED
    assert (await ledger.start(ids[2], 1, LIMITS)).outcome is StartOutcome.TOO_MANY_ACTIVE
    # One finishes: a slot frees up, but the day's count keeps growing.
    await ledger.transition(ids[0], JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    await ledger.transition(ids[1], JobState.PREPARING, JobState.SUBMITTING)
    await ledger.transition(ids[1], JobState.SUBMITTING, JobState.UNCERTAIN)
    assert (await ledger.start(ids[2], 1, LIMITS)).outcome is StartOutcome.STARTED
    await ledger.transition(ids[2], JobState.PREPARING, JobState.SUBMITTING)
    await ledger.transition(ids[2], JobState.SUBMITTING, JobState.UNCERTAIN)
    # Refused submits cost nothing and do not count: 2 of 3 used today.
    assert (await ledger.start(ids[3], 1, LIMITS)).outcome is StartOutcome.STARTED
    await ledger.transition(ids[3], JobState.PREPARING, JobState.SUBMITTING)
    await ledger.transition(ids[3], JobState.SUBMITTING, JobState.UNCERTAIN)
    assert (await ledger.start(ids[4], 1, LIMITS)).outcome is StartOutcome.DAILY_LIMIT
    # Another user is not affected.
    other, _ = await ledger.create_draft(new_job(99, user_id=2, chat_id=2), VideoOptions())
    assert (await ledger.start(other.id, 2, LIMITS)).outcome is StartOutcome.STARTED


async def test_daily_limit_zero_means_no_cap(ledger):
    limits = Limits(max_active_per_user=100, daily_per_user=0)
    for message_id in range(1, 8):
        job, _ = await ledger.create_draft(new_job(message_id), VideoOptions())
        assert (await ledger.start(job.id, 1, limits)).outcome is StartOutcome.STARTED


async def test_transition_is_compare_and_set(ledger):
    job, _ = await ledger.create_draft(new_job(), VideoOptions())
    await ledger.start(job.id, 1, LIMITS)
    moved = await ledger.transition(job.id, JobState.PREPARING, JobState.SUBMITTING)
    assert moved is not None
    assert moved.state is JobState.SUBMITTING
    assert await ledger.transition(job.id, JobState.PREPARING, JobState.SUBMITTING) is None
    with pytest.raises(InvalidTransition):
        await ledger.transition(job.id, JobState.SUBMITTING, JobState.DELIVERED)
    queued = await ledger.transition(
        job.id, JobState.SUBMITTING, JobState.QUEUED, request_id="r-1", submitted_at=5.0
    )
    assert queued is not None
    assert queued.request_id == "r-1"
    assert queued.submitted_at == 5.0


async def test_submitting_stores_the_seed_the_image_url_and_when_it_left(ledger):
    job_id = await started(ledger)
    fresh = await ledger.get(job_id)
    assert fresh is not None
    assert (fresh.options.seed, fresh.image_url, fresh.submit_sent_at) == (None, None, None)
    moved = await ledger.transition(
        job_id,
        JobState.PREPARING,
        JobState.SUBMITTING,
        seed=4242,
        image_url="https://cdn.test/assets/a.jpg",
        submit_sent_at=123.5,
    )
    assert moved is not None
    # What names the request in the history is there for whoever reads the job next:
    # the tracker after a restart finds it among the unfinished jobs.
    [found] = await ledger.unfinished()
    for job in (moved, found):
        assert job.options == VideoOptions(seed=4242)
        assert job.image_url == "https://cdn.test/assets/a.jpg"
        assert job.submit_sent_at == 123.5
    queued = await ledger.transition(
        job_id, JobState.SUBMITTING, JobState.QUEUED, request_id="r-1", submitted_at=123.5
    )
    assert queued is not None
    assert (queued.options.seed, queued.image_url) == (4242, "https://cdn.test/assets/a.jpg")


async def test_a_retry_does_not_inherit_the_seed_or_what_was_sent(ledger):
    job_id = await started(ledger)
    await ledger.transition(
        job_id,
        JobState.PREPARING,
        JobState.SUBMITTING,
        seed=4242,
        image_url="https://cdn.test/assets/a.jpg",
        submit_sent_at=1.0,
    )
    await ledger.transition(job_id, JobState.SUBMITTING, JobState.UNCERTAIN)
    retry = (await ledger.start_retry(job_id, 1, LIMITS, None)).job
    assert retry is not None
    assert retry.options == VideoOptions()  # same options, a seed of its own to come
    assert (retry.image_url, retry.submit_sent_at) == (None, None)


async def test_unfinished_includes_unnotified_outcomes(ledger):
    job, _ = await ledger.create_draft(new_job(), VideoOptions())
    assert await ledger.unfinished() == []  # a draft costs nothing and needs no tracking
    await ledger.start(job.id, 1, LIMITS)
    assert [j.id for j in await ledger.unfinished()] == [job.id]
    await ledger.transition(job.id, JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    unfinished = await ledger.unfinished()
    assert [j.id for j in unfinished] == [job.id]
    assert unfinished[0].reason is Reason.BUSY
    await ledger.mark_notified(job.id)
    assert await ledger.unfinished() == []


async def test_retry_starts_one_new_job_however_often_pressed(ledger):
    job, _ = await ledger.create_draft(new_job(), VideoOptions(quality="720p", duration=8))
    await ledger.start(job.id, 1, LIMITS)
    await ledger.transition(job.id, JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    results = await asyncio.gather(
        *(ledger.start_retry(job.id, 1, LIMITS, status_message_id=77) for _ in range(3))
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


async def test_retry_of_an_unfinished_job_is_refused(ledger):
    job, _ = await ledger.create_draft(new_job(), VideoOptions())
    assert (await ledger.start_retry(job.id, 1, LIMITS, None)).outcome is StartOutcome.NOT_FOUND


async def test_retry_follows_only_an_outcome_that_offered_try_again(ledger):
    """A forged or stale "Try again" on a running, delivered or failed job makes nothing."""
    running = await started(ledger, 1)
    delivered = await started(ledger, 2)
    for source, target in (
        (JobState.PREPARING, JobState.SUBMITTING),
        (JobState.SUBMITTING, JobState.QUEUED),
        (JobState.QUEUED, JobState.COMPLETED),
        (JobState.COMPLETED, JobState.DELIVERED),
    ):
        await ledger.transition(delivered, source, target)
    await ledger.mark_notified(delivered)
    failed = await started(ledger, 3, user_id=2)
    await ledger.transition(failed, JobState.PREPARING, JobState.SUBMITTING)
    await ledger.transition(failed, JobState.SUBMITTING, JobState.QUEUED)
    await ledger.transition(failed, JobState.QUEUED, JobState.FAILED, reason=Reason.CONTENT)
    for job_id, user_id in ((running, 1), (delivered, 1), (failed, 2)):
        result = await ledger.start_retry(job_id, user_id, LIMITS, None, price=50)
        assert (result.outcome, result.job) == (StartOutcome.NOT_FOUND, None)
    assert sorted(job.id for job in await ledger.recent(10)) == [running, delivered, failed]


async def test_options_change_only_while_draft(ledger):
    job, _ = await ledger.create_draft(new_job(), VideoOptions())
    changed = await ledger.update_options(job.id, VideoOptions(quality="720p"))
    assert changed is not None
    assert changed.options.quality == "720p"
    await ledger.start(job.id, 1, LIMITS)
    assert await ledger.update_options(job.id, VideoOptions(quality="360p")) is None


async def test_run_seconds_learns_from_completed_jobs(ledger):
    job, _ = await ledger.create_draft(new_job(), VideoOptions())
    await ledger.start(job.id, 1, LIMITS)
    await ledger.transition(job.id, JobState.PREPARING, JobState.SUBMITTING)
    await ledger.transition(
        job.id, JobState.SUBMITTING, JobState.QUEUED, request_id="r", submitted_at=100.0
    )
    await ledger.transition(job.id, JobState.QUEUED, JobState.PROCESSING, processing_at=110.0)
    await ledger.transition(
        job.id, JobState.PROCESSING, JobState.COMPLETED, output_url="u", completed_at=151.0
    )
    assert await ledger.run_seconds("540p", 5) == RunSeconds(total=[51.0], processing=[41.0])
    assert await ledger.run_seconds("720p", 5) == RunSeconds(total=[], processing=[])


async def test_concurrent_redeliveries_of_one_photo_make_one_draft(ledger):
    results = await asyncio.gather(
        *(ledger.create_draft(new_job(), VideoOptions()) for _ in range(5))
    )
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1


async def test_a_draft_keeps_every_photo_field_and_the_clock(ledger, clock: Clock):
    photo = new_job(42, user_id=7, chat_id=-100123)
    job, _ = await ledger.create_draft(photo, VideoOptions(quality="720p", style="clay"))
    assert (job.chat_id, job.user_id, job.trigger_message_id) == (-100123, 7, 42)
    assert (job.file_id, job.file_unique_id, job.file_size) == ("file-42", "u-42", 1000)
    assert job.options == VideoOptions(quality="720p", style="clay")
    assert job.created_at == clock.now
    assert job.state is JobState.DRAFT
    assert job.poll_count == 0
    await ledger.set_keyboard_message(job.id, 555)
    assert (await ledger.get(job.id)).keyboard_message_id == 555


async def test_get_of_an_unknown_job_is_none(ledger):
    assert await ledger.get(987654) is None


async def test_entering_a_terminal_state_stamps_finished_at(ledger, clock: Clock):
    job_id = await started(ledger)
    assert (await ledger.get(job_id)).finished_at is None
    clock.now += 30
    ended = await ledger.transition(
        job_id, JobState.PREPARING, JobState.REJECTED, reason=Reason.BAD_INPUT
    )
    assert ended is not None
    assert ended.finished_at == clock.now
    assert ended.reason is Reason.BAD_INPUT
    assert ended.state in TERMINAL_STATES


async def test_transition_refuses_columns_it_may_not_set(ledger):
    job_id = await started(ledger)
    with pytest.raises(ValueError, match="not settable"):
        await ledger.transition(job_id, JobState.PREPARING, JobState.SUBMITTING, user_id=2)
    assert (await ledger.get(job_id)).state is JobState.PREPARING


async def test_only_one_of_two_racing_transitions_wins(ledger):
    job_id = await started(ledger)
    await ledger.transition(job_id, JobState.PREPARING, JobState.SUBMITTING)
    queued, uncertain = await asyncio.gather(
        ledger.transition(job_id, JobState.SUBMITTING, JobState.QUEUED, request_id="r-9"),
        ledger.transition(job_id, JobState.SUBMITTING, JobState.UNCERTAIN),
    )
    assert (queued is None) != (uncertain is None)


async def test_a_request_id_belongs_to_one_job(ledger):
    first, second = await started(ledger, 1), await started(ledger, 2, user_id=2)
    for job_id in (first, second):
        await ledger.transition(job_id, JobState.PREPARING, JobState.SUBMITTING)
    await ledger.transition(first, JobState.SUBMITTING, JobState.QUEUED, request_id="same")
    with pytest.raises(Exception, match="(?i)unique"):
        await ledger.transition(second, JobState.SUBMITTING, JobState.QUEUED, request_id="same")


async def test_mark_notified_keeps_the_first_time(ledger, clock: Clock):
    job_id = await started(ledger)
    await ledger.transition(job_id, JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    await ledger.mark_notified(job_id, now=clock.now)
    first = (await ledger.get(job_id)).notified_at
    await ledger.mark_notified(job_id, now=clock.now + 60)
    assert (await ledger.get(job_id)).notified_at == first == clock.now


async def test_refused_submits_do_not_count_against_the_day(ledger, clock: Clock):
    day = utc_day_start(clock.now)
    job_id = await started(ledger)
    assert await ledger.count_started_since(1, day) == 1
    await ledger.transition(job_id, JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    assert await ledger.count_started_since(1, day) == 0
    assert await ledger.count_started_since(1, clock.now + 1) == 0


async def test_retry_is_refused_to_others_and_over_the_limits(ledger):
    job_id = await started(ledger)
    await ledger.transition(job_id, JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    assert (await ledger.start_retry(job_id, 2, LIMITS, None)).outcome is StartOutcome.NOT_OWNER
    busy = await started(ledger, 2), await started(ledger, 3)
    assert busy[0] != busy[1]
    refused = await ledger.start_retry(job_id, 1, LIMITS, None)
    assert refused.outcome is StartOutcome.TOO_MANY_ACTIVE
    assert len(await ledger.unfinished()) == 3  # the two active ones and the untold outcome


async def test_operator_reads_newest_started_first_and_count_the_active(ledger, clock: Clock):
    ids = []
    for message_id in (1, 2, 3):
        clock.now += 10
        ids.append(await started(ledger, message_id, user_id=message_id))
    draft, _ = await ledger.create_draft(new_job(9, user_id=9, chat_id=9), VideoOptions())
    assert [job.id for job in await ledger.recent(2)] == [ids[2], ids[1]]
    assert draft.id not in [job.id for job in await ledger.recent(10)]
    assert await ledger.count_active() == 3
    await ledger.transition(ids[0], JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    assert await ledger.count_active() == 2
    assert [job.id for job in await ledger.started_since(clock.now - 15)] == ids[1:]


async def test_alert_state_is_remembered(ledger):
    assert await ledger.alert_state("key_rejected") is None
    await ledger.save_alert_state("key_rejected", True, 100.0)
    assert await ledger.alert_state("key_rejected") == (True, 100.0)
    await ledger.save_alert_state("key_rejected", False, 200.0)
    assert await ledger.alert_state("key_rejected") == (False, 200.0)
    assert await ledger.alert_state("out_of_credits") is None


async def test_what_was_committed_survives_a_reopen(open_ledger):
    ledger = await open_ledger()
    job_id = await started(ledger)
    await ledger.transition(job_id, JobState.PREPARING, JobState.SUBMITTING)
    await ledger.close()
    reopened = await open_ledger()
    [job] = await reopened.unfinished()
    assert (job.id, job.state) == (job_id, JobState.SUBMITTING)


async def test_racing_starts_of_two_photos_keep_the_active_limit(ledger):
    """Each start counts the user's active jobs and then moves its own draft: two at once
    must not both see room for one more (SQLite: one writer; PostgreSQL: SERIALIZABLE)."""
    one_at_a_time = Limits(max_active_per_user=1, daily_per_user=0)
    drafts = [
        (await ledger.create_draft(new_job(message_id), VideoOptions()))[0]
        for message_id in range(1, 7)
    ]
    results = await asyncio.gather(*(ledger.start(d.id, 1, one_at_a_time) for d in drafts))
    outcomes = [result.outcome for result in results]
    assert outcomes.count(StartOutcome.STARTED) == 1
    assert outcomes.count(StartOutcome.TOO_MANY_ACTIVE) == 5
    assert await ledger.count_active() == 1


async def test_jobs_are_counted_by_state(ledger):
    assert await ledger.jobs_by_state() == {}
    first = await started(ledger, 1, user_id=1)
    await started(ledger, 2, user_id=2)
    await ledger.create_draft(new_job(3, user_id=3, chat_id=3), VideoOptions())
    await ledger.transition(first, JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    counts = await ledger.jobs_by_state()
    assert {state: n for state, n in counts.items() if n} == {
        JobState.DRAFT: 1,
        JobState.PREPARING: 1,
        JobState.REJECTED: 1,
    }


# -- after the video: Again, /history, Share ----------------------------------------------

NO_CAP = Limits(max_active_per_user=100, daily_per_user=0)


async def delivered(
    ledger: Ledger, message_id: int = 10, user_id: int = 1, chat_id: int | None = None
) -> int:
    """A job run to its video (a Telegram file id recorded); its id."""
    chat = user_id if chat_id is None else chat_id
    job, _ = await ledger.create_draft(new_job(message_id, user_id, chat), VideoOptions())
    assert (await ledger.start(job.id, user_id, NO_CAP)).outcome is StartOutcome.STARTED
    steps: list[tuple[JobState, JobState, dict[str, Any]]] = [
        (JobState.PREPARING, JobState.SUBMITTING, {"seed": 5, "image_url": f"https://i/{job.id}"}),
        (JobState.SUBMITTING, JobState.QUEUED, {"request_id": f"req-{job.id}"}),
        (JobState.QUEUED, JobState.COMPLETED, {"output_url": "https://v"}),
        (JobState.COMPLETED, JobState.DELIVERED, {"video_file_id": f"video-{job.id}"}),
    ]
    for source, target, fields in steps:
        assert await ledger.transition(job.id, source, target, **fields) is not None
    return job.id


async def test_again_starts_one_job_from_a_delivered_one_however_often_pressed(ledger):
    old_id = await delivered(ledger)
    results = await asyncio.gather(*(ledger.start_again(old_id, 1, LIMITS) for _ in range(5)))
    outcomes = sorted(result.outcome.value for result in results)
    assert outcomes.count(StartOutcome.STARTED.value) == 1
    assert outcomes.count(StartOutcome.ALREADY_STARTED.value) == 4
    new_ids = {result.job.id for result in results if result.job is not None}
    assert len(new_ids) == 1
    old, new = await ledger.get(old_id), await ledger.get(new_ids.pop())
    assert new.state is JobState.PREPARING
    assert new.retry_of == old_id
    assert new.generate_at is not None
    # The same photo, options and upload (a candidate), a seed of its own at its submit.
    assert (new.chat_id, new.photo_message_id, new.file_id) == (
        old.chat_id,
        old.photo_message_id,
        old.file_id,
    )
    assert (new.options.quality, new.options.duration) == (
        old.options.quality,
        old.options.duration,
    )
    assert new.options.seed is None
    assert new.image_url == old.image_url
    assert (new.request_id, new.video_file_id, new.keyboard_message_id) == (None, None, None)


async def test_again_only_follows_a_delivered_video_of_ones_own(ledger):
    unknown = await ledger.start_again(999, 1, LIMITS)
    assert unknown.outcome is StartOutcome.NOT_FOUND
    running_id = await started(ledger, message_id=5)
    assert (await ledger.start_again(running_id, 1, LIMITS)).outcome is StartOutcome.NOT_FOUND
    old_id = await delivered(ledger)
    assert (await ledger.start_again(old_id, 2, LIMITS)).outcome is StartOutcome.NOT_OWNER


async def test_again_is_priced_and_limited_like_any_job(ledger):
    old_id = await delivered(ledger)
    await started(ledger, message_id=20)
    await started(ledger, message_id=21)
    refused = await ledger.start_again(old_id, 1, LIMITS)
    assert refused.outcome is StartOutcome.TOO_MANY_ACTIVE

    other_id = await delivered(ledger, message_id=30, user_id=7)
    priced = await ledger.start_again(other_id, 7, LIMITS, price=50, free_videos=1)
    assert priced.outcome is StartOutcome.INVOICE
    assert priced.job.state is JobState.AWAITING_PAYMENT
    assert (priced.job.price_stars, priced.job.invoice_no) == (50, 1)
    assert priced.job.generate_at is None  # started only when paid
    again = await ledger.start_again(other_id, 7, LIMITS, price=50, free_videos=1)
    assert again.outcome is StartOutcome.AWAITING_PAYMENT
    assert again.job.id == priced.job.id


async def test_history_pages_a_users_started_jobs_newest_first(ledger):
    ids = [await delivered(ledger, message_id=100 + n) for n in range(12)]
    await ledger.create_draft(new_job(500), VideoOptions())  # never started: not history
    await delivered(ledger, message_id=600, user_id=2)  # someone else's

    first = await ledger.history(1, 10)
    assert [job.id for job in first.jobs] == ids[::-1][:10]
    assert (first.has_older, first.has_newer) == (True, False)

    older = await ledger.history(1, 10, before_id=first.jobs[-1].id)
    assert [job.id for job in older.jobs] == ids[1::-1]
    assert (older.has_older, older.has_newer) == (False, True)

    newer = await ledger.history(1, 10, after_id=older.jobs[0].id)
    assert [job.id for job in newer.jobs] == [job.id for job in first.jobs]
    assert (newer.has_older, newer.has_newer) == (True, False)

    empty = await ledger.history(3, 10)
    assert (empty.jobs, empty.has_older, empty.has_newer) == ([], False, False)


async def test_history_of_one_chat_lists_only_the_jobs_made_there(ledger):
    private = await delivered(ledger, message_id=1)
    in_group = await delivered(ledger, message_id=2, chat_id=-100)
    everywhere = await ledger.history(1, 10)
    assert [job.id for job in everywhere.jobs] == [in_group, private]
    group = await ledger.history(1, 10, chat_id=-100)
    assert [job.id for job in group.jobs] == [in_group]
    assert (group.has_older, group.has_newer) == (False, False)


async def test_delivered_videos_are_the_users_own_with_a_file_id_newest_first(ledger):
    first = await delivered(ledger, message_id=1)
    await started(ledger, message_id=2)  # not delivered
    second = await delivered(ledger, message_id=3)
    await delivered(ledger, message_id=4, user_id=2)
    link_only, _ = await ledger.create_draft(new_job(5), VideoOptions())
    await ledger.start(link_only.id, 1, LIMITS)
    link_steps: list[tuple[JobState, JobState, dict[str, Any]]] = [
        (JobState.PREPARING, JobState.SUBMITTING, {}),
        (JobState.SUBMITTING, JobState.QUEUED, {"request_id": "req-link"}),
        (JobState.QUEUED, JobState.COMPLETED, {"output_url": "https://v"}),
        (JobState.COMPLETED, JobState.DELIVERED, {"video_file_id": None}),  # sent as a link
    ]
    for source, target, fields in link_steps:
        await ledger.transition(link_only.id, source, target, **fields)

    videos = await ledger.delivered_videos(1)
    assert [job.id for job in videos] == [second, first]
    assert [job.video_file_id for job in videos] == [f"video-{second}", f"video-{first}"]
    assert [job.id for job in await ledger.delivered_videos(1, limit=1)] == [second]
    assert await ledger.delivered_videos(3) == []


# -- leases: which instance drives a job (bot.core.leases) ------------------------------

A = Lease("instance-A")
B = Lease("instance-B")


async def test_a_claimed_job_is_not_claimed_by_another_until_its_lease_lapses(ledger, clock):
    job_id = await started(ledger)
    claimed = await ledger.claim_job(job_id, A)
    assert claimed is not None
    assert (claimed.id, claimed.state) == (job_id, JobState.PREPARING)
    assert await ledger.claim_job(job_id, B) is None
    assert await ledger.claim_jobs(B, 10) == []
    assert await ledger.claim_job(job_id, A) is not None  # its holder may claim again
    clock.now += A.seconds  # lapses only after lease_until has passed
    assert await ledger.claim_job(job_id, B) is None
    clock.now += 0.5
    taken = await ledger.claim_job(job_id, B)
    assert taken is not None
    assert await ledger.claim_job(job_id, A) is None


async def test_only_unfinished_jobs_are_claimed(ledger):
    draft, _ = await ledger.create_draft(new_job(1), VideoOptions())
    told = await started(ledger, message_id=2)
    await ledger.transition(told, JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    untold = await started(ledger, message_id=3)
    await ledger.transition(untold, JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    await ledger.mark_notified(told)
    assert await ledger.claim_job(draft.id, A) is None
    assert await ledger.claim_job(told, A) is None
    assert await ledger.claim_job(12345, A) is None
    assert [job.id for job in await ledger.claim_jobs(A, 10)] == [untold]


async def test_claim_jobs_takes_a_bounded_batch_oldest_first_of_those_nobody_holds(ledger, clock):
    ids = [await started(ledger, message_id=m, user_id=m) for m in range(1, 6)]
    await ledger.claim_job(ids[0], A)
    first = await ledger.claim_jobs(B, 2)
    assert [job.id for job in first] == ids[1:3]
    assert [job.id for job in await ledger.claim_jobs(B, 10)] == ids[3:]
    assert await ledger.claim_jobs(A, 10) == []  # all held
    clock.now += A.seconds + 1  # every lease lapsed: all free again
    assert [job.id for job in await ledger.claim_jobs(A, 10)] == ids


async def test_concurrent_claims_never_share_a_job(open_ledger):
    """Two instances (two connections to one ledger) claiming at once split the jobs."""
    first = await open_ledger()
    second = await open_ledger()
    ids = {await started(first, message_id=m, user_id=m) for m in range(1, 41)}
    batches = await asyncio.gather(
        *(
            ledger.claim_jobs(lease, 7)
            for _ in range(4)
            for ledger, lease in ((first, A), (second, B))
        )
    )
    claimed = [job.id for batch in batches for job in batch]
    assert len(claimed) == len(set(claimed))  # nobody got a job twice
    assert set(claimed) <= ids
    rest = await first.claim_jobs(A, 100)
    assert set(claimed) | {job.id for job in rest} == ids


async def test_renewal_extends_its_owners_leases_until_another_instance_takes_them(ledger, clock):
    mine = [await started(ledger, message_id=m, user_id=m) for m in (1, 2)]
    theirs = await started(ledger, message_id=3, user_id=3)
    for job_id in mine:
        await ledger.claim_job(job_id, A)
    await ledger.claim_job(theirs, B)
    clock.now += 20
    assert await ledger.renew_leases(A) == mine
    clock.now += 20  # A renewed 20 s ago; B claimed 40 s ago: B's lapsed
    assert [job.id for job in await ledger.claim_jobs(Lease("instance-C"), 10)] == [theirs]
    assert await ledger.renew_leases(B) == []  # lapsed and taken: not renewed
    clock.now += A.seconds + 1
    assert await ledger.renew_leases(A) == mine  # lapsed, but nobody took them: A's still
    clock.now += A.seconds + 1
    assert {job.id for job in await ledger.claim_jobs(B, 10)} == {*mine, theirs}
    assert await ledger.renew_leases(A) == []  # taken: not A's any more


async def test_a_fenced_transition_needs_the_lease_and_keeps_it_alive(ledger, clock):
    job_id = await started(ledger)
    with pytest.raises(LeaseLost):  # nobody claimed it: nobody may record a submit
        await ledger.transition(job_id, JobState.PREPARING, JobState.SUBMITTING, lease=A, seed=7)
    await ledger.claim_job(job_id, A)
    with pytest.raises(LeaseLost):
        await ledger.transition(job_id, JobState.PREPARING, JobState.SUBMITTING, lease=B, seed=7)
    assert (await ledger.get(job_id)).state is JobState.PREPARING  # nothing written
    clock.now += 20
    moved = await ledger.transition(
        job_id, JobState.PREPARING, JobState.SUBMITTING, lease=A, seed=7
    )
    assert moved is not None
    assert moved.options.seed == 7
    clock.now += 20  # 40 s after the claim, 20 after the fenced write: still A's
    assert await ledger.claim_job(job_id, B) is None
    # Not in that state any more, while the lease is held: None, as without a lease.
    assert (
        await ledger.transition(job_id, JobState.PREPARING, JobState.SUBMITTING, lease=A) is None
    )
    clock.now += A.seconds + 1
    with pytest.raises(LeaseLost):  # lapsed: refused even though nobody took it yet
        await ledger.transition(
            job_id, JobState.SUBMITTING, JobState.QUEUED, lease=A, request_id="req-1"
        )
    assert (await ledger.get(job_id)).request_id is None


async def test_a_paid_job_ended_without_its_lease_owes_nothing_yet(ledger, clock):
    """Making a refund due is part of ending the job: fenced with it."""
    from tests.storage.test_payments_contract import invoiced, paid

    job = await invoiced(ledger)
    outcome, _, started_job = await ledger.record_payment(paid(job))
    assert outcome is PaymentOutcome.STARTED
    await ledger.claim_job(job.id, A)
    with pytest.raises(LeaseLost):
        await ledger.transition(
            job.id, JobState.PREPARING, JobState.REJECTED, lease=B, reason=Reason.BUSY
        )
    assert await ledger.refunds_to_work(1e12) == []
    ended = await ledger.transition(
        job.id, JobState.PREPARING, JobState.REJECTED, lease=A, reason=Reason.BUSY
    )
    assert ended is not None
    [due] = await ledger.refunds_to_work(1e12)
    assert due.charge_id == "ch-1"


async def test_the_end_of_a_job_lets_its_lease_go(ledger, clock):
    delivered_id = await started(ledger, message_id=1)
    told_id = await started(ledger, message_id=2)
    for job_id in (delivered_id, told_id):
        await ledger.claim_job(job_id, A)
    for source, target, fields in [
        (JobState.PREPARING, JobState.SUBMITTING, {}),
        (JobState.SUBMITTING, JobState.QUEUED, {"request_id": "req-1"}),
        (JobState.QUEUED, JobState.COMPLETED, {"output_url": "https://v"}),
        (JobState.COMPLETED, JobState.DELIVERED, {"notified_at": clock.now}),
    ]:
        assert await ledger.transition(delivered_id, source, target, lease=A, **fields)
    await ledger.transition(
        told_id, JobState.PREPARING, JobState.REJECTED, lease=A, reason=Reason.BUSY
    )
    with pytest.raises(LeaseLost):
        await ledger.mark_notified(told_id, lease=B)
    assert (await ledger.get(told_id)).notified_at is None
    await ledger.mark_notified(told_id, lease=A)
    assert (await ledger.get(told_id)).notified_at is not None
    await ledger.mark_notified(told_id, lease=A)  # told already: nothing to do, no error
    assert await ledger.renew_leases(A) == []


async def test_hold_job_is_true_only_for_the_holder_in_the_state_it_expects(ledger, clock):
    job_id = await started(ledger)
    assert not await ledger.hold_job(job_id, JobState.PREPARING, A)  # not claimed
    await ledger.claim_job(job_id, A)
    assert await ledger.hold_job(job_id, JobState.PREPARING, A)
    assert not await ledger.hold_job(job_id, JobState.COMPLETED, A)
    assert not await ledger.hold_job(job_id, JobState.PREPARING, B)
    clock.now += 25
    assert await ledger.hold_job(job_id, JobState.PREPARING, A)  # and extends it
    clock.now += 25
    assert await ledger.claim_job(job_id, B) is None
    clock.now += A.seconds + 1
    assert not await ledger.hold_job(job_id, JobState.PREPARING, A)


async def test_released_leases_are_claimed_at_once(ledger):
    ids = [await started(ledger, message_id=m, user_id=m) for m in (1, 2)]
    await ledger.claim_jobs(A, 10)
    other = await started(ledger, message_id=3, user_id=3)
    await ledger.claim_job(other, B)
    await ledger.release_leases(A.owner)
    assert [job.id for job in await ledger.claim_jobs(Lease("instance-C"), 10)] == ids
    assert await ledger.claim_job(other, A) is None  # B's was not released


async def test_a_due_refund_is_claimed_by_one_instance_and_fenced_on_its_claim(ledger, clock):
    from tests.storage.test_payments_contract import invoiced, paid

    job = await invoiced(ledger)
    await ledger.record_payment(paid(job, "ch-1"))
    await ledger.record_payment(paid(job, "ch-2"))  # paid twice: owed back at once
    [claimed] = await ledger.claim_refunds(A, clock.now)
    assert (claimed.charge_id, claimed.refund) == ("ch-2", RefundState.DUE)
    assert await ledger.claim_refunds(B, clock.now) == []
    assert [p.charge_id for p in await ledger.claim_refunds(A, clock.now)] == ["ch-2"]
    with pytest.raises(LeaseLost):
        await ledger.refund_confirmed("ch-2", lease=B)
    assert (await ledger.payment("ch-2")).refund is RefundState.DUE
    clock.now += A.seconds + 1  # A paused past its claim: B takes the refund over
    [taken] = await ledger.claim_refunds(B, clock.now)
    assert taken.charge_id == "ch-2"
    with pytest.raises(LeaseLost):
        await ledger.refund_confirmed("ch-2", lease=A)
    await ledger.refund_confirmed("ch-2", lease=B)
    assert await ledger.claim_refunds(A, clock.now) == []  # B still tells the payer
    await ledger.refund_told("ch-2", lease=B)  # told: the claim is let go
    assert await ledger.claim_refunds(A, 1e12) == []
    assert (await ledger.payment("ch-2")).refund_told_at is not None


async def test_a_failed_refund_attempt_lets_its_claim_go(ledger, clock):
    from tests.storage.test_payments_contract import invoiced, paid

    job = await invoiced(ledger)
    await ledger.record_payment(paid(job, "ch-1"))
    await ledger.record_payment(paid(job, "ch-2"))
    await ledger.claim_refunds(A, clock.now)
    await ledger.refund_failed("ch-2", clock.now + 5, lease=A)
    [retry] = await ledger.claim_refunds(B, clock.now + 5)  # no lapse needed
    assert (retry.charge_id, retry.refund_attempts) == ("ch-2", 1)
    await ledger.release_refunds(B.owner)
    assert [p.charge_id for p in await ledger.claim_refunds(A, clock.now + 5)] == ["ch-2"]
