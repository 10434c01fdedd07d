"""Issue 5: groups and forum topics — the bot acts only when asked, and only for the asker."""

from __future__ import annotations

import pytest

from bot.i18n import texts
from tests.conftest import ledger, running, settled, wait_until
from tests.fakes.telegram import BOT_USERNAME
from tests.test_private_flow import button_data, keyboard_labels, reply_target

GROUP = -1001234567
ASKER = 801
OTHER = 802


@pytest.fixture
def group(telegram):
    telegram.group(GROUP, "Family", supergroup=True)
    telegram.user(ASKER, "Ann")
    telegram.user(OTHER, "Bob")
    return GROUP


async def keyboard_for(telegram, photo_message_id, chat_id=GROUP):
    (call,) = await telegram.wait_for_call(
        "sendMessage",
        chat_id=chat_id,
        where=lambda c: "reply_markup" in c.params and reply_target(c.params) == photo_message_id,
    )
    return call


async def test_plain_photos_and_chatter_are_ignored(telegram, segmind, bot, group, database):
    telegram.send_photo(GROUP, ASKER)
    telegram.send_text(GROUP, OTHER, "what a lovely photo")
    telegram.send_text(GROUP, OTHER, "/warmth@someone_else_bot")
    # A marker the bot does answer, so we know it has seen everything before it.
    telegram.send_text(GROUP, ASKER, "/help")
    (call,) = await telegram.wait_for_call("sendMessage", chat_id=GROUP)
    assert call.params["text"] == texts.group_help("en")
    await settled(bot, telegram)  # every update handled: an answer would have been sent
    assert len(telegram.calls_of("sendMessage", chat_id=GROUP)) == 1
    assert ledger(database) == []


@pytest.mark.parametrize("command", ["/warmth", f"/warmth@{BOT_USERNAME}"])
async def test_warmth_as_a_photo_caption_offers_the_keyboard(
    telegram, segmind, bot, group, command
):
    photo = telegram.send_photo(GROUP, ASKER, caption=command)
    call = await keyboard_for(telegram, photo["message_id"])
    assert keyboard_labels(call.response["result"])[0] == ["360p", "✅ 540p", "720p", "1080p"]


async def test_warmth_as_the_caption_of_an_image_file(telegram, segmind, bot, group):
    document = telegram.send_document(GROUP, ASKER, caption="/warmth")
    await keyboard_for(telegram, document["message_id"])


async def test_warmth_replying_to_a_photo_makes_the_video_reply_to_that_photo(
    telegram, segmind, bot, group, database
):
    photo = telegram.send_photo(GROUP, OTHER)  # someone else's photo
    telegram.send_text(GROUP, ASKER, "/warmth", reply_to=photo["message_id"])
    call = await keyboard_for(telegram, photo["message_id"])
    keyboard = call.response["result"]
    telegram.press_button(GROUP, ASKER, keyboard["message_id"], button_data(keyboard, "Generate"))
    (video,) = await telegram.wait_for_call("sendVideo", chat_id=GROUP, timeout=15)
    assert reply_target(video.params) == photo["message_id"]
    await wait_until(lambda: ledger(database)[0]["state"] == "delivered")
    (job,) = ledger(database)
    assert job["user_id"] == ASKER


async def test_warmth_without_a_photo_gets_a_one_line_hint(
    telegram, segmind, bot, group, database
):
    message = telegram.send_text(GROUP, ASKER, "/warmth")
    (call,) = await telegram.wait_for_call("sendMessage", chat_id=GROUP)
    assert call.params["text"] == texts.group_needs_photo("en")
    assert reply_target(call.params) == message["message_id"]
    assert ledger(database) == []


async def test_only_the_asker_may_press_the_buttons(telegram, segmind, bot, group, database):
    photo = telegram.send_photo(GROUP, ASKER, caption="/warmth")
    keyboard = (await keyboard_for(telegram, photo["message_id"])).response["result"]
    before = telegram.message(GROUP, keyboard["message_id"])
    queries = [
        telegram.press_button(GROUP, OTHER, keyboard["message_id"], button_data(keyboard, label))
        for label in ("720p", "8 s", "Generate")
    ]
    await wait_until(lambda: all(q in telegram.callback_answers for q in queries))
    for query in queries:
        assert telegram.callback_answers[query]["text"] == texts.answer_not_yours("en")
    assert telegram.message(GROUP, keyboard["message_id"]) == before
    assert telegram.calls_of("editMessageText", chat_id=GROUP) == []
    assert segmind.submits == []
    assert ledger(database)[0]["state"] == "draft"
    # The asker still can.
    telegram.press_button(GROUP, ASKER, keyboard["message_id"], button_data(keyboard, "Generate"))
    await telegram.wait_for_call("sendVideo", chat_id=GROUP, timeout=15)


async def test_in_a_forum_topic_every_message_stays_in_the_topic(
    telegram, segmind, make_settings, database
):
    forum = -1009876543
    topic = 77
    telegram.group(forum, "Family forum", supergroup=True, forum=True)
    segmind.fail_next_submit(429, retry_after=1)  # an error message, too, must stay put
    async with running(make_settings()):
        photo = telegram.send_photo(forum, ASKER, caption="/warmth", thread_id=topic)
        keyboard = (await keyboard_for(telegram, photo["message_id"], forum)).response["result"]
        telegram.press_button(
            forum, ASKER, keyboard["message_id"], button_data(keyboard, "Generate")
        )
        (notice,) = await telegram.wait_for_call(
            "sendMessage", chat_id=forum, where=lambda c: "busy" in c.params["text"]
        )
        message = notice.response["result"]
        telegram.press_button(
            forum, ASKER, message["message_id"], button_data(message, "Try again")
        )
        await telegram.wait_for_call("sendVideo", chat_id=forum, timeout=15)
        telegram.send_text(forum, ASKER, "/warmth", thread_id=topic)  # no photo: the hint
        await telegram.wait_for_call(
            "sendMessage",
            chat_id=forum,
            where=lambda c: c.params["text"] == texts.group_needs_photo("en"),
        )
    sends = [
        c
        for c in telegram.calls
        if c.method in ("sendMessage", "sendVideo", "sendChatAction") and c.chat_id == forum
    ]
    assert len(sends) >= 5
    for call in sends:
        assert int(call.params.get("message_thread_id", 0)) == topic, call


@pytest.mark.real_chat_pace
async def test_group_status_updates_stay_within_telegrams_group_pace(
    telegram, segmind, bot, group, database
):
    segmind.processing_seconds = 1.0
    photos = [telegram.send_photo(GROUP, ASKER, caption="/warmth") for _ in range(2)]
    for photo in photos:
        keyboard = (await keyboard_for(telegram, photo["message_id"])).response["result"]
        telegram.press_button(
            GROUP, ASKER, keyboard["message_id"], button_data(keyboard, "Generate")
        )
    await telegram.wait_for_call("sendVideo", chat_id=GROUP, count=2, timeout=30)
    times = telegram.send_times(GROUP)
    # Keyboards answer presses at once; what the bot sends on its own (status edits,
    # videos) keeps at least the group gap apart.
    own = [
        c.at
        for c in telegram.calls
        if c.chat_id == GROUP
        and c.ok
        and c.method in ("sendVideo", "editMessageText")
        and not c.params.get("reply_markup")
    ]
    gaps = [b - a for a, b in zip(own, own[1:], strict=False)]
    assert all(gap >= 2.9 for gap in gaps), gaps
    assert len(times) <= 20


async def test_the_bot_removed_from_the_group_mid_job_ends_it_quietly(
    telegram, segmind, bot, group, database
):
    telegram.private_chat(OTHER)
    segmind.processing_seconds = 0.6
    photo = telegram.send_photo(GROUP, ASKER, caption="/warmth")
    keyboard = (await keyboard_for(telegram, photo["message_id"])).response["result"]
    telegram.press_button(GROUP, ASKER, keyboard["message_id"], button_data(keyboard, "Generate"))
    await wait_until(lambda: segmind.jobs, what="submitted")
    telegram.block_chat(GROUP)  # kicked: every send there is now 403
    # Another chat goes on.
    private_photo = telegram.send_photo(OTHER, OTHER)
    private_keyboard = (await keyboard_for(telegram, private_photo["message_id"], OTHER)).response[
        "result"
    ]
    telegram.press_button(
        OTHER, OTHER, private_keyboard["message_id"], button_data(private_keyboard, "Generate")
    )
    await telegram.wait_for_call("sendVideo", chat_id=OTHER, timeout=15)
    await wait_until(
        lambda: ledger(database)[0]["state"] == "undeliverable", timeout=15, what="undeliverable"
    )
    await settled(bot, telegram)  # no job task left that could try the group again
    refused = [c for c in telegram.calls if c.chat_id == GROUP and not c.ok]
    assert len(refused) == 1
    assert all(job["notified_at"] for job in ledger(database))
