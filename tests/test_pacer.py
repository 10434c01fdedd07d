import asyncio
import time

from telegram.ext import ExtBot

from bot.core.options import VideoOptions
from bot.core.progress import Progress, Status
from bot.i18n import texts
from bot.storage import SqliteLedger
from bot.telegram import messenger as telegram_messenger
from bot.telegram import pacing
from bot.telegram.messenger import TelegramMessenger
from bot.telegram.pacing import (
    GROUP_CHAT_GAP,
    PRIVATE_CHAT_GAP,
    STATUS_EDIT_MAX_BACKLOG,
    ChatPacer,
    PriorityRateLimiter,
)
from tests.builders import new_job
from tests.fakes.telegram import TEST_TOKEN


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_optional_messages_are_skipped_inside_the_chat_gap():
    clock = Clock()
    pacer = ChatPacer(clock)
    assert pacer.optional(1)
    assert not pacer.optional(1)  # a status edit right after another is dropped
    assert pacer.optional(2)  # other chats are independent
    clock.now += PRIVATE_CHAT_GAP
    assert pacer.optional(1)


def test_groups_get_a_wider_gap():
    clock = Clock()
    pacer = ChatPacer(clock)
    assert pacer.optional(-100)
    clock.now += PRIVATE_CHAT_GAP
    assert not pacer.optional(-100)
    assert pacer.wait_needed(-100) == GROUP_CHAT_GAP - PRIVATE_CHAT_GAP


async def test_essential_messages_wait_for_the_slot():
    pacer = ChatPacer()
    await pacer.essential(5)
    assert 0 < pacer.wait_needed(5) <= PRIVATE_CHAT_GAP
    assert not pacer.optional(5)


def test_status_edits_give_way_while_the_rate_limiter_has_a_long_queue():
    clock = Clock()
    backlog = [STATUS_EDIT_MAX_BACKLOG]
    pacer = ChatPacer(clock, backlog=lambda: backlog[0])
    assert not pacer.optional(1)
    assert not pacer.idle()
    backlog[0] = 3  # a short queue: the edit waits its turn behind it
    assert pacer.optional(1)
    assert not pacer.idle()  # but a chat action in front of a video is skipped
    backlog[0] = 0
    assert pacer.idle()


async def test_a_status_edit_that_cannot_get_a_slot_in_time_is_given_up(
    telegram, tmp_path, monkeypatch
):
    """Status edits wait behind keyboards and videos, and the job's next poll waits for
    them: so one that cannot get a place in Telegram's budget soon is dropped, and the
    next change of status tries again."""
    monkeypatch.setattr(telegram_messenger, "STATUS_EDIT_PATIENCE", 0.3)
    user = 801
    telegram.private_chat(user)
    limiter = PriorityRateLimiter(per_second=1)
    bot = ExtBot(
        TEST_TOKEN,
        base_url=telegram.api_url,
        base_file_url=telegram.file_url,
        rate_limiter=limiter,
    )
    store = SqliteLedger(tmp_path / "ledger.sqlite3")
    await bot.initialize()
    await store.open()
    try:
        draft, _ = await store.create_draft(new_job(chat_id=user, user_id=user), VideoOptions())
        # The keyboard takes the budget's only place, until a second after its answer.
        keyboard = await bot.send_message(user, "keyboard")
        await store.set_keyboard_message(draft.id, keyboard.message_id)
        job = await store.get(draft.id)
        assert job is not None
        messenger = TelegramMessenger(bot, frozenset(), ChatPacer(backlog=lambda: limiter.backlog))

        started = time.monotonic()
        assert not await messenger.show_progress(job, Status(Progress.QUEUED))
        assert time.monotonic() - started < 0.8  # it did not wait for the place
        assert telegram.calls_of("editMessageText") == []
        assert limiter.backlog == 0  # and left nothing behind in the queue

        # The scenario, on the real clock: the chat's gap and the budget's second pass.
        # Not a wait for "nothing happened" (what follows must happen).
        await asyncio.sleep(PRIVATE_CHAT_GAP + 0.1)
        assert await messenger.show_progress(job, Status(Progress.QUEUED))
        [edit] = telegram.calls_of("editMessageText")
        queued = texts.progress(texts.FALLBACK_LANGUAGE, Status(Progress.QUEUED), job.options)
        assert edit.params["text"] == queued == "⏳ Waiting for its turn"
        assert telegram.message(user, keyboard.message_id)["text"] == queued
    finally:
        await store.close()
        await bot.shutdown()
        await limiter.shutdown()


async def test_a_summary_waits_for_the_chat_slot_but_not_forever(monkeypatch):
    monkeypatch.setattr(pacing, "PRIVATE_CHAT_GAP", 0.05)
    pacer = ChatPacer(backlog=lambda: STATUS_EDIT_MAX_BACKLOG)  # a long queue: no matter
    pacer.sent(1)  # the video just went
    assert not await pacer.patient(1, 0.01)  # its slot frees too late: given up at once
    started = time.monotonic()
    assert await pacer.patient(1, 1.0)
    assert time.monotonic() - started >= 0.04  # it waited for the slot...
    assert not pacer.optional(1)  # ...and took it
