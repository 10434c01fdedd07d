"""Every reply keeps to a chat's pace, measured at the fake Telegram (which answers 429
like the real one when a private chat gets more than a short burst)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import settled, wait_until
from tests.fakes.telegram import FakeTelegram
from tests.test_private_flow import button_data

USER = 701
ALBUM = 10


@pytest.fixture
async def telegram():
    """The fake with Telegram's flood limits on: a burst in one chat would get 429s."""
    fake = FakeTelegram(flood_limits=True)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.mark.real_chat_pace
async def test_an_album_gets_one_keyboard_a_second_and_button_answers_do_not_wait(telegram, bot):
    telegram.private_chat(USER)
    photos = [telegram.send_photo(USER, USER, media_group_id="album-1") for _ in range(ALBUM)]
    (first,) = await telegram.wait_for_call("sendMessage", chat_id=USER)

    # While the other nine keyboards wait for the chat, a button press is answered at once.
    keyboard = first.response["result"]
    pressed = time.monotonic()
    query = telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, "8 s"))
    await wait_until(lambda: query in telegram.callback_answers, what="the button's answer")
    answered = telegram.calls_of("answerCallbackQuery", chat_id=USER)[0].at
    assert answered - pressed < 0.5

    await wait_until(
        lambda: len(telegram.calls_of("sendMessage", chat_id=USER)) == ALBUM,
        timeout=30,
        what="ten keyboards",
    )
    await settled(bot, telegram, timeout=15)
    sends = sorted(
        (
            call
            for call in telegram.calls
            if call.chat_id == USER and call.method.lower() in ("sendmessage", "editmessagetext")
        ),
        key=lambda call: call.at,
    )
    assert all(call.ok for call in telegram.calls), [
        c.response for c in telegram.calls if not c.ok
    ]
    replied_to = {
        call.params["reply_parameters"]["message_id"]
        for call in sends
        if call.method == "sendMessage"
    }
    assert replied_to == {photo["message_id"] for photo in photos}
    gaps = [later.at - earlier.at for earlier, later in zip(sends, sends[1:], strict=False)]
    assert len(gaps) == ALBUM  # ten keyboards and the option's edit
    assert min(gaps) >= 0.95, gaps  # never more than one a second, at Telegram's end
