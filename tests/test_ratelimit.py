"""The rate limiter on its own: slots, priorities, groups (real asyncio, no Telegram)."""

import asyncio
import time

from bot.ratelimit import Priority, PriorityRateLimiter


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


async def test_urgent_requests_overtake_waiting_status_edits():
    limiter = PriorityRateLimiter(per_second=5)
    log: list = []
    low = [
        asyncio.create_task(request(limiter, log, f"edit{i}", i, Priority.LOW)) for i in range(10)
    ]
    await asyncio.sleep(0)  # the edits are queued first
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


async def test_a_group_gets_at_most_its_share_per_minute():
    clock_offset = [0.0]

    def clock():
        return time.monotonic() + clock_offset[0]

    limiter = PriorityRateLimiter(per_second=1000, group_per_minute=3, clock=clock)
    log: list = []
    for i in range(3):
        await request(limiter, log, i, -100)
    fourth = asyncio.create_task(request(limiter, log, 3, -100))
    await asyncio.sleep(0.05)
    assert not fourth.done()  # the fourth send waits for the minute to roll over
    await request(limiter, log, "other group", -200)  # others are not held up
    fourth.cancel()
    await limiter.shutdown()
