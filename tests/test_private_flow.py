"""Issue 3: the private-chat flow end to end — real PTB, httpx and SQLite against the fakes."""

from __future__ import annotations

import asyncio
import re

import pytest

from bot.i18n import texts
from bot.storage.sqlite import SqliteLedger
from bot.telegram.handlers import MAX_IMAGE_BYTES
from tests.conftest import ADMIN_ID, ledger, running, settled, wait_until
from tests.fakes.telegram import TEST_TOKEN

USER = 501


def keyboard_labels(message: dict) -> list[list[str]]:
    return [[b["text"] for b in row] for row in message["reply_markup"]["inline_keyboard"]]


def button_data(message: dict, label_part: str) -> str:
    for row in message["reply_markup"]["inline_keyboard"]:
        for button in row:
            if label_part in button["text"]:
                return button["callback_data"]
    raise AssertionError(f"no button {label_part!r} in {keyboard_labels(message)}")


def reply_target(call_params: dict) -> int | None:
    params = call_params.get("reply_parameters")
    if isinstance(params, dict):
        return params.get("message_id")
    return call_params.get("reply_to_message_id")


async def send_photo_get_keyboard(telegram, chat_id=USER, user_id=USER, **kwargs):
    photo = telegram.send_photo(chat_id, user_id, **kwargs)
    calls = await telegram.wait_for_call(
        "sendMessage",
        chat_id=chat_id,
        where=lambda c: (
            "reply_markup" in c.params and reply_target(c.params) == photo["message_id"]
        ),
    )
    keyboard = calls[-1].response["result"]
    return photo, keyboard


def assert_plain(text: str) -> None:
    """A user-facing text: no HTTP status codes, no provider wording, no traceback."""
    assert not re.search(r"\b[45]\d\d\b", text), text
    assert "Traceback" not in text, text
    assert "error" not in text.lower(), text


async def test_start_and_help_say_what_to_do(telegram, bot):
    telegram.private_chat(USER)
    for command in ("/start", "/help"):
        telegram.send_text(USER, USER, command)
    calls = await telegram.wait_for_call("sendMessage", chat_id=USER, count=2)
    assert all(c.params["text"] == texts.start("en") for c in calls)


async def test_photo_gets_a_keyboard_with_the_contract_labels_and_defaults(
    telegram, bot, database
):
    telegram.private_chat(USER)
    photo, keyboard = await send_photo_get_keyboard(telegram)
    rows = keyboard_labels(keyboard)
    assert rows[0] == ["360p", "✅ 540p", "720p", "1080p"]
    assert rows[1] == ["✅ 5 s", "8 s"]
    assert any("Generate" in label for row in rows for label in row)
    (job,) = ledger(database)
    assert job["state"] == "draft"
    assert job["file_id"] == photo["photo"][-1]["file_id"]  # the largest size


async def test_a_keyboard_held_up_by_telegram_flood_control_still_arrives(telegram, bot, database):
    """Several photos at once (an album) can meet a 429 on a reply: the keyboard is sent
    after the wait Telegram asks for, not dropped."""
    telegram.private_chat(USER)
    telegram.fail_next(
        "sendMessage", error_code=429, description="Too Many Requests: retry after 1", chat_id=USER
    )
    photo = telegram.send_photo(USER, USER)
    await telegram.wait_for_call("sendMessage", chat_id=USER, where=lambda c: c.ok)
    refused, sent = telegram.calls_of("sendMessage", USER)
    keyboard = sent.result
    assert "reply_markup" in sent.params
    assert reply_target(sent.params) == photo["message_id"]
    assert not refused.ok
    assert sent.ok
    assert sent.at - refused.at >= 1.0  # Telegram's retry_after was honoured
    await wait_until(
        lambda: ledger(database)[0]["keyboard_message_id"] == keyboard["message_id"],
        what="the keyboard recorded on the draft",
    )


async def test_choosing_options_edits_the_keyboard_in_place(telegram, bot, database):
    telegram.private_chat(USER)
    _, keyboard = await send_photo_get_keyboard(telegram)
    message_id = keyboard["message_id"]

    telegram.press_button(USER, USER, message_id, button_data(keyboard, "8 s"))
    await telegram.wait_for_call("editMessageText", chat_id=USER)
    current = telegram.message(USER, message_id)
    assert keyboard_labels(current)[1] == ["5 s", "✅ 8 s"]

    # 1080p with 8 s is impossible: picking 1080p switches to 5 s and says so.
    query = telegram.press_button(USER, USER, message_id, button_data(current, "1080p"))
    await wait_until(lambda: query in telegram.callback_answers, what="answer")
    assert "5 s" in telegram.callback_answers[query]["text"]
    await wait_until(
        lambda: keyboard_labels(telegram.message(USER, message_id))[0][3] == "✅ 1080p"
    )
    current = telegram.message(USER, message_id)
    assert keyboard_labels(current)[1] == ["✅ 5 s", "8 s"]
    (job,) = ledger(database)
    assert (job["quality"], job["duration"]) == ("1080p", 5)
    assert len(telegram.bot_messages(USER)) == 1  # edited, not re-sent


@pytest.mark.real_chat_pace  # the main flow keeps the real one-second gap of a private chat
async def test_generate_uploads_submits_once_and_replies_with_the_video(
    telegram, segmind, bot, database
):
    telegram.private_chat(USER)
    photo, keyboard = await send_photo_get_keyboard(telegram)
    telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, "720p"))
    await telegram.wait_for_call("editMessageText", chat_id=USER)
    current = telegram.message(USER, keyboard["message_id"])
    query = telegram.press_button(
        USER, USER, keyboard["message_id"], button_data(current, "Generate")
    )

    (video,) = await telegram.wait_for_call("sendVideo", chat_id=USER)
    assert query in telegram.callback_answers
    assert reply_target(video.params) == photo["message_id"]
    assert str(video.params.get("supports_streaming")).lower() == "true"
    assert video.params["video"].size == segmind.video_size

    (submit,) = segmind.submits
    assert submit["quality"] == "720p"
    assert submit["duration"] == 5
    assert 1 <= submit["seed"] <= 999_999  # the job's own, stored before the submit
    # Re-hosted: Segmind never sees a Telegram URL (it would carry the token).
    assert submit["image_url"].startswith(segmind.url + "/assets/")
    assert TEST_TOKEN not in submit["image_url"]
    assert len(segmind.uploads) == 1

    await wait_until(lambda: ledger(database)[0]["state"] == "delivered", what="delivered")
    (job,) = ledger(database)
    assert job["request_id"] == next(iter(segmind.jobs))
    assert (job["seed"], job["image_url"]) == (submit["seed"], submit["image_url"])
    assert job["video_file_id"]
    assert job["notified_at"] is not None
    # The keyboard became a status message on the way, and its summary at the end.
    await telegram.wait_for_call(
        "editMessageText", chat_id=USER, where=lambda c: c.params["text"].startswith("✅")
    )
    edits = [c.params["text"] for c in telegram.calls_of("editMessageText", chat_id=USER)]
    assert "⏳ Waiting for its turn" in edits
    status = telegram.message(USER, keyboard["message_id"])
    assert re.fullmatch(r"✅ Ready: 720p, 5 s · made in \d+ s", status["text"])


async def test_telegram_mode_hands_segmind_the_telegram_file_url(
    telegram, segmind, make_settings, database
):
    async with running(make_settings(IMAGE_URL_MODE="telegram")):
        telegram.private_chat(USER)
        _, keyboard = await send_photo_get_keyboard(telegram)
        telegram.press_button(
            USER, USER, keyboard["message_id"], button_data(keyboard, "Generate")
        )
        await telegram.wait_for_call("sendVideo", chat_id=USER)
    (submit,) = segmind.submits
    assert submit["image_url"].startswith(f"{telegram.url}/file/bot")
    assert segmind.uploads == []


async def test_an_image_sent_as_a_file_works_like_a_photo(telegram, segmind, bot):
    telegram.private_chat(USER)
    document = telegram.send_document(USER, USER, mime_type="image/png", file_name="me.png")
    (call,) = await telegram.wait_for_call("sendMessage", chat_id=USER)
    assert reply_target(call.params) == document["message_id"]
    keyboard = call.response["result"]
    telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, "Generate"))
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    assert len(segmind.submits) == 1


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (lambda t: t.send_text(USER, USER, "hello"), texts.not_a_photo("en")),
        (lambda t: t.send_sticker(USER, USER), texts.not_a_photo("en")),
        (lambda t: t.send_video_message(USER, USER), texts.not_a_photo("en")),
        (
            lambda t: t.send_document(USER, USER, mime_type="application/pdf", file_name="a.pdf"),
            texts.not_an_image_file("en"),
        ),
        (
            lambda t: t.send_document(USER, USER, size_bytes=MAX_IMAGE_BYTES + 1),
            texts.image_too_large("en"),
        ),
    ],
    ids=["text", "sticker", "video", "pdf", "image-over-20MB"],
)
async def test_things_that_are_not_usable_photos_get_a_short_hint(
    telegram, segmind, bot, database, send, expected
):
    telegram.private_chat(USER)
    message = send(telegram)
    (call,) = await telegram.wait_for_call("sendMessage", chat_id=USER)
    assert call.params["text"] == expected
    assert reply_target(call.params) == message["message_id"]
    assert "reply_markup" not in call.params
    assert ledger(database) == []
    assert segmind.submits == []


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("garbage", texts.answer_invalid("en")),
        ("g:abc", texts.answer_invalid("en")),
        ("q:1:4k", texts.answer_invalid("en")),
        ("g:424242", texts.answer_stale("en")),  # a keyboard the ledger does not know
    ],
)
async def test_garbage_forged_or_unknown_buttons_are_answered(
    telegram, segmind, bot, data, expected
):
    telegram.private_chat(USER)
    query = telegram.press_button(USER, USER, 77, data)
    await wait_until(lambda: query in telegram.callback_answers, what="callback answer")
    assert telegram.callback_answers[query]["text"] == expected
    assert segmind.submits == []
    # The bot is still up and working.
    await send_photo_get_keyboard(telegram)


async def test_a_press_reads_the_pressers_language_and_the_job_together(
    telegram, segmind, bot, monkeypatch
):
    """The answer to a press waits for the ledger once, not for two reads in turn."""
    telegram.private_chat(USER)
    _, keyboard = await send_photo_get_keyboard(telegram)
    reading: set[str] = set()
    overlaps: list[set[str]] = []

    def tracked(name: str, read):
        async def wrapper(self, *args):
            reading.add(name)
            overlaps.append(set(reading))
            try:
                return await read(self, *args)
            finally:
                reading.discard(name)

        return wrapper

    for name in ("user_preferences", "get"):
        monkeypatch.setattr(SqliteLedger, name, tracked(name, getattr(SqliteLedger, name)))
    query = telegram.press_button(
        USER, USER, keyboard["message_id"], button_data(keyboard, "720p")
    )
    await wait_until(lambda: query in telegram.callback_answers, what="callback answer")
    assert {"user_preferences", "get"} in overlaps


async def test_a_keyboard_from_a_reset_database_is_answered(
    telegram, segmind, make_settings, tmp_path
):
    telegram.private_chat(USER)
    async with running(make_settings()):
        _, keyboard = await send_photo_get_keyboard(telegram)
    # The operator starts over with an empty ledger; the old keyboard is still in the chat.
    async with running(make_settings(DATABASE_PATH=str(tmp_path / "fresh.sqlite3"))):
        query = telegram.press_button(
            USER, USER, keyboard["message_id"], button_data(keyboard, "Generate")
        )
        await wait_until(lambda: query in telegram.callback_answers, what="callback answer")
    assert telegram.callback_answers[query]["text"] == texts.answer_stale("en")
    assert segmind.submits == []


async def test_generate_pressed_twice_quickly_submits_once_and_sends_one_video(
    telegram, segmind, bot, database
):
    telegram.private_chat(USER)
    _, keyboard = await send_photo_get_keyboard(telegram)
    data = button_data(keyboard, "Generate")
    queries = [telegram.press_button(USER, USER, keyboard["message_id"], data) for _ in range(3)]
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    await wait_until(lambda: all(q in telegram.callback_answers for q in queries))
    await settled(bot, telegram)  # a wrong second job would still be running
    assert len(segmind.submits) == 1
    assert len(telegram.calls_of("sendVideo")) == 1
    assert [job["state"] for job in ledger(database)] == ["delivered"]
    answers = sorted(telegram.callback_answers[q]["text"] for q in queries)
    assert answers.count(texts.answer_started("en")) == 1


@pytest.mark.parametrize(
    ("status", "reason_text", "alerts_admin", "offers_retry"),
    [
        (400, "couldn't use this photo", False, False),
        (401, "unavailable right now", True, False),
        (403, "unavailable right now", True, False),
        (406, "unavailable right now", True, False),
        (429, "busy", False, True),
        (500, "busy", False, True),
    ],
)
async def test_a_refused_submit_gets_a_plain_message_and_the_bot_keeps_going(
    telegram, segmind, bot, database, status, reason_text, alerts_admin, offers_retry
):
    telegram.private_chat(USER)
    segmind.fail_next_submit(status, error="provider says: Internal details", retry_after=3)
    _, keyboard = await send_photo_get_keyboard(telegram)
    telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, "Generate"))
    call = (
        await telegram.wait_for_call(
            "sendMessage", chat_id=USER, where=lambda c: reason_text in c.params["text"]
        )
    )[0]
    assert_plain(call.params["text"])
    assert "provider" not in call.params["text"]
    assert ("reply_markup" in call.params) is offers_retry
    await wait_until(lambda: ledger(database)[0]["notified_at"] is not None)
    (job,) = ledger(database)
    assert job["state"] == "rejected"
    admin_alerts = telegram.calls_of("sendMessage", chat_id=ADMIN_ID)
    assert bool(admin_alerts) is alerts_admin
    assert telegram.calls_of("sendVideo") == []

    # The next photo goes through.
    _, keyboard = await send_photo_get_keyboard(telegram)
    telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, "Generate"))
    await telegram.wait_for_call("sendVideo", chat_id=USER)


async def test_try_again_after_a_busy_refusal_starts_one_new_job(telegram, segmind, bot, database):
    telegram.private_chat(USER)
    segmind.fail_next_submit(429, retry_after=1)
    _, keyboard = await send_photo_get_keyboard(telegram)
    telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, "Generate"))
    (notice,) = await telegram.wait_for_call(
        "sendMessage",
        chat_id=USER,
        where=lambda c: "reply_markup" in c.params and "busy" in c.params["text"],
    )
    message = notice.response["result"]
    data = button_data(message, "Try again")
    for _ in range(2):
        telegram.press_button(USER, USER, message["message_id"], data)
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    await settled(bot, telegram)  # both presses handled, no job left running
    assert len(segmind.jobs) == 1
    states = [job["state"] for job in ledger(database)]
    assert states == ["rejected", "delivered"]


async def test_many_users_at_once_and_one_failure_holds_up_nobody(
    telegram, segmind, bot, database
):
    users = list(range(1000, 1020))
    for user in users:
        telegram.private_chat(user)
    segmind.processing_seconds = 0.3
    keyboards = await asyncio.gather(*(send_photo_get_keyboard(telegram, u, u) for u in users))
    segmind.fail_next_job("Content blocked by safety filter (RAI)")
    for user, (_, keyboard) in zip(users, keyboards, strict=True):
        telegram.press_button(
            user, user, keyboard["message_id"], button_data(keyboard, "Generate")
        )
    await wait_until(
        lambda: len(telegram.calls_of("sendVideo")) == len(users) - 1, timeout=20, what="videos"
    )
    await wait_until(lambda: all(j["notified_at"] for j in ledger(database)), what="all told")
    states = sorted(job["state"] for job in ledger(database))
    assert states.count("delivered") == len(users) - 1
    assert states.count("failed") == 1
    assert len(segmind.submits) == len(users)


async def test_the_command_menus_are_published_at_start(telegram, bot):
    """Without a language code (every language has its own too: tests/test_languages.py)."""
    menus = {
        scope: [command["command"] for command in commands]
        for (scope, code), commands in telegram.menus.items()
        if code == ""
    }
    assert menus == {
        "all_private_chats": ["start", "help", "history", "language"],
        "all_group_chats": ["warmth", "help", "history", "language"],
    }
