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


async def test_no_burst_above_the_rate():
    limiter = PriorityRateLimiter(per_second=50)
    log: list = []
    await asyncio.gather(*(request(limiter, log, i, i) for i in range(60)))
    times = sorted(t for _, t in log)
    first_second = [t for t in times if t - times[0] < 1.0]
    assert len(first_second) <= 50
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.015  # evenly spaced at 1/50 s, give or take the event loop
    await limiter.shutdown()


async def test_urgent_requests_overtake_waiting_status_edits():
    limiter = PriorityRateLimiter(per_second=20)
    log: list = []
    low = [
        asyncio.create_task(request(limiter, log, f"edit{i}", i, Priority.LOW)) for i in range(10)
    ]
    await asyncio.sleep(0)  # the edits are queued first
    high = asyncio.create_task(request(limiter, log, "video", 99))
    await asyncio.gather(*low, high)
    order = [name for name, _ in log]
    assert order.index("video") <= 1  # at most one edit already had its slot
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
