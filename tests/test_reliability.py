"""Issue 4: every Generate leads to one submit and one outcome, whatever either service does.

In-process tests of the real Application against the fakes; the crash tests on a real
``python -m bot`` subprocess are in ``test_crash.py``.
"""

from __future__ import annotations

import pytest

from tests.conftest import ADMIN_ID, ledger, running, settled, wait_until
from tests.test_private_flow import (
    assert_plain,
    button_data,
    reply_target,
    send_photo_get_keyboard,
)

USER = 601
OTHER = 602


async def generate(telegram, user=USER, **photo_kwargs):
    """Send a photo and press Generate; returns the photo message."""
    photo, keyboard = await send_photo_get_keyboard(telegram, user, user, **photo_kwargs)
    telegram.press_button(user, user, keyboard["message_id"], button_data(keyboard, "Generate"))
    return photo


async def outcome_message(telegram, user, fragment):
    calls = await telegram.wait_for_call(
        "sendMessage", chat_id=user, where=lambda c: fragment in c.params["text"]
    )
    assert len(calls) == 1, [c.params["text"] for c in calls]
    assert_plain(calls[0].params["text"])
    return calls[0]


async def test_segmind_failed_gets_a_plain_message_and_the_next_job_works(
    telegram, segmind, bot, database
):
    telegram.private_chat(USER)
    segmind.fail_next_job("Content blocked by safety filter (RAI): nudity 0.93")
    await generate(telegram)
    call = await outcome_message(telegram, USER, "try another photo")
    assert "RAI" not in call.params["text"]
    assert "reply_markup" not in call.params  # another photo, not the same one again
    await wait_until(lambda: ledger(database)[0]["notified_at"], what="notified")
    assert ledger(database)[0]["state"] == "failed"
    await generate(telegram)
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    assert len(segmind.submits) == 2


async def test_an_expired_request_is_told_and_no_longer_polled(telegram, segmind, bot, database):
    telegram.private_chat(USER)
    segmind.processing_seconds = 30
    await generate(telegram)
    await wait_until(lambda: segmind.jobs and next(iter(segmind.jobs.values())).status_polls >= 1)
    (job,) = segmind.jobs.values()
    segmind.expire(job.request_id)
    await outcome_message(telegram, USER, "expired")
    polls = job.status_polls
    await settled(bot, telegram)  # a job still polling would never settle
    assert job.status_polls == polls
    assert ledger(database)[0]["state"] == "expired"


@pytest.mark.parametrize("status", [429, 500, 502, 504])
async def test_polling_rides_out_rate_limits_and_server_errors(
    telegram, segmind, bot, database, status
):
    telegram.private_chat(USER)
    segmind.processing_seconds = 0.3
    segmind.fail_next_status(status, retry_after=1 if status == 429 else None, times=3)
    await generate(telegram)
    await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=15)
    await wait_until(lambda: ledger(database)[0]["state"] == "delivered", what="delivered")
    assert len(segmind.submits) == 1
    assert telegram.calls_of("sendMessage", chat_id=ADMIN_ID) == []  # not an outage yet


async def test_no_poll_inside_a_retry_after_window(telegram, segmind, bot):
    telegram.private_chat(USER)
    segmind.processing_seconds = 0.2
    # One second: ten times the backoff the bot would choose on its own (at most 0.1 s).
    segmind.fail_next_status(429, retry_after=1)
    await generate(telegram)
    await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=15)
    polls = [
        (at, status)
        for at, method, path, status in segmind.requests_log
        if method == "GET" and path.startswith("/v2/requests/")
    ]
    assert polls[0][1] == 429
    assert polls[1][0] - polls[0][0] >= 1.0


async def test_a_job_past_its_deadline_is_given_up_and_the_user_told(
    telegram, segmind, make_settings, database
):
    segmind.processing_seconds = 60
    async with running(make_settings(JOB_DEADLINE_MINUTES="0.02")):  # 1.2 s
        telegram.private_chat(USER)
        await generate(telegram)
        await outcome_message(telegram, USER, "longer than usual")
        await wait_until(lambda: ledger(database)[0]["notified_at"], what="notified")
    assert ledger(database)[0]["state"] == "timed_out"


async def test_key_rejected_alerts_operators_once_per_incident(telegram, segmind, bot, database):
    telegram.private_chat(USER)
    telegram.private_chat(OTHER)
    segmind.fail_next_submit(401, times=2)
    await generate(telegram, USER)
    await outcome_message(telegram, USER, "unavailable right now")
    await generate(telegram, OTHER)
    await outcome_message(telegram, OTHER, "unavailable right now")
    alerts = telegram.calls_of("sendMessage", chat_id=ADMIN_ID)
    assert len(alerts) == 1
    assert "API key" in alerts[0].params["text"]
    # The key works again: the next job clears the incident with one line.
    await generate(telegram, USER)
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    alerts = await telegram.wait_for_call("sendMessage", chat_id=ADMIN_ID, count=2)
    assert "Resolved" in alerts[1].params["text"]


async def test_out_of_credits_alerts_operators(telegram, segmind, bot):
    telegram.private_chat(USER)
    segmind.credits = 0
    await generate(telegram)
    await outcome_message(telegram, USER, "unavailable right now")
    (alert,) = await telegram.wait_for_call("sendMessage", chat_id=ADMIN_ID)
    assert "credits" in alert.params["text"]


async def test_telegram_flood_control_on_the_video_is_waited_out_then_sent_once(
    telegram, segmind, bot, database
):
    telegram.private_chat(USER)
    telegram.fail_next("sendVideo", error_code=429, description="Too Many Requests: retry after 1")
    await generate(telegram)
    calls = await telegram.wait_for_call("sendVideo", chat_id=USER, count=2, timeout=15)
    assert not calls[0].ok
    assert calls[1].ok
    assert calls[1].at - calls[0].at >= 1.0
    await wait_until(lambda: ledger(database)[0]["state"] == "delivered")
    await settled(bot, telegram)
    assert len([c for c in telegram.calls_of("sendVideo") if c.ok]) == 1


async def test_a_blocked_chat_ends_undeliverable_and_others_go_on(
    telegram, segmind, bot, database
):
    telegram.private_chat(USER)
    telegram.private_chat(OTHER)
    segmind.processing_seconds = 60  # both jobs at Segmind until the clock is moved
    await generate(telegram, USER)
    await generate(telegram, OTHER)
    await wait_until(lambda: len(segmind.jobs) == 2, what="both submitted")
    telegram.block_chat(USER)
    segmind.advance(60)
    await telegram.wait_for_call("sendVideo", chat_id=OTHER, timeout=15)
    await wait_until(
        lambda: {j["user_id"]: j["state"] for j in ledger(database)}.get(USER) == "undeliverable",
        what="undeliverable",
    )
    await settled(bot, telegram)  # no job task left that could try the blocked chat again
    to_user = [c for c in telegram.calls if c.params.get("chat_id") in (USER, str(USER))]
    refused = [c for c in to_user if not c.ok]
    assert len(refused) == 1  # one 403, then silence: no retry loop
    assert all(j["notified_at"] for j in ledger(database))


async def test_a_deleted_photo_still_gets_its_video(telegram, segmind, bot, database):
    telegram.private_chat(USER)
    segmind.processing_seconds = 0.4
    photo = await generate(telegram)
    telegram.delete_message(USER, photo["message_id"])
    (call,) = await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=15)
    assert call.ok
    assert "reply_to_message" not in call.result
    await wait_until(lambda: ledger(database)[0]["state"] == "delivered")


async def test_a_video_over_50_mb_arrives_as_a_link(telegram, segmind, bot, database):
    telegram.private_chat(USER)
    segmind.video_size = 50 * 1024 * 1024 + 1
    await generate(telegram)
    call = await outcome_message(telegram, USER, "too large to send here")
    assert segmind.url + "/outputs/" in call.params["text"]
    assert reply_target(call.params) is not None
    await wait_until(lambda: ledger(database)[0]["state"] == "delivered")
    assert telegram.calls_of("sendVideo") == []


@pytest.mark.parametrize(
    ("code", "description"),
    [(502, "Bad Gateway"), (500, "Internal Server Error")],
)
async def test_telegram_server_errors_on_the_video_are_retried_and_it_arrives_once(
    telegram, segmind, bot, database, code, description
):
    telegram.private_chat(USER)
    telegram.fail_next("sendVideo", error_code=code, description=description, times=2)
    await generate(telegram)
    await wait_until(
        lambda: any(c.ok for c in telegram.calls_of("sendVideo")), timeout=20, what="video"
    )
    await wait_until(lambda: ledger(database)[0]["state"] == "delivered")
    assert len([c for c in telegram.calls_of("sendVideo") if c.ok]) == 1
    assert len(segmind.submits) == 1


async def test_a_lost_submit_answer_is_found_in_the_history_never_resubmitted(
    telegram, segmind, bot, database
):
    telegram.private_chat(USER)
    segmind.accept_then_drop_next_submit()  # Segmind has (and charged) the job
    await generate(telegram)
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    await settled(bot, telegram)  # nothing left running that could resubmit
    assert ledger(database)[0]["state"] == "delivered"
    assert len(segmind.jobs) == 1  # found by its seed and image URL: no second submit
    [job] = ledger(database)
    assert job["request_id"] == next(iter(segmind.jobs))
    texts_sent = [c.params["text"] for c in telegram.calls_of("sendMessage", chat_id=USER)]
    assert not any("can't tell whether" in text for text in texts_sent)


async def test_jobs_resume_after_a_restart_and_deliver_once(
    telegram, segmind, make_settings, database
):
    telegram.private_chat(USER)
    segmind.processing_seconds = 60  # at Segmind until the clock is moved
    async with running(make_settings()):
        await generate(telegram)
        await wait_until(
            lambda: ledger(database) and ledger(database)[0]["state"] in ("queued", "processing")
        )
    # Stopped mid-job; the video completes while the bot is down.
    segmind.advance(60)
    assert telegram.calls_of("sendVideo") == []
    async with running(make_settings()):
        await telegram.wait_for_call("sendVideo", chat_id=USER)
        await wait_until(lambda: ledger(database)[0]["state"] == "delivered")
    assert len(telegram.calls_of("sendVideo")) == 1
    assert len(segmind.submits) == 1


async def test_a_photo_telegram_no_longer_serves_is_explained_and_nothing_paid(
    telegram, segmind, bot, database
):
    telegram.private_chat(USER)
    telegram.fail_next("getFile", error_code=400, description="Bad Request: invalid file_id")
    await generate(telegram)
    call = await outcome_message(telegram, USER, "couldn't download this photo")
    assert "reply_markup" in call.params  # Try again
    await wait_until(lambda: ledger(database)[0]["notified_at"], what="notified")
    assert ledger(database)[0]["state"] == "rejected"
    assert segmind.submits == []
