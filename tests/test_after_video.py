"""Issue 14, after the video: Again, Options and Share under every video, /history with
free resends, and inline queries answering with the user's own videos — the real PTB
application, httpx and SQLite against the fake Telegram and Segmind."""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import pytest
from telegram.ext import Application

from bot.app import ALLOWED_UPDATES
from bot.core.options import VideoOptions
from bot.i18n import texts
from bot.settings import Settings
from bot.telegram.handlers import INLINE_CACHE_SECONDS, INLINE_START_PARAMETER
from tests.conftest import ledger, running, settled, wait_until
from tests.fakes.telegram import Call, FakeTelegram
from tests.test_payments import Handled, settle
from tests.test_private_flow import button_data, keyboard_labels, reply_target

USER = 2501
OTHER = 2502
GROUP = -1002500001
LANG = texts.FALLBACK_LANGUAGE


# -- helpers --------------------------------------------------------------------------


async def answer_of(telegram: FakeTelegram, query_id: str) -> dict[str, Any]:
    await wait_until(lambda: query_id in telegram.callback_answers, what="the button's answer")
    return telegram.callback_answers[query_id]


async def press(
    telegram: FakeTelegram, chat_id: int, user_id: int, message: dict[str, Any], label: str
) -> dict[str, Any]:
    """Press the button labelled ``label`` on ``message``; its answer's params."""
    query = telegram.press_button(
        chat_id, user_id, message["message_id"], button_data(message, label)
    )
    return await answer_of(telegram, query)


async def videos(telegram: FakeTelegram, chat_id: int, count: int) -> list[Call]:
    calls = await telegram.wait_for_call("sendVideo", chat_id=chat_id, count=count, timeout=15)
    return [call for call in calls if call.ok]


async def make_video(
    telegram: FakeTelegram,
    chat_id: int = USER,
    user_id: int = USER,
    *,
    caption: str | None = None,
    thread_id: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A photo, its keyboard, Generate: (the photo, the delivered video message)."""
    before = len([c for c in telegram.calls_of("sendVideo", chat_id) if c.ok])
    photo = telegram.send_photo(chat_id, user_id, caption=caption, thread_id=thread_id)
    (call,) = await telegram.wait_for_call(
        "sendMessage",
        chat_id=chat_id,
        where=lambda c: (
            "reply_markup" in c.params and reply_target(c.params) == photo["message_id"]
        ),
    )
    keyboard = call.response["result"]
    await press(telegram, chat_id, user_id, keyboard, "Generate")
    sent = await videos(telegram, chat_id, before + 1)
    return photo, sent[-1].result


def labels(message: dict[str, Any]) -> list[str]:
    return [label for row in keyboard_labels(message) for label in row]


def texts_sent(telegram: FakeTelegram, chat_id: int) -> list[str]:
    return [c.params["text"] for c in telegram.calls_of("sendMessage", chat_id) if c.ok]


@pytest.fixture
async def inline_bot(
    telegram: FakeTelegram, make_settings: Callable[..., Settings]
) -> AsyncIterator[Application]:
    """The bot with inline mode on (BotFather /setinline), as getMe reports at start."""
    telegram.inline_mode = True
    async with running(make_settings()) as application:
        yield application


# -- the buttons under a video ------------------------------------------------------------


async def test_every_video_has_again_and_options_and_no_share_without_inline_mode(
    telegram, segmind, bot
):
    telegram.private_chat(USER)
    _, video = await make_video(telegram)
    assert keyboard_labels(video) == [[texts.again_label(LANG), texts.options_label(LANG)]]
    assert "Again" in labels(video)[0]
    assert "Options" in labels(video)[1]


async def test_with_inline_mode_share_opens_the_chat_picker_for_that_video(
    telegram, segmind, inline_bot, database
):
    telegram.private_chat(USER)
    _, video = await make_video(telegram)
    await settled(inline_bot, telegram)
    (job,) = ledger(database)
    rows = video["reply_markup"]["inline_keyboard"]
    assert [b["text"] for b in rows[1]] == [texts.share_label(LANG)]
    chosen = rows[1][0]["switch_inline_query_chosen_chat"]
    assert chosen["query"] == f"#{job['id']}"
    assert chosen["allow_user_chats"]
    assert chosen["allow_group_chats"]
    assert chosen["allow_channel_chats"]
    assert "inline_query" in ALLOWED_UPDATES


# -- Again --------------------------------------------------------------------------------


async def test_again_makes_one_new_job_from_the_same_photo_options_and_upload(
    telegram, segmind, bot, database
):
    telegram.private_chat(USER)
    photo, video = await make_video(telegram)
    answer = await press(telegram, USER, USER, video, "Again")
    assert answer.get("text") == texts.answer_again_started(LANG)
    second = (await videos(telegram, USER, 2))[-1]
    await settled(bot, telegram)

    first_job, again_job = ledger(database)
    assert again_job["state"] == "delivered"
    assert again_job["retry_of"] == first_job["id"]
    assert again_job["file_id"] == first_job["file_id"]
    assert (again_job["quality"], again_job["duration"]) == (
        first_job["quality"],
        first_job["duration"],
    )
    first_submit, again_submit = segmind.submits
    assert again_submit["seed"] != first_submit["seed"]
    # The upload was still served: checked once, not uploaded again.
    assert again_submit["image_url"] == first_submit["image_url"]
    assert (len(segmind.uploads), segmind.asset_checks) == (1, 1)
    # Its status message and its video reply to the photo, like a Generate's.
    assert reply_target(second.params) == photo["message_id"]
    status = [
        c
        for c in telegram.calls_of("sendMessage", USER)
        if c.params["text"] == texts.again_status(LANG, _options(first_job))
    ]
    assert len(status) == 1
    assert reply_target(status[0].params) == photo["message_id"]
    assert labels(second.result)[:2] == [texts.again_label(LANG), texts.options_label(LANG)]


def _options(row: dict[str, Any]) -> VideoOptions:
    return VideoOptions(quality=row["quality"], duration=row["duration"], style=row["style"])


async def test_again_pressed_twice_quickly_and_redelivered_makes_one_job(
    telegram, segmind, bot, database
):
    telegram.private_chat(USER)
    _, video = await make_video(telegram)
    data = button_data(video, "Again")
    queries = [telegram.press_button(USER, USER, video["message_id"], data) for _ in range(3)]
    answers = [await answer_of(telegram, query) for query in queries]
    # The first press's update arrives once more (a restart before it was confirmed).
    first_update = max(
        u["update_id"]
        for c in telegram.calls_of("getUpdates")
        if c.ok
        for u in c.result
        if u.get("callback_query", {}).get("id") == queries[0]
    )
    telegram.redeliver_update(first_update)
    await videos(telegram, USER, 2)
    await settled(bot, telegram)

    assert [job["state"] for job in ledger(database)] == ["delivered", "delivered"]
    assert len(segmind.submits) == 2
    assert len([c for c in telegram.calls_of("sendVideo", USER) if c.ok]) == 2
    said = [answer.get("text") for answer in answers]
    assert said.count(texts.answer_again_started(LANG)) == 1
    assert said.count(texts.answer_again_before(LANG)) == 2


async def test_again_after_segmind_forgot_the_video_and_the_upload_rehosts_the_photo(
    telegram, segmind, bot, database
):
    telegram.private_chat(USER)
    _, video = await make_video(telegram)
    await settled(bot, telegram)
    (first,) = ledger(database)
    segmind.expire(first["request_id"])  # the result is gone (Segmind keeps it 1 h)
    segmind.expire_asset(first["image_url"])  # and so is the uploaded photo
    answer = await press(telegram, USER, USER, video, "Again")
    assert answer.get("text") == texts.answer_again_started(LANG)
    await videos(telegram, USER, 2)
    await settled(bot, telegram)

    _, again = ledger(database)
    assert again["state"] == "delivered"
    assert len(segmind.uploads) == 2  # re-hosted from the Telegram file id
    assert again["image_url"] != first["image_url"]
    assert segmind.submits[-1]["image_url"] == again["image_url"]


async def test_again_with_a_price_sends_an_invoice_and_submits_only_after_payment(
    telegram, segmind, make_settings, database
):
    telegram.private_chat(USER)
    async with running(make_settings(PRICE_STARS="50", FREE_VIDEOS_PER_USER="1")) as app:
        handled = Handled(app)
        photo, video = await make_video(telegram)  # the free one
        answer = await press(telegram, USER, USER, video, "Again")
        assert answer.get("text") == texts.answer_invoice_sent(LANG)
        (invoice,) = await telegram.wait_for_call("sendInvoice", chat_id=USER)
        assert invoice.ok
        assert invoice.params["currency"] == "XTR"
        assert reply_target(invoice.params) == photo["message_id"]
        # Its status message replies to the photo: the way back to the options.
        status = await telegram.wait_for_call(
            "sendMessage",
            chat_id=USER,
            where=lambda c: (
                c.params.get("reply_markup") is not None
                and texts.change_options_label(LANG) in str(c.params["reply_markup"])
            ),
        )
        assert reply_target(status[-1].params) == photo["message_id"]
        # Pressed again while the invoice is out: the same invoice is the answer.
        again = await press(telegram, USER, USER, video, "Again")
        assert again.get("text") == texts.answer_awaiting_payment(LANG)
        await settle(telegram, handled, database)  # an invoice out is not "unsettled" here
        assert len(segmind.submits) == 1  # nothing before the payment
        assert len(telegram.calls_of("sendInvoice")) == 1
        assert [job["state"] for job in ledger(database)] == ["delivered", "awaiting_payment"]

        result = await telegram.pay_invoice(USER, invoice.result)
        assert result.paid
        await videos(telegram, USER, 2)
        await settled(app, telegram)
    assert len(segmind.submits) == 2
    _, paid = ledger(database)
    assert paid["state"] == "delivered"
    assert paid["charge_id"] == telegram.payments[0].charge_id
    assert paid["price_stars"] == 50


async def test_an_again_invoice_that_could_not_be_sent_goes_out_at_the_next_press(
    telegram, segmind, make_settings, database
):
    telegram.private_chat(USER)
    async with running(make_settings(PRICE_STARS="50", FREE_VIDEOS_PER_USER="1")) as app:
        handled = Handled(app)
        _, video = await make_video(telegram)
        telegram.fail_next("sendInvoice", error_code=400, description="Bad Request: oops")
        failed = await press(telegram, USER, USER, video, "Again")
        assert failed.get("text") == texts.answer_again_invoice_failed(LANG)
        assert failed.get("show_alert") is True
        sent = await press(telegram, USER, USER, video, "Again")
        assert sent.get("text") == texts.answer_invoice_sent(LANG)
        await settle(telegram, handled, database)
    assert [c.ok for c in telegram.calls_of("sendInvoice")] == [False, True]
    assert [job["state"] for job in ledger(database)] == ["delivered", "awaiting_payment"]
    assert len(segmind.submits) == 1


# -- Options ------------------------------------------------------------------------------


async def test_options_shows_one_fresh_keyboard_for_the_same_photo(
    telegram, segmind, bot, database
):
    telegram.private_chat(USER)
    photo, video = await make_video(telegram)
    before = len(telegram.calls_of("sendMessage", USER))
    first = await press(telegram, USER, USER, video, "Options")
    second = await press(telegram, USER, USER, video, "Options")
    assert first.get("text") == second.get("text") == texts.answer_options_shown(LANG)
    await settled(bot, telegram)
    keyboards = [
        c for c in telegram.calls_of("sendMessage", USER)[before:] if "reply_markup" in c.params
    ]
    assert len(keyboards) == 1  # a double press shows one keyboard
    keyboard = keyboards[0].result
    assert reply_target(keyboards[0].params) == photo["message_id"]
    assert keyboard_labels(keyboard)[1] == ["✅ 5 s", "8 s"]  # the video's own options

    await press(telegram, USER, USER, keyboard, "8 s")
    await wait_until(lambda: "✅ 8 s" in labels(telegram.message(USER, keyboard["message_id"])))
    await press(telegram, USER, USER, telegram.message(USER, keyboard["message_id"]), "Generate")
    await videos(telegram, USER, 2)
    await settled(bot, telegram)
    assert segmind.submits[-1]["duration"] == 8
    assert segmind.submits[-1]["quality"] == segmind.submits[0]["quality"]
    rows = ledger(database)
    assert [row["file_id"] for row in rows] == [rows[0]["file_id"]] * 2

    # Its keyboard was used: Options under the first video points to the newer one.
    used = await press(telegram, USER, USER, video, "Options")
    assert used.get("text") == texts.answer_options_used(LANG)


# -- groups -------------------------------------------------------------------------------


async def test_in_a_forum_topic_only_the_asker_may_press_again_and_it_stays_in_the_topic(
    telegram, segmind, bot, database
):
    topic = 41
    telegram.group(GROUP, "Family", supergroup=True, forum=True)
    telegram.user(OTHER, "Bob")
    photo, video = await make_video(telegram, GROUP, USER, caption="/warmth", thread_id=topic)
    for label in ("Again", "Options"):
        refused = await press(telegram, GROUP, OTHER, video, label)
        assert refused.get("text") == texts.answer_not_yours(LANG)
        assert refused.get("show_alert") is True
    await settled(bot, telegram)
    assert len(ledger(database)) == 1

    answer = await press(telegram, GROUP, USER, video, "Again")
    assert answer.get("text") == texts.answer_again_started(LANG)
    second = (await videos(telegram, GROUP, 2))[-1]
    await settled(bot, telegram)
    assert reply_target(second.params) == photo["message_id"]
    sends = [
        c
        for c in telegram.calls
        if c.method in ("sendMessage", "sendVideo") and c.chat_id == GROUP
    ]
    assert all(int(c.params.get("message_thread_id", 0)) == topic for c in sends)


# -- stale and forged buttons ---------------------------------------------------------------


async def test_stale_forged_and_garbled_buttons_are_answered_and_change_nothing(
    telegram, segmind, bot, database
):
    telegram.private_chat(USER)
    telegram.private_chat(OTHER)
    _, video = await make_video(telegram)
    await make_video(telegram, OTHER, OTHER)
    await settled(bot, telegram)
    _, theirs = ledger(database)
    # A job that made no video (still a draft) under a forged Again.
    telegram.send_photo(USER, USER)
    await wait_until(lambda: len(ledger(database)) == 3)
    draft = ledger(database)[2]
    presses = {
        "a:999999": texts.answer_again_gone(LANG),  # no such job
        f"a:{theirs['id']}": texts.answer_stale(LANG),  # another user's job, from another chat
        f"o:{theirs['id']}": texts.answer_stale(LANG),
        f"a:{draft['id']}": texts.answer_again_gone(LANG),  # no video to repeat
        f"o:{draft['id']}": texts.answer_again_gone(LANG),
        f"v:{theirs['id']}": texts.answer_not_yours(LANG),  # another user's video
        f"h:{theirs['id']}": texts.answer_not_yours(LANG),  # another user's history
        f"v:{draft['id']}": texts.answer_resend_gone(LANG),
        "v:999999": texts.answer_history_gone(LANG),
        "n:999999": texts.answer_history_gone(LANG),
        "a:": texts.answer_invalid(LANG),
        "a:12:extra": texts.answer_invalid(LANG),
        "a:-5": texts.answer_invalid(LANG),
        "v:abc": texts.answer_invalid(LANG),
        "zz:1": texts.answer_invalid(LANG),
        "💥": texts.answer_invalid(LANG),
    }
    queries = {
        data: telegram.press_button(USER, USER, video["message_id"], data) for data in presses
    }
    for data, expected in presses.items():
        assert (await answer_of(telegram, queries[data])).get("text") == expected, data
    await settled(bot, telegram)
    assert len(ledger(database)) == 3
    assert len(segmind.submits) == 2
    assert len([c for c in telegram.calls_of("sendVideo") if c.ok]) == 2
    assert [job["state"] for job in ledger(database)] == ["delivered", "delivered", "draft"]
    for answer in telegram.callback_answers.values():
        assert len(answer.get("text") or "") <= 200


# -- /history -----------------------------------------------------------------------------


async def test_history_lists_the_last_ten_newest_first_and_pages_through_the_rest(
    telegram, segmind, make_settings, database
):
    telegram.private_chat(USER)
    segmind.fail_next_job()  # the first one fails: it shows, without a button
    settings = make_settings(MAX_ACTIVE_JOBS_PER_USER="20", DAILY_JOBS_PER_USER="0")
    async with running(settings) as app:
        for _ in range(12):
            photo = telegram.send_photo(USER, USER)
            (call,) = await telegram.wait_for_call(
                "sendMessage",
                chat_id=USER,
                where=lambda c, p=photo: (
                    "reply_markup" in c.params and reply_target(c.params) == p["message_id"]
                ),
            )
            await press(telegram, USER, USER, call.result, "Generate")
        await settled(app, telegram, timeout=30)
        rows = ledger(database)
        assert [row["state"] for row in rows] == ["failed"] + ["delivered"] * 11

        telegram.send_text(USER, USER, "/history")
        (reply,) = await telegram.wait_for_call(
            "sendMessage", chat_id=USER, where=lambda c: c.params["text"].startswith("Your")
        )
        first_page = reply.result
        lines = first_page["text"].splitlines()
        assert lines[0] == "Your videos, newest first:"
        numbered = [line for line in lines if line[:1].isdigit()]
        assert len(numbered) == 10
        assert all("✅ sent · 540p · 5 s" in line for line in numbered)
        resend_labels = [texts.resend_label(LANG, n) for n in range(1, 11)]
        assert labels(first_page) == [*resend_labels, texts.older_label(LANG)]
        # The buttons name the jobs newest first.
        assert button_data(first_page, texts.resend_label(LANG, 1)) == f"v:{rows[-1]['id']}"

        await press(telegram, USER, USER, first_page, texts.older_label(LANG))
        await wait_until(
            lambda: (
                texts.newer_label(LANG) in labels(telegram.message(USER, first_page["message_id"]))
            )
        )
        older = telegram.message(USER, first_page["message_id"])
        numbered = [line for line in older["text"].splitlines() if line[:1].isdigit()]
        assert len(numbered) == 2
        assert "couldn't be made" in numbered[-1]  # the oldest, the failed one
        assert labels(older) == [texts.resend_label(LANG, 1), texts.newer_label(LANG)]

        await press(telegram, USER, USER, older, texts.newer_label(LANG))
        await wait_until(
            lambda: (
                texts.older_label(LANG) in labels(telegram.message(USER, first_page["message_id"]))
            )
        )
        assert telegram.message(USER, first_page["message_id"])["text"] == first_page["text"]


async def test_history_resends_a_video_by_file_id_for_free_even_after_segmind_forgot_it(
    telegram, segmind, bot, database
):
    telegram.private_chat(USER)
    _, video = await make_video(telegram)
    await settled(bot, telegram)
    (job,) = ledger(database)
    segmind.expire(job["request_id"])
    telegram.send_text(USER, USER, "/history")
    (reply,) = await telegram.wait_for_call(
        "sendMessage", chat_id=USER, where=lambda c: c.params["text"].startswith("Your")
    )
    answer = await press(telegram, USER, USER, reply.result, texts.resend_label(LANG, 1))
    assert answer.get("text") == texts.answer_resent(LANG)
    resent = (await videos(telegram, USER, 2))[-1]
    await settled(bot, telegram)
    assert resent.params["video"] == job["video_file_id"] == video["video"]["file_id"]
    assert labels(resent.result)[:2] == [texts.again_label(LANG), texts.options_label(LANG)]
    assert (len(ledger(database)), len(segmind.submits), len(segmind.uploads)) == (1, 1, 1)

    # Telegram no longer knows the file: said plainly, nothing else happens.
    telegram.forget_file(job["video_file_id"])
    gone = await press(telegram, USER, USER, reply.result, texts.resend_label(LANG, 1))
    assert gone.get("text") == texts.answer_resend_gone(LANG)
    await settled(bot, telegram)
    assert len([c for c in telegram.calls_of("sendVideo", USER) if c.ok]) == 2


async def test_history_with_no_videos_says_how_to_make_one(telegram, segmind, bot):
    telegram.private_chat(USER)
    telegram.send_text(USER, USER, "/history")
    (reply,) = await telegram.wait_for_call("sendMessage", chat_id=USER)
    assert reply.params["text"] == texts.history(LANG, [], 0.0, in_group=False)
    assert "reply_markup" not in reply.params


async def test_history_in_a_group_lists_only_the_askers_videos_made_there(
    telegram, segmind, bot, database
):
    telegram.group(GROUP, "Family")
    telegram.user(OTHER, "Bob")
    telegram.private_chat(USER)
    await make_video(telegram)  # in private: not listed in the group
    _, group_video = await make_video(telegram, GROUP, USER, caption="/warmth")
    await make_video(telegram, GROUP, OTHER, caption="/warmth")  # Bob's: not listed
    telegram.send_text(GROUP, USER, "/history")
    (reply,) = await telegram.wait_for_call(
        "sendMessage", chat_id=GROUP, where=lambda c: c.params["text"].startswith("Your")
    )
    numbered = [line for line in reply.params["text"].splitlines() if line[:1].isdigit()]
    assert len(numbered) == 1
    assert "in this group" in reply.params["text"]
    # Bob may not press Ann's list; Ann may, and the video comes in the group.
    refused = await press(telegram, GROUP, OTHER, reply.result, texts.resend_label(LANG, 1))
    assert refused.get("text") == texts.answer_not_yours(LANG)
    await press(telegram, GROUP, USER, reply.result, texts.resend_label(LANG, 1))
    resent = (await videos(telegram, GROUP, 3))[-1]
    assert resent.params["video"] == group_video["video"]["file_id"]
    await settled(bot, telegram)
    assert len(ledger(database)) == 3


# -- sharing: inline queries ----------------------------------------------------------------


async def test_an_inline_query_offers_only_the_users_own_videos_the_shared_one_first(
    telegram, segmind, inline_bot, database
):
    telegram.private_chat(USER)
    telegram.private_chat(OTHER)
    await make_video(telegram)
    await make_video(telegram)
    await make_video(telegram, OTHER, OTHER)
    await settled(inline_bot, telegram)
    mine_old, mine_new, theirs = ledger(database)

    query_id = telegram.send_inline_query(USER, f"#{mine_old['id']}")
    await wait_until(lambda: query_id in telegram.inline_answers, what="the inline answer")
    answer = telegram.inline_answers[query_id]
    results = answer["results"]
    assert [r["video_file_id"] for r in results] == [
        mine_old["video_file_id"],  # the one the Share button named comes first
        mine_new["video_file_id"],
    ]
    assert all(r["type"] == "video" for r in results)
    assert theirs["video_file_id"] not in [r["video_file_id"] for r in results]
    assert answer["is_personal"] is True
    assert int(answer["cache_time"]) == INLINE_CACHE_SECONDS <= 60

    # Picked: the video lands in the chosen chat, sent by the user via the bot.
    posted = telegram.choose_inline_result(query_id, results[0]["id"], OTHER)
    assert posted["video"]["file_id"] == mine_old["video_file_id"]
    await settled(inline_bot, telegram)
    assert len(segmind.submits) == 3


async def test_an_inline_query_from_a_user_without_videos_invites_them_to_make_one(
    telegram, segmind, inline_bot
):
    query_id = telegram.send_inline_query(OTHER, "")
    await wait_until(lambda: query_id in telegram.inline_answers, what="the inline answer")
    answer = telegram.inline_answers[query_id]
    assert answer["results"] == []
    assert answer["button"] == {
        "text": texts.share_none(LANG),
        "start_parameter": INLINE_START_PARAMETER,
    }
    assert answer["is_personal"] is True
    # The button opens the bot with /start <parameter>: the usual welcome.
    telegram.private_chat(OTHER)
    telegram.send_text(OTHER, OTHER, f"/start {INLINE_START_PARAMETER}")
    (reply,) = await telegram.wait_for_call("sendMessage", chat_id=OTHER)
    assert reply.params["text"] == texts.start(LANG)


async def test_a_forged_share_query_shows_no_one_elses_video(
    telegram, segmind, inline_bot, database
):
    telegram.private_chat(OTHER)
    await make_video(telegram, OTHER, OTHER)
    await settled(inline_bot, telegram)
    (theirs,) = ledger(database)
    for text in (f"#{theirs['id']}", "#", "#abc", "x" * 200):
        query_id = telegram.send_inline_query(USER, text)
        await wait_until(partial(operator.contains, telegram.inline_answers, query_id))
        assert telegram.inline_answers[query_id]["results"] == []


async def test_callback_answers_of_this_feature_fit_telegrams_200_characters():
    answers = [
        texts.answer_again_started(LANG),
        texts.answer_again_before(LANG),
        texts.answer_again_gone(LANG),
        texts.answer_again_invoice_failed(LANG),
        texts.answer_options_shown(LANG),
        texts.answer_options_used(LANG),
        texts.answer_resent(LANG),
        texts.answer_resend_gone(LANG),
        texts.answer_history_gone(LANG),
    ]
    assert all(0 < len(text) <= 200 for text in answers)
