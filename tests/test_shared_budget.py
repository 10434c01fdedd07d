"""One Telegram budget for several instances: rate limiters on one PostgreSQL ledger.

Each "instance" here is what a bot process has: its own PostgresLedger (its own asyncpg
pool) shared with its own PriorityRateLimiter, and its own PTB bot talking to the one
fake Telegram, which records when each message arrived.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest
from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from bot.core.errors import LedgerWriteFailed
from bot.core.leases import LeaseLost
from bot.storage.postgres import PostgresLedger
from bot.storage.sqlite import SqliteLedger
from bot.telegram import pacing
from bot.telegram.pacing import (
    Priority,
    PriorityRateLimiter,
    SharedBudget,
    SharedPlace,
    checked_before_sending,
)
from tests.conftest import wait_until
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram
from tests.test_ratelimit import most_in_one_second


@dataclass
class Instance:
    ledger: PostgresLedger
    limiter: PriorityRateLimiter
    bot: ExtBot[Priority]


async def start_instance(url: str, telegram: FakeTelegram, per_second: int = 30) -> Instance:
    ledger = PostgresLedger(url, pool_size=5)
    await ledger.open()
    limiter = PriorityRateLimiter(per_second=per_second)
    assert isinstance(ledger, SharedBudget)
    limiter.share(ledger)
    return Instance(ledger, limiter, await limited_bot(telegram, limiter))


async def limited_bot(telegram: FakeTelegram, limiter: PriorityRateLimiter) -> ExtBot[Priority]:
    """A PTB bot talking to the fake Telegram through ``limiter``, initialized."""
    bot: ExtBot[Priority] = ExtBot(
        TEST_TOKEN,
        base_url=telegram.api_url,
        base_file_url=telegram.file_url,
        rate_limiter=limiter,
        request=HTTPXRequest(connection_pool_size=64),
    )
    await bot.initialize()
    return bot


async def stop_instance(instance: Instance) -> None:
    await instance.bot.shutdown()
    await instance.limiter.shutdown()
    await instance.ledger.close()


@pytest.fixture
async def instances(telegram: FakeTelegram, postgres_url: str) -> AsyncIterator[list[Instance]]:
    started = [await start_instance(postgres_url, telegram) for _ in range(3)]
    try:
        yield started
    finally:
        for instance in started:
            await stop_instance(instance)


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(sorted(times))]


@pytest.mark.long
@pytest.mark.timeout(120)
async def test_three_instances_together_keep_to_one_budget_at_telegram(
    telegram: FakeTelegram, instances: list[Instance]
) -> None:
    """300 messages at once, a third from each instance, every chat written to by all
    three: Telegram never sees more than 30 in a second, nor two messages to one chat
    within its gap, and every message arrives. Three limiters alone would let 90 a
    second through (30 each) and three at once into each chat."""
    privates = [telegram.private_chat(1000 + i) for i in range(95)]
    groups = [telegram.group(-100_500 - i) for i in range(5)]
    chats = privates + groups
    started = time.monotonic()
    sent = await asyncio.gather(
        *(
            instance.bot.send_message(chat, f"{number} to {chat}")
            for chat in chats
            for number, instance in enumerate(instances)
        )
    )
    took = time.monotonic() - started

    assert len(sent) == 300
    times = telegram.send_times()
    assert len(times) == 300  # all delivered, none refused
    assert most_in_one_second(times) <= pacing.TELEGRAM_PER_SECOND
    assert took >= 300 / pacing.TELEGRAM_PER_SECOND - 1.0  # ~30 a second, not 90
    for chat in privates:
        assert len(telegram.send_times(chat)) == 3
        assert min(gaps(telegram.send_times(chat))) >= pacing.PRIVATE_CHAT_GAP - 0.05
    for chat in groups:  # 3 s apart: 20 a minute at most
        assert len(telegram.send_times(chat)) == 3
        assert min(gaps(telegram.send_times(chat))) >= pacing.GROUP_CHAT_GAP - 0.05


async def test_with_the_shared_budget_full_deliveries_still_go_first(
    telegram: FakeTelegram, postgres_url: str
) -> None:
    """Another instance holds every place: this one's waiting requests go, when places
    come free, most urgent first."""
    busy = await start_instance(postgres_url, telegram, per_second=2)
    waiting = await start_instance(postgres_url, telegram, per_second=2)
    try:
        for chat in (1, 2):
            await busy.bot.send_message(telegram.private_chat(chat), "fills the budget")
        assert waiting.limiter.backlog == 0
        order: list[str] = []

        async def send(chat: int, what: str, priority: Priority) -> None:
            await waiting.bot.send_message(
                telegram.private_chat(chat), what, rate_limit_args=priority
            )
            order.append(what)

        edit = asyncio.create_task(send(3, "edit", Priority.LOW))
        keyboard = asyncio.create_task(send(4, "keyboard", Priority.HIGH))
        video = asyncio.create_task(send(5, "video", Priority.DELIVERY))
        await asyncio.gather(edit, keyboard, video)
        # Two places: the video and the keyboard take them, the edit waits for the next.
        assert order[2] == "edit"
        assert sorted(order[:2]) == ["keyboard", "video"]
        assert most_in_one_second(telegram.send_times()) <= 2
    finally:
        await stop_instance(busy)
        await stop_instance(waiting)


async def test_places_held_by_an_instance_that_died_come_free_after_their_flight(
    telegram: FakeTelegram, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pacing, "SHARED_FLIGHT_SECONDS", 1.5)
    dead = PostgresLedger(postgres_url)
    await dead.open()
    alive = await start_instance(postgres_url, telegram, per_second=3)
    try:
        # The dead instance let three messages go and never gave their places back.
        places, _ = await dead.take_send_places(3, 3, pacing.SHARED_FLIGHT_SECONDS)
        assert len(places) == 3
        started = time.monotonic()
        await alive.bot.send_message(telegram.private_chat(7), "after the lapse")
        waited = time.monotonic() - started
        assert 1.3 <= waited < 5.0  # not the limiter's own wait: its place lapsed
    finally:
        await dead.close()
        await stop_instance(alive)


async def test_a_chat_turn_taken_by_another_instance_is_waited_for(
    telegram: FakeTelegram, instances: list[Instance]
) -> None:
    first, second, _ = instances
    chat = telegram.private_chat(42)
    await first.bot.send_message(chat, "one")
    await second.bot.send_message(chat, "two")  # its own pacer knows nothing of "one"
    [one, two] = telegram.send_times(chat)
    assert two - one >= pacing.PRIVATE_CHAT_GAP - 0.05


class UnreachableBudget:
    """A shared budget whose database cannot be reached: every call fails as the
    ledger's do then (the core's LedgerWriteFailed)."""

    def __init__(self) -> None:
        self.calls = 0

    def _fail(self) -> LedgerWriteFailed:
        self.calls += 1
        return LedgerWriteFailed("cannot be reached (connection refused)")

    async def take_send_places(
        self, limit: int, count: int, flight: float, reserve: int = 0
    ) -> tuple[list[SharedPlace], float | None]:
        raise self._fail()

    async def give_back_send_places(self, places: Sequence[SharedPlace], span: float) -> None:
        raise self._fail()

    async def take_chat_turn(self, chat_id: int, flight: float) -> tuple[float | None, float]:
        raise self._fail()

    async def end_chat_turn(self, chat_id: int, held: float, gap: float) -> None:
        raise self._fail()


async def test_an_unreachable_shared_budget_leaves_the_instance_to_its_own_pace(
    telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    """Messages still go, kept to this process's own budget, and the operator hears of
    it once (not once per message)."""
    budget = UnreachableBudget()
    limiter = PriorityRateLimiter(per_second=5)
    limiter.share(budget)
    bot = await limited_bot(telegram, limiter)
    try:
        sent = await asyncio.gather(
            *(bot.send_message(telegram.private_chat(300 + i), "hi") for i in range(8))
        )
        assert len(sent) == 8
        assert budget.calls >= 8  # it was asked, and failed
        assert most_in_one_second(telegram.send_times()) <= 5
        assert caplog.text.count("shared Telegram budget is unreachable") == 1
    finally:
        await bot.shutdown()
        await limiter.shutdown()


class TurnEndsFailing:
    """The PostgreSQL ledger as a shared budget, but ending a chat's turn fails while
    ``failing`` (the database went away right after the message went out)."""

    def __init__(self, ledger: PostgresLedger) -> None:
        self.ledger = ledger
        self.failing = True

    async def take_send_places(
        self, limit: int, count: int, flight: float, reserve: int = 0
    ) -> tuple[list[SharedPlace], float | None]:
        return await self.ledger.take_send_places(limit, count, flight, reserve)

    async def give_back_send_places(self, places: Sequence[SharedPlace], span: float) -> None:
        await self.ledger.give_back_send_places(places, span)

    async def take_chat_turn(self, chat_id: int, flight: float) -> tuple[float | None, float]:
        return await self.ledger.take_chat_turn(chat_id, flight)

    async def end_chat_turn(self, chat_id: int, held: float, gap: float) -> None:
        if self.failing:
            raise LedgerWriteFailed("cannot be reached (connection refused)")
        await self.ledger.end_chat_turn(chat_id, held, gap)


@pytest.mark.timeout(60)
async def test_a_turn_whose_end_was_lost_in_a_blip_does_not_hold_the_chat_for_its_flight(
    telegram: FakeTelegram, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chat's turn was taken, the message sent, and then its end could not be
    written: once the database answers again the chat's next reply goes at its usual
    gap, not when the turn's flight lapses (seen as a keyboard 10 s late after
    PostgreSQL came back)."""
    monkeypatch.setattr(pacing, "SHARED_FLIGHT_SECONDS", 20.0)
    instance = await start_instance(postgres_url, telegram)
    budget = TurnEndsFailing(instance.ledger)
    instance.limiter.share(budget)
    chat = telegram.private_chat(77)
    try:
        await instance.bot.send_message(chat, "during the blip")
        budget.failing = False
        await instance.bot.send_message(chat, "after it")
        [first, second] = telegram.send_times(chat)
        assert pacing.PRIVATE_CHAT_GAP - 0.05 <= second - first < 10.0
    finally:
        await stop_instance(instance)


async def test_a_bot_on_sqlite_keeps_its_budget_in_memory(bot, tmp_path) -> None:
    """One process owns a SQLite ledger: nothing is shared, nothing extra is asked."""
    runtime = bot.bot_data["runtime"]
    assert not runtime.limiter.shares_budget
    assert not isinstance(SqliteLedger(tmp_path / "x.sqlite3"), SharedBudget)


async def test_the_postgres_ledger_is_a_shared_budget(postgres_url: str) -> None:
    """What the runtime checks to share it (bot.telegram.runtime)."""
    ledger = PostgresLedger(postgres_url)
    assert isinstance(ledger, SharedBudget)
    limiter = PriorityRateLimiter()
    limiter.share(ledger)
    assert limiter.shares_budget


async def test_a_status_edit_leaves_the_last_free_places_to_other_instances_deliveries(
    telegram: FakeTelegram, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Priorities across instances: with 6 places and 5 held elsewhere, the one left is
    kept for an urgent request — a video from this or any instance goes at once, a
    status edit waits until places come free again."""
    monkeypatch.setattr(pacing, "SHARED_FLIGHT_SECONDS", 1.5)
    other = PostgresLedger(postgres_url)
    await other.open()
    instance = await start_instance(postgres_url, telegram, per_second=6)  # reserve: 1
    try:
        held, _ = await other.take_send_places(6, 5, pacing.SHARED_FLIGHT_SECONDS)
        assert len(held) == 5  # on their way at another instance (they lapse in 1.5 s)
        started = time.monotonic()
        arrived: dict[str, float] = {}

        async def send(chat: int, what: str, priority: Priority) -> None:
            await instance.bot.send_message(
                telegram.private_chat(chat), what, rate_limit_args=priority
            )
            arrived[what] = time.monotonic() - started

        edit = asyncio.create_task(send(1, "edit", Priority.LOW))
        await wait_until(lambda: instance.limiter.backlog == 1, what="the edit to wait")
        await send(2, "video", Priority.DELIVERY)
        await edit
        assert arrived["video"] < 1.0  # the reserved place
        assert arrived["edit"] >= 1.3  # only once the other instance's places lapsed
    finally:
        await other.close()
        await stop_instance(instance)


async def test_a_check_before_sending_runs_once_the_request_may_go(
    telegram: FakeTelegram,
) -> None:
    """The tracker confirms a job's lease there (bot.core.tracker): after the wait for a
    place in the budget and the chat's turn, which under load can outlast the lease,
    not before it; a check that raises stops the request before it leaves."""
    limiter = PriorityRateLimiter(per_second=1)  # the second request waits for a place
    bot = await limited_bot(telegram, limiter)
    checked_at: list[float] = []

    async def check() -> None:
        checked_at.append(time.monotonic())

    async def taken_over() -> None:
        raise LeaseLost("J1")

    try:
        await bot.send_message(telegram.private_chat(5), "first")
        with checked_before_sending(check):
            await bot.send_message(telegram.private_chat(6), "second")
        with pytest.raises(LeaseLost), checked_before_sending(taken_over):
            await bot.send_message(telegram.private_chat(7), "never")
        await bot.send_message(telegram.private_chat(8), "unchecked")  # not in the block
        assert [c.params["text"] for c in telegram.calls_of("sendMessage")] == [
            "first",
            "second",
            "unchecked",
        ]
        [first, second, _] = telegram.send_times()
        assert len(checked_at) == 1
        assert first + 0.9 <= checked_at[0] <= second  # after the wait for a place
    finally:
        await bot.shutdown()
        await limiter.shutdown()
