import asyncio
import contextlib
import dataclasses
import time

import httpx
from telegram.ext import ExtBot

from bot.core.jobs import JobState
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
    Priority,
    PriorityRateLimiter,
)
from bot.telegram.photos import Photos
from tests.builders import job_row, new_job
from tests.fakes.telegram import TEST_TOKEN


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_chat_is_free_again_a_gap_after_its_answer_not_before():
    clock = Clock()
    pacer = ChatPacer(clock)
    assert pacer.free(1)
    async with pacer.turn(1):
        assert not pacer.free(1)  # a message on its way
        clock.now += 5.0  # however long its answer takes
    assert not pacer.free(1)
    assert pacer.wait_needed(1) == PRIVATE_CHAT_GAP  # counted from the answer
    assert pacer.free(2)  # other chats are independent
    clock.now += PRIVATE_CHAT_GAP
    assert pacer.free(1)


async def test_groups_get_a_wider_gap():
    clock = Clock()
    pacer = ChatPacer(clock)
    async with pacer.turn(-100):
        pass
    clock.now += PRIVATE_CHAT_GAP
    assert not pacer.free(-100)
    assert pacer.wait_needed(-100) == GROUP_CHAT_GAP - PRIVATE_CHAT_GAP


async def test_a_status_edit_is_dropped_only_while_other_messages_wait_for_the_chat(
    monkeypatch,
):
    monkeypatch.setattr(pacing, "PRIVATE_CHAT_GAP", 0.05)
    pacer = ChatPacer()

    async def keyboard() -> None:
        async with pacer.turn(1):
            pass

    async with pacer.turn(1):
        assert pacer.optional(1)  # in the chat's gap it waits its turn, not dropped
        waiting = asyncio.create_task(keyboard())
        await asyncio.sleep(0)
        assert not pacer.optional(1)  # a keyboard waits: the status edit gives way
    await waiting
    assert pacer.optional(1)  # nobody waits any more
    assert pacer.optional(2)


async def test_waiters_in_one_chat_go_most_urgent_first_and_one_at_a_time(monkeypatch):
    """Deliveries are not starved by a queue of keyboards in the same chat."""
    monkeypatch.setattr(pacing, "PRIVATE_CHAT_GAP", 0.05)
    pacer = ChatPacer()
    order: list[str] = []
    holding = asyncio.Event()
    release = asyncio.Event()

    async def send(name: str, priority: Priority) -> None:
        async with pacer.turn(7, priority):
            order.append(name)
            if name == "first":
                holding.set()
                await release.wait()  # the first message's answer is slow to come

    first = asyncio.create_task(send("first", Priority.HIGH))
    await holding.wait()
    others = [
        asyncio.create_task(send(name, priority))
        for name, priority in [
            ("status", Priority.LOW),
            ("keyboard 1", Priority.HIGH),
            ("keyboard 2", Priority.HIGH),
            ("video", Priority.DELIVERY),
        ]
    ]
    await asyncio.sleep(0)  # all four queue up behind the first
    assert order == ["first"]
    release.set()
    await asyncio.gather(first, *others)
    assert order == ["first", "video", "keyboard 1", "keyboard 2", "status"]
    assert pacer.free(7) is False  # the last one's gap is still running


async def test_a_waiter_that_gives_up_leaves_nothing_behind(monkeypatch):
    monkeypatch.setattr(pacing, "PRIVATE_CHAT_GAP", 0.05)
    pacer = ChatPacer()
    release = asyncio.Event()

    async def hold() -> None:
        async with pacer.turn(3):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(pacer.turn(3).__aenter__())
    await asyncio.sleep(0)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    # Taken again after the gap: nobody holds a turn that was given up.
    async with asyncio.timeout(2):
        async with pacer.turn(3):
            pass


async def test_the_rate_limiter_paces_chat_messages_but_never_callback_answers(monkeypatch):
    monkeypatch.setattr(pacing, "PRIVATE_CHAT_GAP", 0.3)
    limiter = PriorityRateLimiter()
    sent: list[tuple[str, float]] = []

    def call(name: str):
        async def answer():
            sent.append((name, time.monotonic()))
            return True

        return answer

    async def request(name: str, endpoint: str, data: dict):
        return await limiter.process_request(call(name), (), {}, endpoint, data, None)

    await asyncio.gather(
        request("keyboard 1", "sendMessage", {"chat_id": 5}),
        request("keyboard 2", "sendMessage", {"chat_id": 5}),
        request("edit", "editMessageText", {"chat_id": 5, "message_id": 1}),
        request("answer", "answerCallbackQuery", {"callback_query_id": "q"}),
        request("typing", "sendChatAction", {"chat_id": 5, "action": "typing"}),
    )
    at = dict(sent)
    messages = sorted(at[name] for name in ("keyboard 1", "keyboard 2", "edit"))
    assert messages[1] - messages[0] >= 0.3
    assert messages[2] - messages[1] >= 0.3
    # Not messages: neither waits for the chat's turn.
    assert at["answer"] < messages[1]
    assert at["typing"] < messages[1]
    await limiter.shutdown()


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
    http = httpx.AsyncClient()
    photos = Photos(bot, http, tmp_path / "photos")
    await bot.initialize()
    await store.open()
    try:
        draft, _ = await store.create_draft(new_job(chat_id=user, user_id=user), VideoOptions())
        # The keyboard takes the budget's only place, until a second after its answer.
        keyboard = await bot.send_message(user, "keyboard")
        await store.set_keyboard_message(draft.id, keyboard.message_id)
        job = await store.get(draft.id)
        assert job is not None
        messenger = TelegramMessenger(bot, frozenset(), limiter.pacer, photos=photos)

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
        await http.aclose()
        await store.close()
        await bot.shutdown()
        await limiter.shutdown()


async def test_a_video_skips_its_chat_action_while_urgent_requests_keep_low_ones_back(
    telegram, tmp_path
):
    """The chat action in front of a video is LOW: while the last second's keyboards keep
    LOW requests back, it would wait and hold the video up, so it is skipped; once that
    second has passed, the next video has it again."""
    user = 803
    telegram.private_chat(user)
    now = [time.monotonic()]
    # LOW leaves 1 place, or the urgent flow's; the test moves the limiter's clock.
    limiter = PriorityRateLimiter(per_second=6, clock=lambda: now[0])
    bot = ExtBot(
        TEST_TOKEN,
        base_url=telegram.api_url,
        base_file_url=telegram.file_url,
        rate_limiter=limiter,
    )
    http = httpx.AsyncClient()
    photos = Photos(bot, http, tmp_path / "photos")
    video = tmp_path / "video.mp4"
    video.write_bytes(b"\0" * 1000)
    await bot.initialize()
    try:
        messenger = TelegramMessenger(bot, frozenset(), limiter.pacer, photos=photos)
        job = dataclasses.replace(job_row(JobState.COMPLETED), chat_id=user, user_id=user)
        # Three keyboards to other users this second: 3 places free, none for LOW.
        for other in (804, 805, 806):
            telegram.private_chat(other)
            await bot.send_message(other, "keyboard")
        assert limiter.backlog == 0  # no queue: only the urgent flow holds LOW back
        await messenger.send_video(job, video)
        assert telegram.calls_of("sendChatAction") == []
        assert len(telegram.calls_of("sendVideo", user)) == 1

        # The urgent second passes, and the chat's gap after the video.
        now[0] += PRIVATE_CHAT_GAP + 0.1
        await messenger.send_video(job, video)
        [action] = telegram.calls_of("sendChatAction", user)
        assert action.params["action"] == "upload_video"
        assert len(telegram.calls_of("sendVideo", user)) == 2
    finally:
        await http.aclose()
        await bot.shutdown()
        await limiter.shutdown()


async def test_a_summary_waits_for_the_chat_turn_but_not_forever(monkeypatch):
    monkeypatch.setattr(pacing, "PRIVATE_CHAT_GAP", 0.05)
    pacer = ChatPacer(backlog=lambda: STATUS_EDIT_MAX_BACKLOG)  # a long queue: no matter
    async with pacer.turn(1):  # the video goes
        pass
    assert not await pacer.patient(1, 0.01)  # its turn comes too late: given up at once
    assert await pacer.patient(1, 1.0)  # it comes in time: the rate limiter waits for it
    started = time.monotonic()
    async with pacer.turn(1, Priority.LOW):
        assert time.monotonic() - started >= 0.04  # ...a gap after the video's answer
