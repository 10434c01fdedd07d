"""The fake Bot API, proven with the real python-telegram-bot (``telegram.Bot``/Application)."""

from __future__ import annotations

import asyncio
import datetime as dtm
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from telegram import (
    Bot,
    BotCommandScopeAllPrivateChats,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    LabeledPrice,
    Message,
    ReplyParameters,
    TransactionPartnerUser,
    Update,
)
from telegram.constants import ChatAction
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.ext import (
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    PreCheckoutQueryHandler,
    filters,
)

from tests.conftest import wait_until
from tests.fakes.telegram import (
    BOT_ID,
    BOT_USERNAME,
    MAX_UPLOAD_BYTES,
    TEST_TOKEN,
    Call,
    FakeTelegram,
    PaymentResult,
    UploadedFile,
)

USER = 501
GROUP = -1001234


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    yield server
    await server.stop()


def make_bot(fake: FakeTelegram, token: str = TEST_TOKEN) -> Bot:
    return Bot(token, base_url=f"{fake.url}/bot", base_file_url=f"{fake.url}/file/bot")


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with make_bot(fake) as client:
        yield client


@pytest.fixture
def timedeltas(monkeypatch: pytest.MonkeyPatch) -> None:
    """PTB 22 warns on int-valued durations (RetryAfter.retry_after) unless opted in."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


def keyboard(*labels: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(label, callback_data=label) for label in labels]]
    )


# --------------------------------------------------------------------------- basics


async def test_get_me_and_bot_setup(fake, bot):
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (BOT_ID, BOT_USERNAME, True)
    assert me.can_join_groups
    assert not me.can_read_all_group_messages
    assert await bot.delete_webhook(drop_pending_updates=False)
    assert await bot.set_my_commands([("warmth", "Animate a photo")])
    assert [c.command for c in await bot.get_my_commands()] == ["warmth"]
    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == ()
    assert [c.method for c in fake.calls][:2] == ["getMe", "getMe"]


async def test_menus_and_descriptions_are_kept_per_language_and_scope(fake, bot):
    private = BotCommandScopeAllPrivateChats()
    assert await bot.set_my_commands([("start", "Start")])
    assert await bot.set_my_commands([("start", "Começar")], scope=private, language_code="pt")
    assert await bot.set_my_commands([("start", "Empezar")], scope=private, language_code="es")
    pt = await bot.get_my_commands(scope=private, language_code="pt")
    assert [(c.command, c.description) for c in pt] == [("start", "Começar")]
    assert [c.description for c in await bot.get_my_commands()] == ["Start"]
    assert await bot.get_my_commands(scope=private) == ()  # no menu without a language there
    assert fake.menus[("all_private_chats", "es")][0]["description"] == "Empezar"
    assert await bot.delete_my_commands(scope=private, language_code="es")
    assert ("all_private_chats", "es") not in fake.menus

    assert await bot.set_my_description("Hello")
    assert await bot.set_my_description("Olá", language_code="pt")
    assert await bot.set_my_short_description("Oi", language_code="pt")
    assert (await bot.get_my_description(language_code="pt")).description == "Olá"
    assert (await bot.get_my_description(language_code="ru")).description == "Hello"
    assert (await bot.get_my_short_description(language_code="pt")).short_description == "Oi"
    assert (fake.descriptions, fake.short_descriptions) == (
        {"": "Hello", "pt": "Olá"},
        {"pt": "Oi"},
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda bot: bot.set_my_description("x" * 513), "description is too long"),
        (lambda bot: bot.set_my_short_description("x" * 121), "short description is too long"),
        (lambda bot: bot.set_my_commands([("start", "x" * 257)]), "must be 1-256 characters"),
        (lambda bot: bot.set_my_commands([("start", "")]), "must be 1-256 characters"),
        (lambda bot: bot.set_my_commands([("Start", "Start")]), "BOT_COMMAND_INVALID"),
        (lambda bot: bot.set_my_commands([("s" * 33, "Start")]), "BOT_COMMAND_INVALID"),
        (lambda bot: bot.set_my_commands([(f"c{i}", "x") for i in range(101)]), "too many"),
        (
            lambda bot: bot.set_my_commands([("start", "Start")], language_code="pt_BR"),
            "LANGUAGE_CODE_INVALID",
        ),
        (lambda bot: bot.set_my_description("Olá", language_code="pt-br"), "LANGUAGE_CODE"),
    ],
)
async def test_menus_and_descriptions_beyond_the_bot_apis_limits_are_refused(
    fake, bot, call, message
):
    with pytest.raises(BadRequest, match=f"(?i){message}"):  # PTB capitalises it
        await call(bot)
    assert fake.menus == {}
    assert fake.descriptions == fake.short_descriptions == {}
    description = "x" * 512
    assert await bot.set_my_description(description)  # exactly at the limits is fine
    assert await bot.set_my_short_description("x" * 120)
    assert await bot.set_my_commands([("s" * 32, "x" * 256)])


async def test_wrong_token_is_unauthorized_and_unknown_method_not_found(fake):
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{fake.url}/bot{TEST_TOKEN}/noSuchMethod")
        assert response.status_code == 404
        assert response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
        response = await client.get(f"{fake.url}/bot{TEST_TOKEN}/GETME")  # any case
        assert response.json()["result"]["id"] == BOT_ID
        response = await client.post(f"{fake.url}/bot1:wrong/getMe")
        assert response.status_code == 401
        assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    with pytest.raises(InvalidToken):
        async with make_bot(fake, "654321:WRONG-token_abcdefghijklmnopqrstuvwxyz"):
            pass


async def test_json_and_query_bodies_are_understood(fake):
    fake.private_chat(USER)
    markup = {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{fake.url}/bot{TEST_TOKEN}/sendMessage",
            json={"chat_id": USER, "text": "123", "reply_markup": markup},
        )
        assert response.json()["result"]["reply_markup"] == markup
        response = await client.get(
            f"{fake.url}/bot{TEST_TOKEN}/sendMessage", params={"chat_id": USER, "text": "42"}
        )
        assert response.json()["result"]["text"] == "42"
    assert [c.params["text"] for c in fake.calls_of("sendmessage", chat_id=USER)] == ["123", "42"]


# --------------------------------------------------------------------------- updates


async def test_updates_stay_until_confirmed_by_offset(fake, bot):
    fake.private_chat(USER)
    first = fake.send_text(USER, USER, "/start")
    fake.send_text(USER, USER, "hello @someone_else")
    updates = await bot.get_updates(timeout=0)
    assert [u.message.text for u in updates] == ["/start", "hello @someone_else"]
    assert updates[0].message.message_id == first["message_id"]
    assert updates[1].update_id == updates[0].update_id + 1
    command = updates[0].message.entities[0]
    assert (command.type, command.offset, command.length) == ("bot_command", 0, 6)
    assert updates[1].message.entities[0].type == "mention"

    # Not confirmed: the same updates again (what a restarted process gets).
    again = await bot.get_updates(timeout=0)
    assert [u.update_id for u in again] == [u.update_id for u in updates]
    assert fake.pending_updates() == 2

    # An offset confirms everything below it.
    last = updates[-1].update_id
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=0) == (updates[1],)
    assert await bot.get_updates(offset=last + 1, timeout=0) == ()
    assert fake.pending_updates() == 0

    # Redelivery: the same update_id once more, even though it was confirmed.
    fake.redeliver_update(updates[0].update_id)
    redelivered = await bot.get_updates(offset=last + 1, timeout=0)
    assert [u.update_id for u in redelivered] == [updates[0].update_id]
    assert redelivered[0].message.text == "/start"
    assert await bot.get_updates(offset=last + 1, timeout=0) == ()

    # limit and negative offsets.
    for n in range(5):
        fake.send_text(USER, USER, f"m{n}")
    assert [u.message.text for u in await bot.get_updates(limit=2, timeout=0)] == ["m0", "m1"]
    assert [u.message.text for u in await bot.get_updates(offset=-1, timeout=0)] == ["m4"]
    assert fake.pending_updates() == 1


async def test_allowed_updates_filter(fake, bot):
    fake.private_chat(USER)
    fake.send_text(USER, USER, "hi")
    query_id = fake.press_button(USER, USER, 77, "x")
    updates = await bot.get_updates(timeout=0, allowed_updates=[Update.CALLBACK_QUERY])
    assert [u.callback_query.id for u in updates] == [query_id]


async def test_long_poll_wakes_on_update_and_times_out(fake, bot):
    fake.private_chat(USER)
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=5, read_timeout=10))
    # Parked at the fake: it has no update to give and waits (a quick answer never parks).
    await wait_until(lambda: fake.long_polling, what="the long poll to park")
    assert not poll.done()
    fake.send_text(USER, USER, "wake up")
    updates = await asyncio.wait_for(poll, 2)
    assert [u.message.text for u in updates] == ["wake up"]
    assert time.monotonic() - started < 2

    started = time.monotonic()
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=1) == ()
    assert 0.9 < time.monotonic() - started < 3


async def test_stop_releases_a_long_poll():
    fake = FakeTelegram()
    await fake.start()
    async with make_bot(fake) as bot:
        poll = asyncio.create_task(bot.get_updates(timeout=30, read_timeout=40))
        await fake.wait_for_call("getMe")
        await wait_until(lambda: fake.long_polling, what="the long poll to park")
        started = time.monotonic()
        await fake.stop()
        assert await asyncio.wait_for(poll, 3) == ()
        assert time.monotonic() - started < 3


async def test_second_poller_conflicts(fake, bot):
    # Two processes polling one token (PTB's own getUpdates pool holds one connection).
    older = asyncio.create_task(bot.get_updates(timeout=5, read_timeout=10))
    await wait_until(lambda: fake.long_polling, what="the older poll to park")
    async with make_bot(fake) as second:
        # As on Telegram, the newer request wins and the older one ends with 409.
        newer = asyncio.create_task(second.get_updates(timeout=1, read_timeout=5))
        with pytest.raises(Conflict, match="terminated by other getUpdates request"):
            await asyncio.wait_for(older, 3)
        fake.send_text(USER, USER, "for the newer one")
        updates = await newer
        assert [u.message.text for u in updates if u.message] == ["for the newer one"]


# --------------------------------------------------------------------------- sending


async def test_send_message_replies_and_threads(fake, bot):
    fake.group(GROUP, forum=True)
    photo = fake.send_photo(GROUP, USER, caption="/warmth@warmth_test_bot", thread_id=7)
    assert photo["caption_entities"][0] == {"offset": 0, "length": 23, "type": "bot_command"}
    assert photo["is_topic_message"]
    assert photo["reply_to_message"]["forum_topic_created"]  # topic messages reply to its root

    sent = await bot.send_message(
        GROUP,
        "on it",
        reply_parameters=ReplyParameters(photo["message_id"]),
        message_thread_id=7,
        reply_markup=keyboard("a", "b"),
    )
    assert sent.reply_to_message.message_id == photo["message_id"]
    assert sent.message_thread_id == 7
    assert sent.is_topic_message
    assert sent.message_id == photo["message_id"] + 1  # one counter per chat
    assert sent.chat.type == "supergroup"
    assert sent.chat.is_forum
    assert sent.from_user.id == BOT_ID
    assert isinstance(sent.date, dtm.datetime)
    (state,) = fake.bot_messages(GROUP)
    assert state["reply_markup"]["inline_keyboard"][0][1]["callback_data"] == "b"
    call = fake.calls_of("sendMessage", chat_id=GROUP)[0]
    assert call.params["reply_parameters"] == {"message_id": photo["message_id"]}
    assert call.params["message_thread_id"] == 7  # form values arrive decoded


async def test_reply_to_a_deleted_message(fake, bot):
    fake.private_chat(USER)
    photo = fake.send_photo(USER, USER)
    fake.delete_message(USER, photo["message_id"])
    assert fake.message(USER, photo["message_id"]) is None

    lenient = ReplyParameters(photo["message_id"], allow_sending_without_reply=True)
    sent = await bot.send_message(USER, "done", reply_parameters=lenient)
    assert sent.reply_to_message is None

    with pytest.raises(BadRequest, match="(?i)message to be replied not found"):
        await bot.send_message(USER, "done", reply_parameters=ReplyParameters(photo["message_id"]))
    assert len(fake.bot_messages(USER)) == 1


async def test_text_validation(fake, bot):
    with pytest.raises(BadRequest, match="(?i)message text is empty"):
        await bot.send_message(USER, " ")
    with pytest.raises(BadRequest, match="(?i)message is too long"):
        await bot.send_message(USER, "x" * 4097)
    assert (await bot.send_message(USER, "x" * 4096)).text == "x" * 4096
    html = await bot.send_message(USER, "<b>bold</b> &amp; plain", parse_mode="HTML")
    assert html.text == "bold & plain"
    with pytest.raises(BadRequest, match="(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(USER, "x", reply_markup=keyboard("y" * 65))


async def test_blocked_chats_are_forbidden(fake, bot):
    fake.private_chat(USER)
    fake.group(GROUP)
    fake.block_chat(USER)
    fake.block_chat(GROUP)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(USER, "hi")
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_chat_action(USER, ChatAction.UPLOAD_VIDEO)
    with pytest.raises(Forbidden, match="bot was kicked from the supergroup chat"):
        await bot.send_message(GROUP, "hi")
    assert fake.bot_messages(USER) == []
    fake.unblock_chat(USER)
    assert await bot.send_chat_action(USER, ChatAction.UPLOAD_VIDEO)


async def test_fail_next_429_raises_retry_after(fake, bot, timedeltas):
    fake.private_chat(USER)
    fake.fail_next(
        "sendmessage",
        error_code=429,
        description="Too Many Requests: retry after 7",
        retry_after=7,
        chat_id=USER,
    )
    await bot.send_message(USER + 1, "another chat is not affected")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(USER, "hi")
    assert caught.value.retry_after == dtm.timedelta(seconds=7)
    (failed,) = [c for c in fake.calls_of("sendMessage", chat_id=USER) if not c.ok]
    assert failed.response == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 7",
        "parameters": {"retry_after": 7},
    }
    assert (await bot.send_message(USER, "hi")).text == "hi"  # consumed after `times`

    fake.fail_next("getFile", error_code=500, description="Internal Server Error", times=2)
    for _ in range(2):
        with pytest.raises(NetworkError, match="Internal Server Error"):
            await bot.get_file("whatever")
    with pytest.raises(BadRequest, match="(?i)invalid file_id"):
        await bot.get_file("whatever")


async def test_group_flood_limit(timedeltas):
    fake = FakeTelegram(flood_limits=True)
    await fake.start()
    try:
        async with make_bot(fake) as bot:
            fake.group(GROUP)
            for n in range(20):
                await bot.send_message(GROUP, f"m{n}")
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(GROUP, "one too many")
            delay = caught.value.retry_after
            assert isinstance(delay, dtm.timedelta)
            assert 55 <= delay.total_seconds() <= 60
            await bot.send_message(USER, "a private chat has its own limit")
            assert len(fake.send_times(GROUP)) == 20
            assert len(fake.send_times()) == 21
    finally:
        await fake.stop()


async def test_private_chat_flood_limit():
    """A burst of three, then about one a second: the fourth message at once is refused
    with the seconds until the burst's first leaves the window; other chats are not."""
    fake = FakeTelegram(flood_limits=True)
    await fake.start()
    try:
        async with make_bot(fake) as bot:
            fake.private_chat(USER)
            fake.private_chat(USER + 1)
            sent = await bot.send_message(USER, "m0")
            await bot.edit_message_text("m0 edited", USER, sent.message_id)  # edits count
            await bot.send_message(USER, "m2")
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(USER, "one too many")
            delay = caught.value.retry_after
            assert isinstance(delay, dtm.timedelta)
            assert 1 <= delay.total_seconds() <= 3
            (refused,) = [c for c in fake.calls if not c.ok]
            assert refused.response["parameters"] == {"retry_after": delay.total_seconds()}
            await bot.send_message(USER + 1, "another chat")
            assert len(fake.send_times(USER)) == 3
    finally:
        await fake.stop()


# --------------------------------------------------------------------------- editing & buttons


async def test_edits(fake, bot):
    fake.private_chat(USER)
    sent = await bot.send_message(USER, "pick", reply_markup=keyboard("a", "b"))
    with pytest.raises(BadRequest, match="(?i)message is not modified"):
        await bot.edit_message_text("pick", USER, sent.message_id, reply_markup=keyboard("a", "b"))
    edited = await bot.edit_message_text(
        "pick", USER, sent.message_id, reply_markup=keyboard("a", "c")
    )
    assert edited.reply_markup.inline_keyboard[0][1].text == "c"
    assert edited.edit_date is not None
    with pytest.raises(BadRequest, match="(?i)message is not modified"):
        await bot.edit_message_reply_markup(USER, sent.message_id, reply_markup=keyboard("a", "c"))

    # No reply_markup: the keyboard goes, as on Telegram.
    plain = await bot.edit_message_text("working", USER, sent.message_id)
    assert plain.reply_markup is None
    assert fake.message(USER, sent.message_id)["text"] == "working"
    assert "reply_markup" not in fake.bot_messages(USER)[0]

    with pytest.raises(BadRequest, match="(?i)message to edit not found"):
        await bot.edit_message_text("x", USER, 9999)
    user_message = fake.send_text(USER, USER, "mine")
    with pytest.raises(BadRequest, match="(?i)message can't be edited"):
        await bot.edit_message_text("x", USER, user_message["message_id"])

    assert await bot.delete_message(USER, sent.message_id)
    with pytest.raises(BadRequest, match="(?i)message to delete not found"):
        await bot.delete_message(USER, sent.message_id)
    assert fake.bot_messages(USER) == []


async def test_callback_answer_twice(fake, bot):
    fake.private_chat(USER)
    sent = await bot.send_message(USER, "pick", reply_markup=keyboard("a"))
    query_id = fake.press_button(USER, USER, sent.message_id, "a")
    (update,) = await bot.get_updates(timeout=0)
    query = update.callback_query
    assert (query.id, query.data, query.from_user.id) == (query_id, "a", USER)
    assert query.message.text == "pick"
    assert query.message.reply_markup.inline_keyboard[0][0].callback_data == "a"

    assert await query.answer("Noted", show_alert=True)
    assert fake.callback_answers[query_id]["text"] == "Noted"
    assert fake.callback_answers[query_id]["show_alert"] is True
    assert fake.calls_of("answerCallbackQuery", chat_id=USER)
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await query.answer("again")
    with pytest.raises(BadRequest, match="(?i)query ID is invalid"):
        await bot.answer_callback_query("12345")
    assert fake.callback_answers[query_id]["text"] == "Noted"


async def test_press_button_on_an_unknown_message(fake, bot):
    query_id = fake.press_button(USER, USER, 77, "old")
    (update,) = await bot.get_updates(timeout=0)
    assert update.callback_query.id == query_id
    assert update.callback_query.message.message_id == 77


# --------------------------------------------------------------------------- files


async def test_get_file_and_download(fake, bot):
    fake.private_chat(USER)
    photo = fake.send_photo(USER, USER, size_bytes=70_000)
    sizes = photo["photo"]
    assert [s["file_size"] for s in sizes] == sorted(s["file_size"] for s in sizes)
    assert len({s["file_id"] for s in sizes}) == 3
    largest = await bot.get_file(sizes[-1]["file_id"])
    assert largest.file_size == 70_000
    assert largest.file_path.startswith(f"{fake.url}/file/bot{TEST_TOKEN}/photos/file_")
    assert largest.file_path.endswith(".jpg")
    data = await largest.download_as_bytearray()
    assert len(data) == 70_000
    assert data.startswith(b"\xff\xd8")
    assert data.endswith(b"\xff\xd9")
    assert fake.downloads == [largest.file_path.rsplit(f"{TEST_TOKEN}/", 1)[1]]
    thumb = await bot.get_file(sizes[0]["file_id"])
    assert bytes(await thumb.download_as_bytearray()) != bytes(data[: thumb.file_size])

    document = fake.send_document(USER, USER, mime_type="image/png", file_name="me.png")
    png = await bot.get_file(document["document"]["file_id"])
    assert png.file_path.endswith(".png")
    assert "/documents/" in png.file_path
    assert (await png.download_as_bytearray())[:4] == b"\x89PNG"

    with pytest.raises(BadRequest, match="(?i)invalid file_id"):
        await bot.get_file("nope")
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{fake.url}/file/bot{TEST_TOKEN}/photos/nope.jpg")
        assert response.status_code == 404


async def test_big_document_is_too_big_for_get_file(fake, bot):
    document = fake.send_document(USER, USER, size_bytes=25 * 1024 * 1024)
    assert document["document"]["file_size"] == 25 * 1024 * 1024
    with pytest.raises(BadRequest, match="(?i)file is too big"):
        await bot.get_file(document["document"]["file_id"])


async def test_other_user_messages(fake, bot):
    fake.user(USER, "Bob", username="bob")
    fake.private_chat(USER)
    fake.send_sticker(USER, USER)
    fake.send_video_message(USER, USER)
    updates = await bot.get_updates(timeout=0)
    assert updates[0].message.sticker is not None
    assert updates[1].message.video.mime_type == "video/mp4"
    assert updates[1].message.from_user.username == "bob"
    assert updates[1].message.chat.first_name == "Bob"


# --------------------------------------------------------------------------- videos


async def test_send_video_streams_an_open_file(fake, bot, tmp_path: Path):
    fake.private_chat(USER)
    photo = fake.send_photo(USER, USER)
    payload = bytes(range(256)) * (3 * 1024 * 1024 // 256 + 7)
    path = tmp_path / "v.mp4"
    path.write_bytes(payload)
    with path.open("rb") as handle:
        message = await bot.send_video(
            USER,
            InputFile(handle, read_file_handle=False, filename="v.mp4"),
            caption="Here it is",
            supports_streaming=True,
            reply_parameters=ReplyParameters(
                photo["message_id"], allow_sending_without_reply=True
            ),
        )
    assert message.video.file_size == len(payload)
    assert message.video.mime_type == "video/mp4"
    assert message.caption == "Here it is"
    assert message.reply_to_message.message_id == photo["message_id"]
    (call,) = fake.calls_of("sendVideo", chat_id=USER)
    upload = call.params["video"]
    assert isinstance(upload, UploadedFile)
    assert upload.filename == "v.mp4"
    assert upload.content_type == "video/mp4"
    assert upload.size == len(payload)
    assert upload.sha256 == hashlib.sha256(payload).hexdigest()
    assert call.params["supports_streaming"] is True

    # The same video again by its file_id.
    again = await bot.send_video(USER, message.video.file_id)
    assert again.video.file_id == message.video.file_id
    with pytest.raises(BadRequest, match="(?i)wrong file identifier"):
        await bot.send_video(USER, "no-such-file-id")
    with pytest.raises(BadRequest, match="(?i)can't use file of type Photo as Video"):
        await bot.send_video(USER, photo["photo"][-1]["file_id"])


async def test_send_video_over_50_mb_is_refused(fake, bot, tmp_path: Path):
    path = tmp_path / "big.mp4"
    with path.open("wb") as handle:
        handle.truncate(MAX_UPLOAD_BYTES + 1)
    with path.open("rb") as handle, pytest.raises(NetworkError) as caught:
        await bot.send_video(
            USER, InputFile(handle, read_file_handle=False, filename="big.mp4"), write_timeout=60
        )
    # PTB has no class for 413: a plain NetworkError with Telegram's description.
    assert type(caught.value) is NetworkError
    assert not isinstance(caught.value, TimedOut)
    assert caught.value.message == "Request Entity Too Large"
    (call,) = fake.calls_of("sendVideo")
    assert call.response["error_code"] == 413
    assert fake.bot_messages(USER) == []


@pytest.fixture
async def media_server() -> AsyncIterator[str]:
    """A tiny HTTP server: /v.mp4 (1 MB), /moved (redirect to it), /big.mp4 (21 MB), /gone."""
    small = b"\x00\x00\x00\x18ftypmp42" + bytes(1024 * 1024)

    async def video(request: web.Request) -> web.Response:
        return web.Response(body=small, content_type="video/mp4")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/v.mp4")

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        await response.prepare(request)
        chunk = bytes(1024 * 1024)
        try:
            for _ in range(21):
                await response.write(chunk)
        except (ConnectionResetError, ConnectionError):
            pass
        return response

    app = web.Application()
    app.router.add_get("/v.mp4", video)
    app.router.add_get("/moved", moved)
    app.router.add_get("/big.mp4", big)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def test_send_video_by_url(fake, bot, media_server):
    message = await bot.send_video(USER, f"{media_server}/moved")
    assert message.video.file_size == 1024 * 1024 + 12
    assert fake.fetched_urls == [f"{media_server}/moved"]
    assert fake.calls_of("sendVideo")[0].params["video"] == f"{media_server}/moved"
    with pytest.raises(BadRequest, match="(?i)failed to get HTTP URL content"):
        await bot.send_video(USER, f"{media_server}/big.mp4")
    with pytest.raises(BadRequest, match="(?i)failed to get HTTP URL content"):
        await bot.send_video(USER, f"{media_server}/gone")
    assert len(fake.bot_messages(USER)) == 1


# --------------------------------------------------------------------------- helpers & e2e


async def test_wait_for_call_reports_what_it_saw(fake, bot):
    await bot.send_message(USER, "hello")
    calls = await fake.wait_for_call("sendmessage", chat_id=USER, where=lambda c: c.ok)
    assert isinstance(calls[0], Call)
    assert calls[0].result["text"] == "hello"
    with pytest.raises(AssertionError, match=r"(?s)waiting for 2 x sendMessage.*'hello'"):
        await fake.wait_for_call("sendMessage", count=2, timeout=0.2)


async def test_a_real_application_end_to_end(fake):
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text("Send me a photo", reply_markup=keyboard("ok"))

    async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer("Fine")
        await query.edit_message_text("Chosen")

    application = (
        ApplicationBuilder()
        .token(TEST_TOKEN)
        .base_url(f"{fake.url}/bot")
        .base_file_url(f"{fake.url}/file/bot")
        .build()
    )
    application.add_handler(CommandHandler("start", start))
    application.add_handler(CallbackQueryHandler(button))
    fake.private_chat(USER)
    fake.send_text(USER, USER, "/start")  # queued before the bot starts: still delivered
    async with application:
        await application.start()
        assert application.updater is not None
        await application.updater.start_polling(poll_interval=0, timeout=1)
        (call,) = await fake.wait_for_call("sendMessage", chat_id=USER)
        query_id = fake.press_button(USER, USER, call.result["message_id"], "ok")
        await fake.wait_for_call("editMessageText", chat_id=USER)
        await application.updater.stop()
        await application.stop()
    assert fake.callback_answers[query_id]["text"] == "Fine"
    assert [m["text"] for m in fake.bot_messages(USER)] == ["Chosen"]
    assert fake.pending_updates() == 0  # PTB confirmed everything on stop


# --------------------------------------------------------------------------- Stars payments


class Poller:
    """getUpdates as a bot polls: each call confirms the previous batch."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.offset: int | None = None

    async def __call__(self, **kwargs: object) -> tuple[Update, ...]:
        updates = await self.bot.get_updates(offset=self.offset, timeout=0, **kwargs)  # type: ignore[arg-type]
        if updates:
            self.offset = max(self.offset or 0, updates[-1].update_id + 1)
        return updates


@pytest.fixture
def poll(bot: Bot) -> Poller:
    return Poller(bot)


async def send_stars_invoice(
    bot: Bot, chat_id: int = USER, *, amount: int = 50, payload: str = "job-1", **kwargs: object
) -> Message:
    return await bot.send_invoice(
        chat_id,
        "Warm animation",
        "One animated photo",
        payload,
        "XTR",
        [LabeledPrice("Animation", amount)],
        **kwargs,  # type: ignore[arg-type]
    )


async def pay(
    fake: FakeTelegram, bot: Bot, poll: Poller, invoice: Message, user_id: int = USER
) -> PaymentResult:
    """A user pays, the bot says yes at once and gets its successful_payment message."""
    attempt = fake.pay_invoice(user_id, invoice)
    (update,) = await poll()
    assert update.pre_checkout_query is not None
    assert await bot.answer_pre_checkout_query(update.pre_checkout_query.id, ok=True)
    result = await attempt
    (update,) = await poll()
    assert update.message is not None
    assert update.message.successful_payment is not None
    assert update.message.successful_payment.telegram_payment_charge_id == result.charge_id
    return result


VALID_INVOICE = {
    "chat_id": USER,
    "title": "Warm animation",
    "description": "One animated photo",
    "payload": "job-1",
    "currency": "XTR",
    "prices": json.dumps([{"label": "Animation", "amount": 50}]),
}


async def test_send_stars_invoice(fake, bot, timedeltas):
    fake.group(GROUP, forum=True)
    photo = fake.send_photo(GROUP, USER, thread_id=7)
    message = await send_stars_invoice(
        bot,
        GROUP,
        payload="123",
        message_thread_id=7,
        reply_parameters=ReplyParameters(photo["message_id"]),
        reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("Pay 50", pay=True)]]),
    )
    invoice = message.invoice
    assert invoice is not None
    assert (invoice.title, invoice.description, invoice.start_parameter) == (
        "Warm animation",
        "One animated photo",
        "",
    )
    assert (invoice.currency, invoice.total_amount) == ("XTR", 50)
    assert message.message_thread_id == 7
    assert message.reply_to_message is not None
    assert message.reply_to_message.message_id == photo["message_id"]
    assert message.reply_markup is not None
    assert message.reply_markup.inline_keyboard[0][0].pay is True
    (call,) = fake.calls_of("sendInvoice", chat_id=GROUP)
    assert call.params["payload"] == "123"  # digits stay a string
    assert call.params["prices"] == [{"label": "Animation", "amount": 50}]
    assert "payload" not in call.result["invoice"]  # users never see it
    assert fake.message(GROUP, message.message_id)["invoice"]["total_amount"] == 50
    assert len(fake.send_times(GROUP)) == 1  # a send, under the flood limits

    # The chat rules of sendMessage hold.
    with pytest.raises(BadRequest, match="(?i)message to be replied not found"):
        await send_stars_invoice(bot, reply_parameters=ReplyParameters(9999))
    fake.fail_next("sendInvoice", error_code=429, description="Too Many Requests: retry after 3")
    with pytest.raises(RetryAfter):
        await send_stars_invoice(bot)
    fake.block_chat(USER)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await send_stars_invoice(bot)
    assert fake.bot_messages(USER) == []


async def test_invoice_limits_are_inclusive(fake, bot):
    message = await bot.send_invoice(
        USER,
        "t" * 32,
        "d" * 255,
        "\N{FIRE}" * 32,  # 128 bytes
        "XTR",
        [LabeledPrice("Everything", 10_000)],
        provider_token="",
    )
    assert message.invoice.total_amount == 10_000
    with pytest.raises(BadRequest, match="(?i)CURRENCY_TOTAL_AMOUNT_INVALID"):
        await bot.send_invoice(USER, "t", "d", "p", "XTR", [LabeledPrice("Too much", 10_001)])
    assert len(fake.bot_messages(USER)) == 1


@pytest.mark.parametrize(
    ("change", "description"),
    [
        ({"title": None}, 'parameter "title" is required'),
        ({"title": "x" * 33}, "invoice title must be at most 32 characters long"),
        ({"description": ""}, 'parameter "description" is required'),
        ({"description": "x" * 256}, "invoice description must be at most 255 characters long"),
        ({"payload": ""}, 'parameter "payload" is required'),
        ({"payload": "\N{LATIN SMALL LETTER E WITH ACUTE}" * 65}, "INVOICE_PAYLOAD_INVALID"),
        ({"currency": None}, 'parameter "currency" is required'),
        ({"currency": "USD"}, "PAYMENT_PROVIDER_INVALID"),
        ({"provider_token": "284685063:TEST:abc"}, "PAYMENT_PROVIDER_INVALID"),
        ({"prices": None}, 'parameter "prices" is required'),
        ({"prices": "[{"}, "can't parse prices JSON object"),
        ({"prices": "[]"}, "there must be at least one price"),
        (
            {"prices": '[{"label": "", "amount": 5}]'},
            "can't parse labeled price: LabeledPrice label must be non-empty",
        ),
        ({"prices": '[{"label": "A"}]'}, "can't parse labeled price: Can't find field \"amount\""),
        ({"prices": '[{"label": "A", "amount": 0}]'}, "total price must be positive"),
        ({"prices": '[{"label": "A", "amount": -5}]'}, "total price must be positive"),
        ({"prices": '[{"label": "A", "amount": 10001}]'}, "CURRENCY_TOTAL_AMOUNT_INVALID"),
        (
            {"prices": '[{"label": "A", "amount": 30}, {"label": "B", "amount": 20}]'},
            "STARS_INVOICE_INVALID",
        ),
        ({"max_tip_amount": "10"}, "STARS_INVOICE_INVALID"),
        (
            {"reply_markup": json.dumps({"inline_keyboard": [[{"text": "Go", "url": "x"}]]})},
            "REPLY_MARKUP_BUY_EMPTY",
        ),
    ],
)
async def test_invoice_validation(fake, change, description):
    params = {
        key: value for key, value in {**VALID_INVOICE, **change}.items() if value is not None
    }
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{fake.url}/bot{TEST_TOKEN}/sendInvoice", data=params)
    assert response.status_code == 400
    assert response.json() == {
        "ok": False,
        "error_code": 400,
        "description": f"Bad Request: {description}",
    }
    assert fake.bot_messages(USER) == []
    with pytest.raises(ValueError, match="has no invoice"):
        fake.pay_invoice(USER, 1, chat_id=USER)


async def test_pay_flow(fake, bot, poll):
    fake.private_chat(USER)
    invoice = await send_stars_invoice(bot, payload="123")
    attempt = fake.pay_invoice(USER, invoice)
    assert fake.pending_precheckouts == [attempt]
    assert not attempt.done()
    assert attempt.status == "pending"

    (update,) = await poll()
    query = update.pre_checkout_query
    assert query.id == attempt.query_id
    assert (query.from_user.id, query.currency, query.total_amount) == (USER, "XTR", 50)
    assert query.invoice_payload == "123"
    assert attempt.fetched_at is not None

    assert await bot.answer_pre_checkout_query(query.id, ok=True)
    result = await attempt
    assert result.paid
    assert not result.timed_out
    assert result.error_message is None
    assert result.charge_id.startswith("stx")
    assert attempt.status == "paid"
    assert fake.pending_precheckouts == []

    (update,) = await poll()
    message = update.message
    paid = message.successful_payment
    assert (paid.currency, paid.total_amount, paid.invoice_payload) == ("XTR", 50, "123")
    assert paid.telegram_payment_charge_id == result.charge_id
    assert paid.provider_payment_charge_id
    assert (message.from_user.id, message.chat.id) == (USER, USER)

    (payment,) = fake.payments
    assert payment == result.payment
    assert (payment.user_id, payment.chat_id, payment.amount, payment.payload) == (
        USER,
        USER,
        50,
        "123",
    )
    assert (payment.invoice_message_id, payment.update_id) == (
        invoice.message_id,
        update.update_id,
    )
    assert not payment.refunded
    assert fake.star_balance == 50
    (answer,) = fake.precheckout_answers
    assert (answer.query_id, answer.ok, answer.accepted) == (query.id, True, True)
    assert answer.since_fetch is not None
    assert 0 <= answer.since_fetch <= answer.since_query < 10

    # One answer per query.
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_pre_checkout_query(query.id, ok=True)
    with pytest.raises(BadRequest, match="(?i)query ID is invalid"):
        await bot.answer_pre_checkout_query("12345", ok=True)
    assert len(fake.payments) == 1

    # A re-delivered successful_payment (crash before the offset was confirmed).
    assert fake.redeliver_payment(result.charge_id) == update.update_id
    (again,) = await poll()
    assert again.update_id == update.update_id
    assert again.message.successful_payment.telegram_payment_charge_id == result.charge_id
    assert len(fake.payments) == 1
    assert fake.star_balance == 50


async def test_pay_in_a_forum_topic(fake, bot, poll):
    fake.group(GROUP, forum=True)
    invoice = await send_stars_invoice(bot, GROUP, message_thread_id=7)
    buyer = USER + 1
    attempt = fake.pay_invoice(buyer, invoice.message_id, chat_id=GROUP)
    (update,) = await poll()
    assert update.pre_checkout_query.from_user.id == buyer
    await bot.answer_pre_checkout_query(update.pre_checkout_query.id, ok=True)
    result = await attempt
    (update,) = await poll()
    message = update.message
    assert message.successful_payment.telegram_payment_charge_id == result.charge_id
    assert (message.chat.id, message.from_user.id) == (GROUP, buyer)
    assert message.message_thread_id == 7
    assert message.is_topic_message
    assert fake.payments[0].chat_id == GROUP


async def test_declined_precheckout(fake, bot, poll):
    invoice = await send_stars_invoice(bot)
    attempt = fake.pay_invoice(USER, invoice.message_id)
    (update,) = await poll()
    query_id = update.pre_checkout_query.id
    with pytest.raises(BadRequest, match='(?i)parameter "error_message" is required'):
        await bot.answer_pre_checkout_query(query_id, ok=False)
    assert fake.pending_precheckouts == [attempt]  # still open

    assert await bot.answer_pre_checkout_query(query_id, ok=False, error_message="Sold out")
    result = await attempt
    assert result == PaymentResult(False, attempt.query_id, error_message="Sold out")
    assert attempt.status == "declined"
    assert await poll() == ()  # no successful_payment
    assert fake.payments == []
    assert fake.star_balance == 0
    assert [(a.ok, a.error_message, a.accepted) for a in fake.precheckout_answers] == [
        (False, "Sold out", True)
    ]

    fake.delete_message(USER, invoice.message_id)
    with pytest.raises(ValueError, match="was deleted"):
        fake.pay_invoice(USER, invoice)


async def test_late_precheckout_answer(fake, bot, poll):
    fake.precheckout_timeout = 0.2
    invoice = await send_stars_invoice(bot)
    attempt = fake.pay_invoice(USER, invoice)
    (update,) = await poll()
    result = await asyncio.wait_for(attempt.wait(), 5)
    assert result.timed_out
    assert not result.paid
    assert result.charge_id is None
    assert attempt.status == "timed_out"
    assert fake.pending_precheckouts == []

    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_pre_checkout_query(update.pre_checkout_query.id, ok=True)
    (answer,) = fake.precheckout_answers
    assert not answer.accepted
    assert answer.since_query >= 0.2
    assert await poll() == ()
    assert fake.payments == []
    assert fake.star_balance == 0


async def test_pre_checkout_query_obeys_allowed_updates(fake, bot):
    fake.precheckout_timeout = 0.3
    invoice = await send_stars_invoice(bot)
    attempt = fake.pay_invoice(USER, invoice)
    fake.send_text(USER, USER, "hi")
    updates = await bot.get_updates(timeout=0, allowed_updates=[Update.MESSAGE])
    assert [u.message.text for u in updates] == ["hi"]  # the query was never handed out
    assert (await attempt).timed_out

    # An empty list is Telegram's default, which includes pre_checkout_query.
    second = fake.pay_invoice(USER, invoice)
    updates = await bot.get_updates(
        offset=updates[-1].update_id + 1, timeout=0, allowed_updates=[]
    )
    assert [u.pre_checkout_query.id for u in updates] == [second.query_id]


async def test_same_invoice_paid_twice(fake, bot, poll):
    invoice = await send_stars_invoice(bot)
    first = await pay(fake, bot, poll, invoice)
    second_attempt = fake.pay_again(first.payment)
    (update,) = await poll()
    assert update.pre_checkout_query.id == second_attempt.query_id != first.query_id
    await bot.answer_pre_checkout_query(update.pre_checkout_query.id, ok=True)
    second = await second_attempt
    (update,) = await poll()
    assert update.message.successful_payment.telegram_payment_charge_id == second.charge_id
    assert first.charge_id != second.charge_id
    assert [p.charge_id for p in fake.payments] == [first.charge_id, second.charge_id]
    assert {p.invoice_message_id for p in fake.payments} == {invoice.message_id}
    assert fake.star_balance == 100


async def test_refunds(fake, bot, poll):
    invoice = await send_stars_invoice(bot)
    result = await pay(fake, bot, poll, invoice)
    with pytest.raises(BadRequest, match="(?i)CHARGE_NOT_FOUND"):
        await bot.refund_star_payment(USER + 1, result.charge_id)  # another user's charge
    with pytest.raises(BadRequest, match="(?i)CHARGE_NOT_FOUND"):
        await bot.refund_star_payment(USER, "stxNoSuchCharge")
    assert fake.refunds == []

    assert await bot.refund_star_payment(USER, result.charge_id)
    (refund,) = fake.refunds
    assert (refund.charge_id, refund.user_id, refund.amount, refund.payload) == (
        result.charge_id,
        USER,
        50,
        "job-1",
    )
    assert fake.payments[0].refunded
    assert fake.star_balance == 0
    (update,) = await poll()
    message = update.message
    refunded = message.refunded_payment
    assert (refunded.currency, refunded.total_amount, refunded.invoice_payload) == (
        "XTR",
        50,
        "job-1",
    )
    assert refunded.telegram_payment_charge_id == result.charge_id
    assert (message.chat.id, message.from_user.id) == (USER, BOT_ID)
    assert (update.update_id, message.message_id) == (refund.update_id, refund.message_id)

    with pytest.raises(BadRequest, match="(?i)CHARGE_ALREADY_REFUNDED"):
        await bot.refund_star_payment(USER, result.charge_id)
    assert len(fake.refunds) == 1
    assert await poll() == ()  # one service message only


async def test_refund_whose_answer_is_lost(fake, bot, poll):
    invoice = await send_stars_invoice(bot)
    first = await pay(fake, bot, poll, invoice)
    fake.pay_again(first.payment)
    (update,) = await poll()
    await bot.answer_pre_checkout_query(update.pre_checkout_query.id, ok=True)
    second = fake.payments[1]

    fake.refund_then_drop_answer()
    with pytest.raises(NetworkError, match="Bad Gateway") as caught:
        await bot.refund_star_payment(USER, first.charge_id)
    assert not isinstance(caught.value, BadRequest)
    assert [r.charge_id for r in fake.refunds] == [first.charge_id]  # it did happen
    (call,) = fake.calls_of("refundStarPayment", chat_id=USER)
    assert not call.ok
    assert call.response["error_code"] == 502
    assert call.lost_answer == {"ok": True, "result": True}
    # The bot asks again: Telegram says it is done.
    with pytest.raises(BadRequest, match="(?i)CHARGE_ALREADY_REFUNDED"):
        await bot.refund_star_payment(USER, first.charge_id)

    # A connection that closes instead of answering.
    fake.refund_then_drop_answer(disconnect=True)
    with pytest.raises(NetworkError, match="(?i)disconnected"):
        await bot.refund_star_payment(USER, second.charge_id)
    assert [r.charge_id for r in fake.refunds] == [first.charge_id, second.charge_id]
    with pytest.raises(BadRequest, match="(?i)CHARGE_ALREADY_REFUNDED"):
        await bot.refund_star_payment(USER, second.charge_id)
    assert fake.star_balance == 0
    assert all(p.refunded for p in fake.payments)
    updates = await poll()
    assert [u.message.successful_payment is not None for u in updates] == [True, False, False]
    refunded = [u.message.refunded_payment.telegram_payment_charge_id for u in updates[1:]]
    assert refunded == [first.charge_id, second.charge_id]


async def test_refund_failures_injected(fake, bot, poll, timedeltas):
    invoice = await send_stars_invoice(bot)
    result = await pay(fake, bot, poll, invoice)
    fake.fail_next("refundStarPayment", error_code=500, description="Internal Server Error")
    with pytest.raises(NetworkError, match="Internal Server Error"):
        await bot.refund_star_payment(USER, result.charge_id)
    fake.fail_next(
        "refundStarPayment",
        error_code=429,
        description="Too Many Requests: retry after 5",
        chat_id=USER,
    )
    with pytest.raises(RetryAfter) as caught:
        await bot.refund_star_payment(USER, result.charge_id)
    assert caught.value.retry_after == dtm.timedelta(seconds=5)
    assert fake.refunds == []
    assert not fake.payments[0].refunded
    assert await bot.refund_star_payment(USER, result.charge_id)
    assert len(fake.refunds) == 1


async def test_star_transactions(fake, bot, poll):
    buyer = USER + 1
    fake.user(buyer, "Bob")
    first = await pay(fake, bot, poll, await send_stars_invoice(bot))
    other_invoice = await send_stars_invoice(bot, buyer, amount=20, payload="job-2")
    second = await pay(fake, bot, poll, other_invoice, user_id=buyer)
    assert await bot.refund_star_payment(USER, first.charge_id)

    transactions = (await bot.get_star_transactions()).transactions
    assert [(t.id, t.amount) for t in transactions] == [
        (first.charge_id, 50),  # the refund, newest first
        (second.charge_id, 20),
        (first.charge_id, 50),
    ]
    refund, incoming, oldest = transactions
    assert refund.source is None
    assert isinstance(refund.receiver, TransactionPartnerUser)
    assert (refund.receiver.user.id, refund.receiver.invoice_payload) == (USER, "job-1")
    assert refund.receiver.transaction_type == "invoice_payment"
    assert incoming.receiver is None
    assert isinstance(incoming.source, TransactionPartnerUser)
    assert (incoming.source.user.first_name, incoming.source.invoice_payload) == ("Bob", "job-2")
    assert oldest.source.user.id == USER
    assert isinstance(oldest.date, dtm.datetime)

    page = await bot.get_star_transactions(offset=1, limit=1)
    assert [t.id for t in page.transactions] == [second.charge_id]
    assert (await bot.get_star_transactions(offset=3)).transactions == ()
    async with httpx.AsyncClient() as client:
        url = f"{fake.url}/bot{TEST_TOKEN}/getStarTransactions"
        clamped = (await client.post(url, data={"limit": 0})).json()["result"]
        assert len(clamped["transactions"]) == 1  # limit is clamped to 1..100
        assert (
            len((await client.post(url, data={"limit": 500})).json()["result"]["transactions"])
            == 3
        )
    assert fake.star_balance == 20


async def test_lose_answer_next_applies_the_call(fake, bot):
    fake.lose_answer_next("sendMessage", chat_id=USER)
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(USER, "hi")
    assert [m["text"] for m in fake.bot_messages(USER)] == ["hi"]  # it was sent
    (call,) = fake.calls_of("sendMessage")
    assert not call.ok
    assert call.lost_answer["result"]["text"] == "hi"
    assert (await bot.send_message(USER, "again")).text == "again"


async def test_a_real_application_takes_a_payment(fake):
    async def precheckout(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.pre_checkout_query is not None
        await update.pre_checkout_query.answer(ok=True)

    async def paid(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None
        assert message.successful_payment is not None
        await message.reply_text(f"Paid {message.successful_payment.total_amount}")

    application = (
        ApplicationBuilder()
        .token(TEST_TOKEN)
        .base_url(f"{fake.url}/bot")
        .base_file_url(f"{fake.url}/file/bot")
        .build()
    )
    application.add_handler(PreCheckoutQueryHandler(precheckout))
    application.add_handler(MessageHandler(filters.SUCCESSFUL_PAYMENT, paid))
    async with application:
        await application.start()
        assert application.updater is not None
        await application.updater.start_polling(
            poll_interval=0,
            timeout=1,
            allowed_updates=[Update.MESSAGE, Update.PRE_CHECKOUT_QUERY],
        )
        invoice = await send_stars_invoice(application.bot)
        result = await asyncio.wait_for(fake.pay_invoice(USER, invoice).wait(), 5)
        (call,) = await fake.wait_for_call("sendMessage", chat_id=USER)
        await application.updater.stop()
        await application.stop()
    assert result.paid
    assert call.result["text"] == "Paid 50"
    assert fake.payments[0].charge_id == result.charge_id


async def test_webhook_connections_post_several_updates_at_once_and_retry_a_refused_one(
    fake: FakeTelegram, bot: Bot
) -> None:
    """With ``webhook_connections`` = 3 at most three posts are open at once; one the
    webhook refuses is tried again while the others go on; all arrive once."""
    release = asyncio.Event()
    open_posts: list[int] = []
    most_open = 0
    refused: set[int] = set()
    taken: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        nonlocal most_open
        update_id = int((await request.json())["update_id"])
        open_posts.append(update_id)
        most_open = max(most_open, len(open_posts))
        try:
            await release.wait()
        finally:
            open_posts.remove(update_id)
        if not refused:  # the first to finish is refused once
            refused.add(update_id)
            return web.Response(status=500)
        taken.append(update_id)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        fake.webhook_connections = 3
        fake.webhook_proxy = f"http://{host}:{port}"
        sent = [fake.send_text(USER, USER, f"hello {n}")["message_id"] for n in range(5)]
        assert await bot.set_webhook("https://bot.example.test/hook")
        deadline = time.monotonic() + 5
        while len(open_posts) < 3:
            assert time.monotonic() < deadline, "three posts were not opened at once"
            await asyncio.sleep(0.005)
        assert len(open_posts) == 3  # no fourth while three are open
        release.set()
        while len(taken) < 5 or len(fake.webhook_posts) < 6:  # the fake records answers
            assert time.monotonic() < deadline, f"not all taken: {taken}"
            await asyncio.sleep(0.005)
        assert most_open == 3
        assert sorted(taken) == sorted(set(taken))  # each once
        assert refused <= set(taken)  # the refused one came again
        assert len(fake.webhook_posts) == 6
        assert len(sent) == 5
    finally:
        await bot.delete_webhook()
        await runner.cleanup()
