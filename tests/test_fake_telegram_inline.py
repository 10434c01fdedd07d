"""The fake Bot API's inline mode, proven with the real python-telegram-bot: getMe's
``supports_inline_queries``, inline_query updates, answerInlineQuery's checks, and
``switch_inline_query_chosen_chat`` buttons."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InlineQueryResultCachedVideo,
    InlineQueryResultsButton,
    InputFile,
    SwitchInlineQueryChosenChat,
)
from telegram.error import BadRequest

from tests.fakes.telegram import MAX_INLINE_RESULTS, TEST_TOKEN, FakeTelegram

USER = 501
FRIEND = 502


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(
        TEST_TOKEN, base_url=f"{fake.url}/bot", base_file_url=f"{fake.url}/file/bot"
    ) as client:
        yield client


def share_button(query: str = "#1") -> InlineKeyboardMarkup:
    chosen = SwitchInlineQueryChosenChat(query=query, allow_user_chats=True)
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton("Share", switch_inline_query_chosen_chat=chosen)]]
    )


async def a_video(bot: Bot, fake: FakeTelegram) -> str:
    fake.private_chat(USER)
    sent = await bot.send_video(USER, InputFile(io.BytesIO(b"\0" * 1000), filename="v.mp4"))
    assert sent.video is not None
    return sent.video.file_id


async def an_inline_query(bot: Bot, fake: FakeTelegram, text: str = "") -> str:
    query_id = fake.send_inline_query(USER, text)
    (update,) = await bot.get_updates(timeout=0)
    await bot.get_updates(offset=update.update_id + 1, timeout=0)
    assert update.inline_query is not None
    assert update.inline_query.id == query_id
    assert update.inline_query.query == text
    assert update.inline_query.from_user.id == USER
    return query_id


def cached(file_id: str, result_id: str = "v1") -> InlineQueryResultCachedVideo:
    return InlineQueryResultCachedVideo(result_id, file_id, title="A video")


async def test_get_me_says_whether_inline_mode_is_on(fake, bot):
    assert (await bot.get_me()).supports_inline_queries is False
    fake.inline_mode = True
    assert (await bot.get_me()).supports_inline_queries is True


async def test_a_chosen_chat_button_needs_inline_mode(fake, bot):
    fake.private_chat(USER)
    with pytest.raises(BadRequest, match="(?i)BUTTON_TYPE_INVALID"):
        await bot.send_message(USER, "hi", reply_markup=share_button())
    fake.inline_mode = True
    sent = await bot.send_message(USER, "hi", reply_markup=share_button("#7"))
    (button,) = fake.message(USER, sent.message_id)["reply_markup"]["inline_keyboard"][0]
    assert button["switch_inline_query_chosen_chat"]["query"] == "#7"


async def test_a_button_must_do_exactly_one_thing(fake, bot):
    fake.private_chat(USER)
    both = InlineKeyboardMarkup(
        [[InlineKeyboardButton("x", callback_data="x", url="https://example.org")]]
    )
    with pytest.raises(BadRequest, match="(?i)can't parse inline keyboard button"):
        await bot.send_message(USER, "hi", reply_markup=both)


async def test_an_inline_query_is_answered_once_with_cached_videos(fake, bot):
    file_id = await a_video(bot, fake)
    query_id = await an_inline_query(bot, fake, "#3")
    assert await bot.answer_inline_query(
        query_id, [cached(file_id)], cache_time=5, is_personal=True
    )
    answer = fake.inline_answers[query_id]
    assert answer["results"][0]["video_file_id"] == file_id
    assert answer["is_personal"] is True
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_inline_query(query_id, [])
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_inline_query("123", [])

    # The user picks it: it is posted in the chosen chat as theirs, via the bot.
    fake.private_chat(FRIEND)
    posted = fake.choose_inline_result(query_id, "v1", FRIEND)
    assert posted["video"]["file_id"] == file_id
    assert posted["via_bot"]["username"] == (await bot.get_me()).username
    assert posted["from"]["id"] == USER


async def test_an_empty_answer_may_carry_a_button_to_the_bot(fake, bot):
    query_id = await an_inline_query(bot, fake)
    button = InlineQueryResultsButton(text="Make one", start_parameter="share")
    assert await bot.answer_inline_query(query_id, [], button=button, cache_time=1)
    assert fake.inline_answers[query_id]["button"]["start_parameter"] == "share"

    query_id = await an_inline_query(bot, fake)
    bad = InlineQueryResultsButton(text="Make one", start_parameter="no spaces")
    with pytest.raises(BadRequest, match="(?i)START_PARAM_INVALID"):
        await bot.answer_inline_query(query_id, [], button=bad)


@pytest.mark.parametrize(
    ("results", "error"),
    [
        (lambda f: [cached(f, str(i)) for i in range(MAX_INLINE_RESULTS + 1)], "RESULTS_TOO_MUCH"),
        (lambda f: [cached(f, "x" * 65)], "RESULT_ID_INVALID"),
        (lambda f: [cached(f, "same"), cached(f, "same")], "RESULT_ID_DUPLICATE"),
        (lambda f: [cached("no-such-file")], "wrong file identifier"),
    ],
    ids=["51 results", "a 65-byte id", "duplicate ids", "unknown file id"],
)
async def test_answer_inline_query_checks_its_results(fake, bot, results, error):
    file_id = await a_video(bot, fake)
    query_id = await an_inline_query(bot, fake)
    with pytest.raises(BadRequest, match=f"(?i){error}"):
        await bot.answer_inline_query(query_id, results(file_id))
    assert query_id not in fake.inline_answers
    # A refused answer leaves the query open: a correct one still goes through.
    assert await bot.answer_inline_query(query_id, [cached(file_id)])


async def test_a_bot_that_does_not_ask_for_inline_queries_never_gets_them(fake, bot):
    fake.send_inline_query(USER, "")
    fake.send_text(USER, USER, "hello")
    updates = await bot.get_updates(timeout=0, allowed_updates=["message"])
    assert [("message" in u.to_dict()) for u in updates] == [True]
