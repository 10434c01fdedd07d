"""PREPARING → SUBMITTING → QUEUED: ``_prepare_and_submit``, ``_submit_and_record`` and
``_submit_refused``, stepped by hand against the real Segmind client and a scripted API."""

from __future__ import annotations

import base64

import httpx
import pytest

from bot.core.alerts import OUTAGE_SECONDS, AlertKind
from bot.core.errors import ChatUnreachable, PhotoUnavailable, PhotoUnusable, SendFailed
from bot.core.jobs import Job, JobState, Reason
from bot.core.options import VideoOptions
from bot.core.ports import Progress
from bot.core.tracker import (
    HISTORY_LOOKUP_SECONDS,
    PREPARE_DEADLINE_SECONDS,
)
from tests.core.conftest import INTERVAL, Harness, run_until_settled
from tests.core.doubles import API_KEY, CDN_URL, RecordingMessenger, Reply, error

S = JobState


async def test_a_submit_queues_the_job_with_its_request_id(h: Harness):
    job = await h.new_job()
    delay = await h.step(job.id)

    assert delay == INTERVAL  # nothing learnt yet: poll every interval
    queued = await h.job(job.id)
    assert queued.state is S.QUEUED
    assert queued.request_id == "req-1"
    assert queued.submitted_at == h.clock.now
    assert h.moved(job.id) == [(S.PREPARING, S.SUBMITTING), (S.SUBMITTING, S.QUEUED)]
    assert [seen.route for seen in h.segmind.requests] == ["upload", "submit"]
    assert h.segmind.accepted == ["req-1"]
    # The photo is re-hosted, and the re-hosted URL (no Telegram token) is what is sent.
    upload, submit = h.segmind.requests
    photo = base64.b64encode(RecordingMessenger.PHOTO).decode()
    assert upload.json == {"data_urls": [f"data:image/jpeg;base64,{photo}"]}
    # The job's own seed, drawn and stored before the submit, is always sent.
    seed = queued.options.seed
    assert seed is not None
    assert 1 <= seed <= 999_999
    assert submit.json == {
        "image_url": f"{CDN_URL}/assets/upload-1.jpg",
        "quality": "540p",
        "duration": 5,
        "seed": seed,
    }
    assert submit.headers["x-api-key"] == API_KEY
    assert h.messenger.methods() == ["fetch_photo", "show_progress"]
    assert h.messenger.stages()[0] is Progress.QUEUED
    assert h.alerts.sent == []


async def test_the_submit_intent_is_recorded_before_the_post_leaves(h: Harness):
    job = await h.new_job()
    states_during_post: list[JobState] = []

    async def look(_body):
        states_during_post.append((await h.job(job.id)).state)

    h.segmind.on_submit = look
    await h.step(job.id)
    assert states_during_post == [S.SUBMITTING]
    assert (await h.job(job.id)).state is S.QUEUED


async def test_a_2xx_with_only_a_request_id_is_queued_not_uncertain(h: Harness):
    h.segmind.full_submit_answer = False
    job = await h.new_job()
    await h.step(job.id)
    queued = await h.job(job.id)
    assert queued.state is S.QUEUED
    assert queued.request_id == "req-1"
    assert h.segmind.count("submit") == 1


async def test_the_chosen_options_are_what_is_submitted(h: Harness):
    job = await h.new_job(VideoOptions(quality="720p", duration=8, style="clay", seed=4242))
    await h.step(job.id)
    assert h.segmind.seen("submit")[0].json == {
        "image_url": f"{CDN_URL}/assets/upload-1.jpg",
        "quality": "720p",
        "duration": 8,
        "seed": 4242,
        "style": "clay",
    }


async def test_options_segmind_does_not_accept_are_rejected_without_a_submit(h: Harness):
    job = await h.new_job(VideoOptions(quality="1080p", duration=8))
    assert await h.step(job.id) == 0.0
    rejected = await h.job(job.id)
    assert (rejected.state, rejected.reason) == (S.REJECTED, Reason.BAD_INPUT)
    assert h.segmind.count("submit") == 0


async def test_past_the_prepare_deadline_the_job_is_rejected_busy_without_a_submit(h: Harness):
    job = await h.new_job()
    h.clock.advance(PREPARE_DEADLINE_SECONDS + 1)
    assert await h.step(job.id) == 0.0
    rejected = await h.job(job.id)
    assert (rejected.state, rejected.reason) == (S.REJECTED, Reason.BUSY)
    assert h.segmind.requests == []
    assert h.messenger.calls == []


async def test_at_the_prepare_deadline_the_job_is_still_submitted(h: Harness):
    job = await h.new_job()
    h.clock.advance(PREPARE_DEADLINE_SECONDS)
    await h.step(job.id)
    assert (await h.job(job.id)).state is S.QUEUED
    assert h.segmind.accepted == ["req-1"]


@pytest.mark.parametrize(
    ("too_big", "reason"),
    [(True, Reason.PHOTO_TOO_BIG), (False, Reason.PHOTO_UNAVAILABLE)],
    ids=["too-big", "unavailable"],
)
async def test_a_photo_that_cannot_be_fetched_is_rejected(
    h: Harness, too_big: bool, reason: Reason
):
    job = await h.new_job()
    h.messenger.fail("fetch_photo", PhotoUnavailable("no file", too_big=too_big))
    assert await h.step(job.id) == 0.0
    rejected = await h.job(job.id)
    assert (rejected.state, rejected.reason) == (S.REJECTED, reason)
    assert h.segmind.requests == []
    # The next step tells the user, once.
    assert await h.step(job.id) is None
    assert h.messenger.methods() == ["fetch_photo", "send_outcome"]
    assert (await h.job(job.id)).notified_at == h.clock.now


async def test_a_photo_that_is_no_usable_image_is_rejected_without_a_submit(h: Harness):
    """A draft made before photos were checked on arrival (an SVG, a 1×1 px image) is
    found out when the job prepares it: nothing is uploaded or submitted, and a paid
    job's refund follows from REJECTED like any other."""
    job = await h.new_job()
    h.messenger.fail("fetch_photo", PhotoUnusable("too small"))
    assert await h.step(job.id) == 0.0
    rejected = await h.job(job.id)
    assert (rejected.state, rejected.reason) == (S.REJECTED, Reason.PHOTO_UNUSABLE)
    assert h.segmind.requests == []
    assert await h.step(job.id) is None
    assert h.messenger.methods() == ["fetch_photo", "send_outcome"]


async def test_an_unreachable_chat_while_fetching_ends_undeliverable_and_notified(h: Harness):
    job = await h.new_job()
    h.messenger.fail("fetch_photo", ChatUnreachable("bot blocked"))
    assert await h.step(job.id) is None
    ended = await h.job(job.id)
    assert (ended.state, ended.reason) == (S.UNDELIVERABLE, Reason.CHAT_GONE)
    assert ended.notified_at == h.clock.now
    assert h.segmind.requests == []
    assert await h.step(job.id) is None
    assert h.messenger.methods() == ["fetch_photo"]  # nothing more is sent there


async def test_a_send_failure_while_fetching_backs_off_past_retry_after(h: Harness):
    job = await h.new_job()
    h.messenger.fail("fetch_photo", SendFailed("flood", retry_after=30))
    delay = await h.step(job.id)
    assert delay is not None
    assert delay >= 30
    assert (await h.job(job.id)).state is S.PREPARING
    assert h.segmind.requests == []
    h.clock.advance(delay)
    await h.step(job.id)
    assert (await h.job(job.id)).state is S.QUEUED
    assert h.segmind.count("submit") == 1


@pytest.mark.parametrize(
    ("outcome", "reason", "alerts"),
    [
        (500, Reason.BUSY, []),
        (429, Reason.BUSY, []),
        (Reply(200, raw=b"<html>oops</html>"), Reason.BUSY, []),
        (401, Reason.SERVICE_UNAVAILABLE, [(AlertKind.KEY_REJECTED, False)]),
        (406, Reason.SERVICE_UNAVAILABLE, [(AlertKind.OUT_OF_CREDITS, False)]),
    ],
    ids=["500", "429", "non-json", "401", "406"],
)
async def test_a_refused_upload_rejects_the_job_without_a_submit(
    h: Harness, outcome, reason, alerts
):
    job = await h.new_job()
    h.segmind.fail("upload", outcome)
    assert await h.step(job.id) == 0.0
    rejected = await h.job(job.id)
    assert (rejected.state, rejected.reason) == (S.REJECTED, reason)
    assert h.moved(job.id) == [(S.PREPARING, S.REJECTED)]
    assert h.segmind.count("upload") == 1
    assert h.segmind.count("submit") == 0
    assert h.alerts.sent == alerts


async def test_a_submit_that_never_left_goes_back_to_preparing_and_is_sent_once(h: Harness):
    job = await h.new_job()
    h.segmind.fail("submit", httpx.ConnectError)
    delay = await h.step(job.id)
    assert delay is not None
    assert INTERVAL <= delay <= 2 * INTERVAL
    back = await h.job(job.id)
    assert back.state is S.PREPARING
    assert back.request_id is None
    assert h.moved(job.id) == [(S.PREPARING, S.SUBMITTING), (S.SUBMITTING, S.PREPARING)]
    assert h.segmind.accepted == []

    h.clock.advance(delay)
    await h.step(job.id)
    queued = await h.job(job.id)
    assert queued.state is S.QUEUED
    assert queued.request_id == "req-1"
    assert h.segmind.count("submit") == 2  # the refused connection, then the real one
    assert h.segmind.accepted == ["req-1"]
    assert h.messenger.stages()[0] is Progress.QUEUED


@pytest.mark.parametrize(
    "outcome",
    [httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.WriteError, 502, 504],
    ids=["read-timeout", "remote-protocol", "write-error", "502", "504"],
)
async def test_a_submit_that_may_have_arrived_but_is_not_in_the_history_ends_uncertain(
    h: Harness, outcome
):
    job = await h.new_job()
    h.segmind.fail("submit", outcome)  # lost before Segmind made a job of it
    delays = await run_until_settled(h, job.id, until=S.UNCERTAIN)
    uncertain = await h.job(job.id)
    assert (uncertain.state, uncertain.reason) == (S.UNCERTAIN, Reason.CONNECTION_LOST)
    # Looked up in the history, with backoff, for the whole window from the submit.
    assert uncertain.submit_sent_at is not None
    assert uncertain.finished_at == pytest.approx(
        uncertain.submit_sent_at + HISTORY_LOOKUP_SECONDS, abs=0.01
    )
    assert sum(delays) == pytest.approx(HISTORY_LOOKUP_SECONDS, abs=0.01)
    assert h.segmind.count("history") >= 5
    assert h.alerts.sent == [(AlertKind.SUBMIT_LOST, False)]

    for _ in range(5):  # whatever happens later, no second submit
        assert await run_until_settled(h, job.id) == []
    assert h.segmind.count("submit") == 1
    assert h.segmind.count("upload") == 1
    assert [c.method for c in h.messenger.calls] == ["fetch_photo", "send_outcome"]
    assert h.messenger.calls_to("send_outcome")[0].args == (Reason.CONNECTION_LOST,)


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, raw=b"<html>Gateway</html>"),
        Reply(200, body=["req-9"]),
        Reply(200, body={"status": "QUEUED"}),
        Reply(201, body={"request_id": ""}),
    ],
    ids=["not-json", "not-an-object", "no-request-id", "empty-request-id"],
)
async def test_an_unreadable_2xx_to_a_submit_is_found_in_the_history(h: Harness, reply: Reply):
    job = await h.new_job()
    h.segmind.accept_then(reply)  # accepted and charged, the answer unreadable
    delay = await h.step(job.id)
    assert delay is not None
    assert (await h.job(job.id)).state is S.SUBMITTING
    h.clock.advance(delay)
    await h.step(job.id)
    queued = await h.job(job.id)
    assert (queued.state, queued.request_id) == (S.QUEUED, "req-1")
    assert h.segmind.count("submit") == 1


async def test_a_400_to_the_submit_is_bad_input(h: Harness):
    job = await h.new_job()
    h.segmind.fail("submit", 400)
    assert await h.step(job.id) == 0.0
    rejected = await h.job(job.id)
    assert (rejected.state, rejected.reason) == (S.REJECTED, Reason.BAD_INPUT)
    assert h.alerts.sent == []
    await h.step(job.id)
    assert h.messenger.calls_to("send_outcome")[0].args == (Reason.BAD_INPUT,)


@pytest.mark.parametrize("code", [401, 403])
async def test_a_rejected_key_rejects_the_job_and_alerts_until_a_submit_works(
    h: Harness, code: int
):
    job = await h.new_job()
    h.segmind.fail("submit", code)
    await h.step(job.id)
    rejected = await h.job(job.id)
    assert (rejected.state, rejected.reason) == (S.REJECTED, Reason.SERVICE_UNAVAILABLE)
    assert h.alerts.sent == [(AlertKind.KEY_REJECTED, False)]

    second = await h.new_job()  # same trouble again soon: no second alert
    h.segmind.fail("submit", code)
    await h.step(second.id)
    assert h.alerts.sent == [(AlertKind.KEY_REJECTED, False)]

    third = await h.new_job()  # the key works again: one line says so
    await h.step(third.id)
    assert (await h.job(third.id)).state is S.QUEUED
    assert h.alerts.sent == [(AlertKind.KEY_REJECTED, False), (AlertKind.KEY_REJECTED, True)]


async def test_out_of_credits_rejects_the_job_and_alerts(h: Harness):
    job = await h.new_job()
    h.segmind.fail("submit", 406)
    await h.step(job.id)
    rejected = await h.job(job.id)
    assert (rejected.state, rejected.reason) == (S.REJECTED, Reason.SERVICE_UNAVAILABLE)
    assert h.alerts.sent == [(AlertKind.OUT_OF_CREDITS, False)]
    assert h.segmind.accepted == []


@pytest.mark.parametrize(("code", "outage"), [(429, False), (500, True), (503, True)])
async def test_refused_submits_are_busy_and_only_server_errors_count_as_an_outage(
    h: Harness, code: int, outage: bool
):
    first = await h.new_job()
    h.segmind.fail("submit", error(code, retry_after=5))
    await h.step(first.id)
    h.clock.advance(OUTAGE_SECONDS)
    second = await h.new_job()
    h.segmind.fail("submit", error(code, retry_after=5))
    await h.step(second.id)

    for job_id in (first.id, second.id):
        rejected = await h.job(job_id)
        assert (rejected.state, rejected.reason) == (S.REJECTED, Reason.BUSY)
    assert h.alerts.sent == ([(AlertKind.SEGMIND_DOWN, False)] if outage else [])
    assert h.segmind.accepted == []


async def test_a_job_found_submitting_without_a_seed_is_uncertain_with_no_submit(h: Harness):
    # Sent before the ledger kept seeds and image URLs: nothing to look it up by.
    job = await h.submitting_job()
    assert await h.step(job.id) == 0.0
    uncertain = await h.job(job.id)
    assert (uncertain.state, uncertain.reason) == (S.UNCERTAIN, Reason.CONNECTION_LOST)
    assert await run_until_settled(h, job.id) == []
    assert h.segmind.requests == []
    assert h.messenger.methods() == ["send_outcome"]
    assert h.alerts.sent == [(AlertKind.SUBMIT_LOST, False)]


async def test_telegram_url_mode_sends_the_photo_link_and_never_uploads(h: Harness):
    h.configure(image_url_mode="telegram")
    job = await h.new_job()
    await h.step(job.id)
    assert (await h.job(job.id)).state is S.QUEUED
    assert h.segmind.count("upload") == 0
    assert h.messenger.methods() == ["photo_link", "show_progress"]
    link = f"https://telegram.test/file/botTOKEN/photos/{job.file_id}.jpg"
    assert h.segmind.seen("submit")[0].json["image_url"] == link


async def test_a_failed_queued_status_line_does_not_undo_the_submit(h: Harness):
    job = await h.new_job()
    h.messenger.fail("show_progress", SendFailed("flood", retry_after=3))
    assert await h.step(job.id) == INTERVAL
    assert (await h.job(job.id)).state is S.QUEUED
    assert h.segmind.accepted == ["req-1"]


async def test_the_submitted_hook_hears_each_recorded_submit_once(h: Harness):
    """The metrics hook: told once per recorded request id, with Generate's time on it."""
    heard: list[Job] = []
    h.tracker = h.new_tracker(on_submitted=heard.append)
    job = await h.new_job()
    h.clock.now += 1.5
    await h.step(job.id)  # upload, submit, QUEUED
    await h.step(job.id)  # a poll: no new submit
    [queued] = heard
    assert (queued.id, queued.state, queued.request_id) == (job.id, S.QUEUED, "req-1")
    assert queued.submitted_at is not None
    assert queued.generate_at is not None
    assert queued.submitted_at - queued.generate_at == pytest.approx(1.5)
