"""The byte budget that bounds photo downloads on disk (bot.telegram.budget)."""

from __future__ import annotations

import asyncio

from bot.telegram.budget import ByteBudget


async def _hold(budget: ByteBudget, size: int, release: asyncio.Event, log: list[str], name: str):
    async with budget.taken(size):
        log.append(name)
        await release.wait()


async def test_small_ones_go_together_and_a_large_one_waits_for_room_in_order():
    budget = ByteBudget(100)
    log: list[str] = []
    first, second = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(_hold(budget, 40, first, log, "a")),
        asyncio.create_task(_hold(budget, 40, second, log, "b")),
        asyncio.create_task(_hold(budget, 40, second, log, "c")),  # no room: waits
        asyncio.create_task(_hold(budget, 10, second, log, "d")),  # room, but behind "c"
    ]
    for _ in range(3):
        await asyncio.sleep(0)  # let every task reach its wait (no time passes)
    assert log == ["a", "b"]
    assert budget.free == 20
    first.set()  # "a" gives back 40: "c" goes, then "d" fits too
    for _ in range(3):
        await asyncio.sleep(0)
    assert log == ["a", "b", "c", "d"]
    second.set()
    await asyncio.gather(*tasks)
    assert budget.free == 100


async def test_a_request_larger_than_the_budget_takes_all_of_it():
    budget = ByteBudget(100)
    async with budget.taken(500):
        assert budget.free == 0
    assert budget.free == 100


async def test_a_cancelled_waiter_frees_its_place_in_line():
    budget = ByteBudget(100)
    log: list[str] = []
    release, never = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_hold(budget, 60, release, log, "holder"))
    large = asyncio.create_task(_hold(budget, 80, never, log, "large"))  # waits
    small = asyncio.create_task(_hold(budget, 30, release, log, "small"))  # behind "large"
    for _ in range(3):
        await asyncio.sleep(0)
    assert log == ["holder"]
    large.cancel()  # gone from the head of the line: "small" fits beside the holder
    for _ in range(3):
        await asyncio.sleep(0)
    assert log == ["holder", "small"]
    release.set()
    await asyncio.gather(holder, small)
    assert large.cancelled()
    assert budget.free == 100
