"""A forged or stale "Try again" (callback data ``r:<job id>``) makes nothing.

"Try again" is offered only under an outcome that made no video and where waiting may
help (:func:`bot.core.jobs.offers_retry`). Callback data comes from the user's app and
can be anything: pressed on a delivered video, or while its job still runs, it must not
start (or invoice) a new paid job. The real PTB application, httpx and SQLite against
the fake Telegram and Segmind.
"""

from __future__ import annotations

from bot.i18n import texts
from tests.conftest import ledger, running, settled, wait_until
from tests.fakes.segmind import FakeSegmind
from tests.fakes.telegram import FakeTelegram
from tests.test_after_video import answer_of, make_video
from tests.test_private_flow import button_data, send_photo_get_keyboard

USER = 3601
OTHER = 3602
#: The user's app speaks French: the refusal must too.
LANG = "fr"


async def test_a_forged_try_again_on_a_delivered_video_starts_nothing(
    telegram: FakeTelegram, segmind: FakeSegmind, make_settings, database
):
    telegram.private_chat(USER)
    async with running(make_settings(PRICE_STARS="50", FREE_VIDEOS_PER_USER="1")) as app:
        _, video = await make_video(telegram, USER, USER)  # the free one, delivered
        await wait_until(lambda: ledger(database)[0]["notified_at"], what="delivered recorded")
        (job,) = ledger(database)
        assert job["state"] == "delivered"
        query = telegram.press_button(USER, USER, video["message_id"], f"r:{job['id']}")
        answer = await answer_of(telegram, query)
        await settled(app, telegram)
    assert answer.get("text") == texts.answer_stale("en")
    assert [row["state"] for row in ledger(database)] == ["delivered"]
    assert telegram.calls_of("sendInvoice") == []
    assert len(segmind.submits) == 1


async def test_a_forged_try_again_while_the_job_runs_starts_nothing(
    telegram: FakeTelegram, segmind: FakeSegmind, make_settings, database
):
    telegram.user(USER, language_code=LANG)
    telegram.private_chat(USER)
    segmind.processing_seconds = 3.0  # long enough to press while Segmind works on it
    async with running(make_settings()) as app:
        _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
        telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, "🎬"))
        await wait_until(lambda: segmind.submits, what="the submit")
        (job,) = ledger(database)
        query = telegram.press_button(USER, USER, keyboard["message_id"], f"r:{job['id']}")
        answer = await answer_of(telegram, query)
        assert ledger(database)[0]["state"] in ("queued", "processing")  # pressed meanwhile
        await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=15)
        await settled(app, telegram)
    assert answer.get("text") == texts.answer_stale(LANG)
    assert [row["state"] for row in ledger(database)] == ["delivered"]
    assert len(segmind.submits) == 1
    assert len(telegram.calls_of("sendVideo")) == 1


async def test_a_try_again_of_someone_elses_refused_job_is_not_theirs(
    telegram: FakeTelegram, segmind: FakeSegmind, make_settings, database
):
    """The rule holds for the asker only: another user forging the job's id gets the
    "not yours" answer, and nothing is created."""
    telegram.user(OTHER, language_code=LANG)
    telegram.private_chat(USER)
    telegram.private_chat(OTHER)
    segmind.fail_next_submit(429, retry_after=1)
    async with running(make_settings()) as app:
        _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
        telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, "🎬"))
        await wait_until(lambda: ledger(database)[0]["notified_at"] is not None, what="told")
        (job,) = ledger(database)
        assert job["state"] == "rejected"  # its outcome offered Try again, to its asker
        query = telegram.press_button(OTHER, OTHER, 1, f"r:{job['id']}")
        answer = await answer_of(telegram, query)
        await settled(app, telegram)
    assert answer.get("text") == texts.answer_stale(LANG)  # another chat: stale to them
    assert [row["state"] for row in ledger(database)] == ["rejected"]
    assert len(segmind.submits) == 1
