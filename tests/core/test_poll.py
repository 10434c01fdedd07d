"""QUEUED / PROCESSING: ``Tracker._poll`` stepped by hand against the scripted status API."""

from __future__ import annotations

import httpx
import pytest

from bot.core.alerts import OUTAGE_SECONDS, AlertKind
from bot.core.errors import LedgerWriteFailed
from bot.core.jobs import JobState, Reason
from bot.core.ports import Progress
from bot.core.schedule import MAX_BACKOFF_SECONDS
from bot.core.tracker import TrackerConfig
from tests.core.conftest import INTERVAL, Harness, run_until_settled
from tests.core.doubles import Reply, error

S = JobState
DEADLINE = TrackerConfig().deadline_seconds


async def test_processing_is_recorded_and_shown(h: Harness):
    job, request = await h.queued_job("PROCESSING")
    h.clock.advance(7)
    assert await h.step(job.id) == INTERVAL
    processing = await h.job(job.id)
    assert processing.state is S.PROCESSING
    assert await h.column(job.id, "processing_at") == h.clock.now
    assert h.messenger.methods() == ["show_progress"]
    assert h.messenger.stages() == [Progress.PROCESSING]
    assert request.status_polls == 1
    assert h.segmind.count("result") == 0

    # Still processing at the next poll: no second transition, no second status edit.
    h.clock.advance(INTERVAL)
    assert await h.step(job.id) == INTERVAL
    assert h.moved(job.id) == [(S.QUEUED, S.PROCESSING)]
    assert h.messenger.methods() == ["show_progress"]


async def test_still_queued_changes_nothing(h: Harness):
    job, request = await h.queued_job("QUEUED")
    assert await h.step(job.id) == INTERVAL
    assert (await h.job(job.id)).state is S.QUEUED
    assert h.moved(job.id) == []
    # This tracker had not shown the job's status yet (it came from the ledger): once.
    assert h.messenger.stages() == [Progress.QUEUED]
    assert request.status_polls == 1


@pytest.mark.parametrize("source", ["queued", "processing"])
async def test_completed_between_two_polls_is_recorded_and_delivered_in_the_same_step(
    h: Harness, source: str
):
    if source == "queued":
        job, request = await h.queued_job("COMPLETED")
    else:
        job, request = await h.processing_job("COMPLETED")
    h.clock.advance(50)
    assert await h.step(job.id) is None
    delivered = await h.job(job.id)
    assert delivered.state is S.DELIVERED
    assert delivered.output_url == request.video_url
    assert delivered.completed_at == h.clock.now
    assert delivered.video_file_id == f"video-file-{job.id}"
    assert delivered.notified_at == h.clock.now
    assert delivered.poll_count == 1
    assert h.moved(job.id) == [(job.state, S.COMPLETED), (S.COMPLETED, S.DELIVERED)]
    assert [seen.route for seen in h.segmind.requests] == ["status", "result", "video"]
    assert h.messenger.videos == [request.video]


@pytest.mark.parametrize(
    "reply",
    [
        None,  # the real API: HTTP 422 with {"status": "FAILED", "error": ...}
        Reply(422, body={"error": "Content blocked"}),
        Reply(422, body={"detail": "unprocessable"}),  # no FAILED in it: JobFailed
        Reply(200, body={"status": "FAILED", "error": "NSFW"}),
    ],
    ids=["422-failed-body", "422-error-only", "422-other", "200-failed"],
)
async def test_failed_at_segmind_ends_failed_content_and_is_told(h: Harness, reply):
    job, _ = await h.processing_job("FAILED")
    if reply is not None:
        h.segmind.fail("status", reply)
    assert await h.step(job.id) == 0.0
    failed = await h.job(job.id)
    assert (failed.state, failed.reason) == (S.FAILED, Reason.CONTENT)
    assert failed.poll_count == 1
    assert await h.step(job.id) is None
    assert h.messenger.methods() == ["send_outcome"]
    assert h.messenger.calls[0].args == (Reason.CONTENT,)


@pytest.mark.parametrize("route", ["status", "result"])
async def test_an_unknown_request_ends_expired(h: Harness, route: str):
    job, _ = await h.queued_job("COMPLETED")
    h.segmind.fail(route, 404)
    assert await h.step(job.id) == 0.0
    expired = await h.job(job.id)
    assert (expired.state, expired.reason) == (S.EXPIRED, Reason.RESULT_EXPIRED)
    assert h.segmind.count("video") == 0


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (401, AlertKind.KEY_REJECTED),
        (403, AlertKind.KEY_REJECTED),
        (406, AlertKind.OUT_OF_CREDITS),
    ],
)
async def test_operator_trouble_while_polling_alerts_once_and_keeps_polling(
    h: Harness, code: int, kind: AlertKind
):
    job, request = await h.queued_job("PROCESSING")
    h.segmind.fail("status", code, code, code)
    delays = []
    for _ in range(3):
        delay = await h.step(job.id)
        assert delay is not None
        assert delay >= INTERVAL
        assert (await h.job(job.id)).state is S.QUEUED  # the job is paid: keep it
        delays.append(delay)
        h.clock.advance(delay)
    assert h.alerts.sent == [(kind, False)]
    assert delays[2] <= MAX_BACKOFF_SECONDS
    # The key works again: polling goes on where it was, and the operators hear it is over
    # (no new submit is needed to clear the alert).
    await h.step(job.id)
    assert (await h.job(job.id)).state is S.PROCESSING
    assert request.status_polls == 1  # the three refused polls never reached a job
    assert h.alerts.sent == [(kind, False), (kind, True)]


async def test_a_rate_limited_poll_waits_at_least_retry_after(h: Harness):
    job, _ = await h.queued_job()
    h.segmind.fail("status", error(429, retry_after=45))
    delay = await h.step(job.id)
    assert delay is not None
    assert delay >= 45
    assert (await h.job(job.id)).state is S.QUEUED
    assert h.moved(job.id) == []


@pytest.mark.parametrize(
    "outcome",
    [500, 502, 503, 504, httpx.ConnectError, httpx.ReadTimeout],
    ids=["500", "502", "503", "504", "connect-error", "read-timeout"],
)
async def test_a_failed_poll_backs_off_and_the_job_stays(h: Harness, outcome):
    job, _ = await h.queued_job()
    h.segmind.fail("status", outcome, outcome, outcome, outcome, outcome, outcome)
    delays = []
    for _ in range(6):  # stepped sooner than the backoff says
        delays.append(await h.step(job.id))
    assert all(d is not None and INTERVAL <= d <= MAX_BACKOFF_SECONDS for d in delays)
    assert delays[-1] != INTERVAL  # jittered and growing, not a plain interval
    assert (await h.job(job.id)).state is S.QUEUED
    assert h.alerts.sent == []  # a fraction of a second has passed: no outage yet


async def test_an_outage_alerts_once_after_outage_seconds_and_clears_on_the_next_answer(
    h: Harness,
):
    job, _ = await h.queued_job()
    h.segmind.fail("status", *([500] * 30))
    first_failure = h.clock.now
    while h.clock.now - first_failure < OUTAGE_SECONDS:
        assert h.alerts.sent == []
        delay = await h.step(job.id)
        assert delay is not None
        h.clock.advance(delay)
    # The first failure at or past OUTAGE_SECONDS raises it …
    await h.step(job.id)
    assert h.alerts.sent == [(AlertKind.SEGMIND_DOWN, False)]
    # … and more failures inside the quiet period do not repeat it.
    for _ in range(3):
        delay = await h.step(job.id)
        assert delay is not None
        h.clock.advance(delay)
    assert h.alerts.sent == [(AlertKind.SEGMIND_DOWN, False)]
    assert (await h.job(job.id)).state is S.QUEUED

    h.segmind.script["status"].clear()
    assert await h.step(job.id) == INTERVAL  # a good answer: back to the schedule
    assert h.alerts.sent == [(AlertKind.SEGMIND_DOWN, False), (AlertKind.SEGMIND_DOWN, True)]
    await h.step(job.id)
    assert len(h.alerts.sent) == 2


async def test_rate_limited_polls_are_not_an_outage(h: Harness):
    job, _ = await h.queued_job()
    h.segmind.fail("status", *[error(429, retry_after=30)] * 20)
    start = h.clock.now
    while h.clock.now - start <= OUTAGE_SECONDS + 60:
        delay = await h.step(job.id)
        assert delay is not None
        assert delay >= 30
        h.clock.advance(delay)
    assert h.alerts.sent == []


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, raw=b"<html>maintenance</html>"),
        Reply(200, body={"status": "WARMING_UP"}),
        Reply(200, body=["QUEUED"]),
    ],
    ids=["not-json", "unknown-status", "not-an-object"],
)
async def test_an_unreadable_status_backs_off(h: Harness, reply: Reply):
    job, _ = await h.queued_job()
    h.segmind.fail("status", reply)
    delay = await h.step(job.id)
    assert delay is not None
    assert delay >= INTERVAL
    assert (await h.job(job.id)).state is S.QUEUED
    assert h.alerts.sent == []
    h.clock.advance(delay)
    assert await h.step(job.id) == INTERVAL  # the next readable answer: on schedule


@pytest.mark.parametrize("state", ["queued", "processing"])
async def test_past_the_deadline_the_job_times_out_without_a_poll(h: Harness, state: str):
    if state == "queued":
        job, _ = await h.queued_job()
    else:
        job, _ = await h.processing_job()
    h.clock.advance(DEADLINE + 1)
    assert await h.step(job.id) == 0.0
    ended = await h.job(job.id)
    assert (ended.state, ended.reason) == (S.TIMED_OUT, Reason.DEADLINE)
    assert h.segmind.requests == []
    assert await h.step(job.id) is None
    assert h.messenger.calls_to("send_outcome")[0].args == (Reason.DEADLINE,)


async def test_a_completed_answer_without_a_video_url_is_polled_again_not_lost(h: Harness):
    job, request = await h.processing_job("COMPLETED", output=None)
    delay = await h.step(job.id)
    assert delay is not None
    assert delay >= INTERVAL
    assert (await h.job(job.id)).state is S.PROCESSING
    assert h.messenger.calls == []
    assert h.segmind.count("video") == 0

    request.output = {"video": request.video_url}  # the URL shows up at the next look
    h.clock.advance(delay)
    assert await h.step(job.id) is None
    assert (await h.job(job.id)).state is S.DELIVERED
    assert h.messenger.videos == [request.video]


async def test_polls_are_counted_into_the_row_when_the_job_completes(h: Harness):
    job, request = await h.queued_job()
    request.timeline = ["QUEUED", "QUEUED", "PROCESSING", "PROCESSING", "COMPLETED"]
    await run_until_settled(h, job.id)
    done = await h.job(job.id)
    assert done.state is S.DELIVERED
    assert done.poll_count == 5 == request.status_polls


async def test_a_transition_the_ledger_cannot_write_leaves_the_job_to_be_stepped_again(
    h: Harness,
):
    job, request = await h.queued_job("COMPLETED")
    await h.ledger.db.execute("PRAGMA query_only=ON")  # every write fails: read-only
    with pytest.raises(LedgerWriteFailed):
        await h.step(job.id)
    assert (await h.job(job.id)).state is S.QUEUED  # nothing half-written
    assert not h.ledger.db.in_transaction

    await h.ledger.db.execute("PRAGMA query_only=OFF")
    h.clock.advance(INTERVAL)
    assert await h.step(job.id) is None
    assert (await h.job(job.id)).state is S.DELIVERED
