"""The fake Bot API, proven with the real python-telegram-bot (``telegram.Bot``/Application)."""

from __future__ import annotations

import asyncio
import datetime as dtm
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    ReplyParameters,
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
from telegram.ext import ApplicationBuilder, CallbackQueryHandler, CommandHandler, ContextTypes

from tests.conftest import wait_until
from tests.fakes.telegram import (
    BOT_ID,
    BOT_USERNAME,
    MAX_UPLOAD_BYTES,
    TEST_TOKEN,
    Call,
    FakeTelegram,
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
            await bot.send_message(USER, "private chats are not limited")
            assert len(fake.send_times(GROUP)) == 20
            assert len(fake.send_times()) == 21
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
