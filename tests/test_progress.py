"""Progress people like, through the real PTB application and the fakes: 👀 on the photo,
a status message edited only when it changes and ending as a one-line summary, and a
video that says how big and how long it is."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from telegram.ext import ExtBot

from bot.core.options import VideoOptions
from bot.core.progress import Progress, Status, max_status_edits
from bot.i18n import texts
from bot.storage import SqliteLedger
from bot.telegram import pacing
from bot.telegram.messenger import TelegramMessenger
from bot.telegram.pacing import ChatPacer, PriorityRateLimiter
from tests.builders import new_job
from tests.conftest import ledger, settled, wait_until
from tests.fakes.telegram import TEST_TOKEN
from tests.test_private_flow import button_data, reply_target, send_photo_get_keyboard

USER = 501  # send_photo_get_keyboard's user
GROUP = -1009876
ASKER = 602
DEADLINE = 15 * 60.0


def index_of(telegram, method: str, where=lambda call: True) -> int:
    """Where the first matching call stands among all calls the fake received."""
    for index, call in enumerate(telegram.calls):
        if call.method.lower() == method.lower() and where(call):
            return index
    raise AssertionError(f"no {method} call")


async def generate(telegram, keyboard, chat_id=USER, user_id=USER) -> None:
    telegram.press_button(
        chat_id, user_id, keyboard["message_id"], button_data(keyboard, "Generate")
    )


async def test_the_photo_gets_eyes_once_its_keyboard_is_out(telegram, bot):
    telegram.private_chat(USER)
    photo, keyboard = await send_photo_get_keyboard(telegram)
    (reaction,) = await telegram.wait_for_call("setMessageReaction", chat_id=USER)
    assert reaction.ok
    assert int(reaction.params["message_id"]) == photo["message_id"]
    assert telegram.reactions(USER, photo["message_id"]) == ["👀"]
    keyboard_at = index_of(telegram, "sendMessage", lambda c: "reply_markup" in c.params)
    assert keyboard_at < index_of(telegram, "setMessageReaction")


async def test_a_group_without_reactions_is_not_asked_again(telegram, segmind, bot, caplog):
    telegram.group(GROUP, "Family")
    telegram.user(ASKER, "Ann")
    telegram.set_available_reactions(GROUP, [])  # the admins turned reactions off
    caplog.set_level(logging.INFO)
    for _ in range(2):
        photo = telegram.send_photo(GROUP, ASKER, caption="/warmth")
        await telegram.wait_for_call(
            "sendMessage",
            chat_id=GROUP,
            where=lambda c, photo=photo: reply_target(c.params) == photo["message_id"],
        )
    await settled(bot, telegram)
    (refused,) = telegram.calls_of("setMessageReaction", chat_id=GROUP)
    assert refused.response["description"] == "Bad Request: REACTION_INVALID"
    assert telegram.reactions(GROUP, photo["message_id"]) == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("code", "description"),
    [
        (400, "Bad Request: message to react not found"),
        (400, "Bad Request: REACTION_INVALID"),
        (403, "Forbidden: bot was blocked by the user"),
    ],
    ids=["photo-gone", "reaction-invalid", "blocked"],
)
async def test_a_refused_reaction_changes_nothing_else(
    telegram, segmind, bot, database, caplog, code, description
):
    telegram.private_chat(USER)
    telegram.fail_next("setMessageReaction", error_code=code, description=description)
    caplog.set_level(logging.INFO)
    _, keyboard = await send_photo_get_keyboard(telegram)
    (refused,) = await telegram.wait_for_call("setMessageReaction", chat_id=USER)
    assert not refused.ok
    await generate(telegram, keyboard)
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    await wait_until(lambda: ledger(database)[0]["state"] == "delivered", what="delivered")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_the_status_goes_queued_making_sending_then_a_summary(telegram, segmind, bot):
    telegram.private_chat(USER)
    segmind.processing_seconds = 0.5  # a few polls while it is made
    segmind.video_chunk_delay = 0.5  # and a slow download: "sending" is worth saying
    photo, keyboard = await send_photo_get_keyboard(telegram)
    await generate(telegram, keyboard)
    (video,) = await telegram.wait_for_call("sendVideo", chat_id=USER)
    status_id = keyboard["message_id"]
    await telegram.wait_for_call(
        "editMessageText", chat_id=USER, where=lambda c: c.params["text"].startswith("✅")
    )
    await settled(bot, telegram)

    edits = [
        call
        for call in telegram.calls_of("editMessageText", chat_id=USER)
        if int(call.params["message_id"]) == status_id
    ]
    shown = [call.params["text"] for call in edits]
    assert all(call.ok for call in edits)  # never "message is not modified"
    assert all(a != b for a, b in zip(shown, shown[1:], strict=False))
    assert shown[0] == "⏳ Waiting for its turn"
    assert "🎬 Making your video" in shown
    assert shown[-2:] == ["📤 Sending your video…", shown[-1]]
    assert re.fullmatch(r"✅ Ready: 540p, 5 s · made in \d+ s", shown[-1])
    assert len(edits) <= max_status_edits(DEADLINE)
    # Sending went before the video, the summary after it; the summary has no buttons.
    sending_at = index_of(telegram, "editMessageText", lambda c: c.params["text"][0] == "📤")
    video_at = index_of(telegram, "sendVideo")
    assert (
        sending_at
        < video_at
        < index_of(telegram, "editMessageText", lambda c: "✅" in c.params["text"])
    )
    status = telegram.message(USER, status_id)
    assert status["text"] == shown[-1]
    assert "reply_markup" not in status
    assert reply_target(video.params) == photo["message_id"]


async def test_the_video_says_how_big_and_how_long_it_is(telegram, segmind, bot, database):
    telegram.private_chat(USER)
    _, keyboard = await send_photo_get_keyboard(telegram)
    telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, "720p"))
    await telegram.wait_for_call("editMessageText", chat_id=USER)
    current = telegram.message(USER, keyboard["message_id"])
    await generate(telegram, current)
    (video,) = await telegram.wait_for_call("sendVideo", chat_id=USER)
    params = video.params
    assert (params["width"], params["height"], params["duration"]) == (1280, 720, 5)
    assert str(params["supports_streaming"]).lower() == "true"
    sent = video.response["result"]["video"]
    assert (sent["width"], sent["height"], sent["duration"]) == (1280, 720, 5)


async def test_a_damaged_video_goes_without_its_size(telegram, segmind, bot, database):
    telegram.private_chat(USER)
    segmind.video_kind = "damaged"
    _, keyboard = await send_photo_get_keyboard(telegram)
    await generate(telegram, keyboard)
    (video,) = await telegram.wait_for_call("sendVideo", chat_id=USER)
    assert video.ok
    assert not {"width", "height", "duration"} & set(video.params)
    assert str(video.params["supports_streaming"]).lower() == "true"
    await wait_until(lambda: ledger(database)[0]["state"] == "delivered", what="delivered")


# -- the messenger against the fake: what a restart or a deleted message leaves ----------


@pytest.fixture
async def messenger_and_job(telegram, tmp_path, monkeypatch):
    monkeypatch.setattr(pacing, "PRIVATE_CHAT_GAP", 0.0)  # the pace is not the point here
    telegram.private_chat(USER)
    bot = paced_bot(telegram)
    store = SqliteLedger(tmp_path / "ledger.sqlite3")
    await bot.initialize()
    await store.open()
    draft, _ = await store.create_draft(new_job(chat_id=USER, user_id=USER), VideoOptions())
    status = await bot.send_message(USER, "keyboard")
    await store.set_keyboard_message(draft.id, status.message_id)
    job = await store.get(draft.id)
    try:
        yield bot, job
    finally:
        await store.close()
        await shut_down(bot)


def paced_bot(telegram, bot_class: type[ExtBot] = ExtBot) -> ExtBot:
    """A bot on the fake Telegram behind the bot's own rate limiter, as the messenger has."""
    return bot_class(
        TEST_TOKEN,
        base_url=telegram.api_url,
        base_file_url=telegram.file_url,
        rate_limiter=PriorityRateLimiter(),
    )


async def shut_down(bot: ExtBot) -> None:
    await bot.shutdown()
    assert bot.rate_limiter is not None
    await bot.rate_limiter.shutdown()


def fresh_messenger(bot) -> TelegramMessenger:
    """A messenger that remembers nothing (a restarted process)."""
    return TelegramMessenger(bot, frozenset(), ChatPacer())


async def test_after_a_restart_the_same_status_again_is_harmless(telegram, messenger_and_job):
    bot, job = messenger_and_job
    making = Status(Progress.PROCESSING, 20, 50)
    assert await fresh_messenger(bot).show_progress(job, making)
    assert await fresh_messenger(bot).show_progress(job, making)  # restarted: forgot it
    first, again = telegram.calls_of("editMessageText", chat_id=USER)
    assert first.ok
    assert again.response["description"].startswith("Bad Request: message is not modified")
    text = texts.progress(texts.FALLBACK_LANGUAGE, making, job.options)
    assert telegram.message(USER, job.keyboard_message_id)["text"] == text
    assert text == "🎬 Making your video · 20 s so far · usually about 50 s"


async def test_a_deleted_status_message_is_harmless(telegram, messenger_and_job):
    bot, job = messenger_and_job
    telegram.delete_message(USER, job.keyboard_message_id)
    messenger = fresh_messenger(bot)
    assert await messenger.show_progress(job, Status(Progress.QUEUED))
    assert await messenger.show_progress(job, Status(Progress.DONE, 52))
    edits = telegram.calls_of("editMessageText", chat_id=USER)
    assert [call.response["description"] for call in edits] == [
        "Bad Request: message to edit not found"
    ] * 2


async def test_a_stop_that_comes_as_a_status_edit_is_answered_still_stops(
    telegram, messenger_and_job
):
    """Tracker.stop() cancels each job task and waits for it. One whose status edit was
    answered just as the cancel came used to carry on: Python 3.11's ``asyncio.wait_for``
    returns the answer and drops the cancel. The job then slept until its next step and the
    stop waited for it for ever (the restart test that hung at pytest's 60 s limit)."""
    _, job = messenger_and_job
    showing: asyncio.Task[None] | None = None

    class StoppedAsItAnswers(ExtBot):
        async def edit_message_text(self, *args, **kwargs):
            message = await super().edit_message_text(*args, **kwargs)
            assert showing is not None
            asyncio.get_running_loop().call_soon(showing.cancel)  # the stop, with the answer
            return message

    bot = paced_bot(telegram, StoppedAsItAnswers)
    await bot.initialize()
    messenger = fresh_messenger(bot)

    async def drive() -> None:
        await messenger.show_progress(job, Status(Progress.QUEUED))
        await asyncio.Event().wait()  # the job's sleep until its next step

    showing = asyncio.create_task(drive())
    try:
        # A bound on the failure only: a cancel that is not lost ends it at once.
        await asyncio.wait({showing}, timeout=10)
        assert showing.cancelled()
        (edit,) = telegram.calls_of("editMessageText", chat_id=USER)
        assert edit.ok  # the edit was answered before the cancel
    finally:
        showing.cancel()
        await shut_down(bot)


def test_the_status_texts():
    options = VideoOptions(quality="720p", duration=8)
    lang = texts.FALLBACK_LANGUAGE

    def say(status: Status) -> str:
        return texts.progress(lang, status, options)

    assert say(Status(Progress.QUEUED, None, 50)) == "⏳ Waiting for its turn · usually about 50 s"
    assert say(Status(Progress.PROCESSING)) == "🎬 Making your video"
    assert say(Status(Progress.PROCESSING, 120, 150)) == (
        "🎬 Making your video · 2 min so far · usually about 2 min"
    )
    assert say(Status(Progress.SENDING)) == "📤 Sending your video…"
    assert say(Status(Progress.DONE, 61)) == "✅ Ready: 720p, 8 s · made in 61 s"
    assert say(Status(Progress.DONE, 200)) == "✅ Ready: 720p, 8 s · made in 3 min"
    assert all("\n" not in say(Status(p, 600, 600)) for p in Progress)  # one line each
