"""The rate limiter on its own: slots, priorities, groups (real asyncio, no Telegram)."""

import asyncio
import random
import time

import pytest

from bot.telegram import pacing
from bot.telegram.pacing import Priority, PriorityRateLimiter
from tests.conftest import wait_until


def recorder(log, name):
    async def call():
        log.append((name, time.monotonic()))
        return True

    return call


async def request(limiter, log, name, chat_id, priority=None):
    return await limiter.process_request(
        recorder(log, name), (), {}, "sendMessage", {"chat_id": chat_id}, priority
    )


async def test_a_burst_goes_at_once_but_never_more_than_the_rate_in_any_second():
    limiter = PriorityRateLimiter(per_second=20)
    log: list = []
    started = time.monotonic()
    await asyncio.gather(*(request(limiter, log, i, i) for i in range(45)))
    times = sorted(t for _, t in log)
    assert times[19] - started < 0.1  # the first 20 did not wait
    for i, t in enumerate(times):
        in_window = [u for u in times[i:] if u - t < 1.0]
        assert len(in_window) <= 20
    assert times[-1] - started >= 2.0  # 45 requests need a third second
    await limiter.shutdown()


def most_in_one_second(times):
    times = sorted(times)
    return max(len([u for u in times[i:] if u - t < 1.0]) for i, t in enumerate(times))


@pytest.mark.long
async def test_requests_that_reach_telegram_late_and_bunched_still_keep_to_the_rate():
    """Telegram counts a request when it arrives: anywhere between being let go and its
    answer. With arrival delays that vary (a busy loop, the HTTP pool) a limiter that only
    spaces out the moments it lets requests go would let more than the rate arrive in one
    second; this one holds each place until a second after the answer."""
    limiter = PriorityRateLimiter(per_second=10)
    delays = random.Random(7)
    arrivals: list[float] = []

    # The scenario's own latencies (real time is what the limiter works in), not waits.
    async def call():
        await asyncio.sleep(delays.uniform(0.0, 0.5))  # on its way
        arrivals.append(time.monotonic())  # Telegram counts it here
        await asyncio.sleep(delays.uniform(0.0, 0.3))  # the answer on its way back
        return True

    async def one(i):
        return await limiter.process_request(call, (), {}, "sendMessage", {"chat_id": i}, None)

    assert all(await asyncio.gather(*(one(i) for i in range(35))))
    assert len(arrivals) == 35
    assert most_in_one_second(arrivals) <= 10
    await limiter.shutdown()


async def test_a_place_comes_free_a_second_after_the_answer_not_before():
    limiter = PriorityRateLimiter(per_second=1)
    log: list = []

    async def slow():
        await asyncio.sleep(0.3)  # the scenario: an answer that takes 0.3 s to come back
        log.append(("slow answered", time.monotonic()))
        return True

    await limiter.process_request(slow, (), {}, "sendMessage", {"chat_id": 1}, None)
    await request(limiter, log, "next", 2)
    assert log[1][1] - log[0][1] >= 0.99
    await limiter.shutdown()


async def test_a_caller_cancelled_while_waiting_gives_its_place_back():
    limiter = PriorityRateLimiter(per_second=1)
    log: list = []
    await request(limiter, log, "first", 1)
    waiting = asyncio.create_task(request(limiter, log, "cancelled", 2))
    await wait_until(lambda: limiter.backlog == 1, what="the second request to wait")
    waiting.cancel()
    started = time.monotonic()
    await request(limiter, log, "after", 3)
    # one second after "first", not two: the cancelled one took no place
    assert time.monotonic() - started < 1.2
    assert [name for name, _ in log] == ["first", "after"]
    await limiter.shutdown()


async def test_deliveries_go_before_keyboards_and_keyboards_before_status_edits():
    limiter = PriorityRateLimiter(per_second=1)
    log: list = []
    await request(limiter, log, "first", 1)  # fills the budget: the rest queue up
    queued = [
        asyncio.create_task(request(limiter, log, "edit", 2, Priority.LOW)),
        asyncio.create_task(request(limiter, log, "keyboard", 3, Priority.HIGH)),
        asyncio.create_task(request(limiter, log, "video", 4, Priority.DELIVERY)),
    ]
    await asyncio.gather(*queued)
    assert [name for name, _ in log] == ["first", "video", "keyboard", "edit"]
    await limiter.shutdown()


async def test_urgent_requests_overtake_waiting_status_edits():
    limiter = PriorityRateLimiter(per_second=5)
    log: list = []
    low = [
        asyncio.create_task(request(limiter, log, f"edit{i}", i, Priority.LOW)) for i in range(10)
    ]
    # The edits are queued first: each has its place or is waiting for one.
    await wait_until(lambda: limiter.backlog + len(log) == 10, what="the edits queued")
    high = asyncio.create_task(request(limiter, log, "video", 99))
    await asyncio.gather(*low, high)
    order = [name for name, _ in log]
    assert order.index("video") <= 5  # only the edits that fit the first second went first
    assert limiter.backlog == 0
    await limiter.shutdown()


async def test_requests_without_a_chat_are_not_limited():
    limiter = PriorityRateLimiter(per_second=1)
    log: list = []
    started = time.monotonic()
    for i in range(5):
        await limiter.process_request(recorder(log, i), (), {}, "getUpdates", {}, None)
    assert time.monotonic() - started < 0.5
    assert len(log) == 5


async def test_a_group_gets_at_most_its_share_per_minute(monkeypatch):
    # The group's own budget alone: its chat's 3 s gap (tests/test_pacer.py) set aside.
    monkeypatch.setattr(pacing, "GROUP_CHAT_GAP", 0.0)
    clock_offset = [0.0]

    def clock():
        return time.monotonic() + clock_offset[0]

    limiter = PriorityRateLimiter(per_second=1000, group_per_minute=3, clock=clock)
    log: list = []
    for i in range(3):
        await request(limiter, log, i, -100)
    # 59.5 s later by the limiter's clock: the group's minute rolls over in half a second.
    clock_offset[0] = 59.5
    asked = time.monotonic()
    fourth = asyncio.create_task(request(limiter, log, 3, -100))
    await request(limiter, log, "other group", -200)
    other_took = time.monotonic() - asked
    await fourth
    fourth_took = time.monotonic() - asked
    # The fourth send to the group waited for its minute to roll over...
    assert fourth_took >= 0.4, fourth_took
    # ...and a send to another group, asked for after it, was not held up by that.
    assert other_took < 0.3, other_took
    assert [name for name, _ in log] == [0, 1, 2, "other group", 3]
    await limiter.shutdown()


def held_sends(limiter, answer):
    """``send(name, chat_id, priority)``: a message through ``limiter`` that stays on its
    way until ``answer`` is set; and when each was let go (the limiter's clock), in order."""
    let_go: dict[str, float] = {}

    def held(name):
        async def call():
            let_go[name] = time.monotonic()
            await answer.wait()
            return True

        return call

    def send(name, chat_id, priority):
        return asyncio.create_task(
            limiter.process_request(
                held(name), (), {}, "sendMessage", {"chat_id": chat_id}, priority
            )
        )

    return let_go, send


async def test_a_status_edit_leaves_the_last_places_to_keyboards_that_come_meanwhile():
    """LOW requests (status edits, chat actions) take a place only while one in six stays
    free: a keyboard that comes while the edit would be on its way still goes at once."""
    limiter = PriorityRateLimiter(per_second=6)  # LOW leaves 1 of the 6 free
    answer = asyncio.Event()
    let_go, send = held_sends(limiter, answer)
    busy = [send(f"keyboard {i}", i, Priority.HIGH) for i in range(5)]
    await wait_until(lambda: len(let_go) == 5, what="five keyboards on their way")
    edit = send("edit", 100, Priority.LOW)  # one place is free, but it is the reserve
    keyboard = send("late keyboard", 101, Priority.HIGH)
    await wait_until(lambda: "late keyboard" in let_go, what="the late keyboard let go")
    assert "edit" not in let_go
    answer.set()  # every answer back: the places free a second later, the edit goes then
    assert all(await asyncio.gather(*busy, keyboard, edit))
    assert list(let_go)[-1] == "edit"
    await limiter.shutdown()


async def test_a_status_edit_leaves_the_places_the_last_seconds_keyboards_will_want():
    """While urgent requests flow, a LOW request leaves as many places free as urgent ones
    were let go in the last second, though more than one in six are free: the next
    keyboards will want them. Once that second has passed it goes, woken then (no answer
    comes back meanwhile, so nothing else could wake it)."""
    limiter = PriorityRateLimiter(per_second=6)  # one in six: 1 place
    answer = asyncio.Event()
    let_go, send = held_sends(limiter, answer)
    asked = time.monotonic()  # no keyboard below is let go before this
    busy = [send(f"keyboard {i}", i, Priority.HIGH) for i in range(3)]
    await wait_until(lambda: len(let_go) == 3, what="three keyboards on their way")
    # 3 of the 6 places are free, more than the one in six; but 3 keyboards went this second.
    edit = send("edit", 100, Priority.LOW)
    await wait_until(lambda: limiter.backlog == 1, what="the edit queued")
    keyboard = send("late keyboard", 101, Priority.HIGH)
    await wait_until(lambda: "late keyboard" in let_go, what="the late keyboard let go")
    # The edit was looked at again right after the keyboard was let go, with 2 places
    # free (more than one in six) and still 4 keyboards within the last second: it waits.
    assert limiter.backlog == 1
    assert "edit" not in let_go
    # The first three keyboards' second ends; one keyboard is left in it and 2 places are
    # free: the edit goes, though every keyboard is still on its way.
    await wait_until(lambda: "edit" in let_go, what="the edit let go")
    assert not answer.is_set()
    assert let_go["edit"] - asked >= 1.0
    answer.set()
    assert all(await asyncio.gather(*busy, keyboard, edit))
    await limiter.shutdown()
