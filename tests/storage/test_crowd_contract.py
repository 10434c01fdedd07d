"""A busy bot: many photos and Generate presses in flight at once, for many users and
several for the same user. None may be refused for the ledger's own contention (the
PostgreSQL bench once told users "try again in a minute" after serialization failures),
and every per-user rule must hold exactly: the active limit, the daily limit and the
free videos.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

from bot.core.limits import Limits, StartOutcome
from bot.core.options import VideoOptions
from bot.core.ports import Ledger
from bot.storage.postgres import PostgresLedger
from tests.builders import new_job
from tests.storage.conftest import Clock

#: Users who press Generate under two photos each, within their limits.
CALM_USERS = range(1, 81)
CALM = Limits(max_active_per_user=2, daily_per_user=3)
#: One user sends 12 photos and presses Generate under each at once: 2 may run.
ACTIVE_CAPPED_USER = 1001
ACTIVE_CAPPED = Limits(max_active_per_user=2, daily_per_user=0)
#: One user with room to run many but 3 a day.
DAILY_CAPPED_USER = 1002
DAILY_CAPPED = Limits(max_active_per_user=100, daily_per_user=3)
#: One user with one free video and a price on the rest.
PAYING_USER = 1003
PAYING = Limits(max_active_per_user=100, daily_per_user=0)


async def photo_then_generate(
    ledger: Ledger,
    user_id: int,
    message_id: int,
    limits: Limits,
    *,
    price: int = 0,
    free_videos: int = 0,
) -> tuple[int, StartOutcome]:
    """A photo arrives and its Generate is pressed: the user and what the start answered."""
    job, created = await ledger.create_draft(new_job(message_id, user_id, user_id), VideoOptions())
    assert created
    result = await ledger.start(job.id, user_id, limits, price=price, free_videos=free_videos)
    return user_id, result.outcome


async def crowd(ledgers: Sequence[Ledger]) -> dict[int, Counter[StartOutcome]]:
    """182 photos and starts at once, spread over ``ledgers`` (bots sharing one database);
    each user's outcomes, counted. Any exception fails the test, all of them listed."""
    calls = [(user, message, CALM, 0, 0) for user in CALM_USERS for message in (1, 2)]
    calls += [(ACTIVE_CAPPED_USER, message, ACTIVE_CAPPED, 0, 0) for message in range(12)]
    calls += [(DAILY_CAPPED_USER, message, DAILY_CAPPED, 0, 0) for message in range(10)]
    calls += [(PAYING_USER, message, PAYING, 50, 1) for message in range(8)]
    results = await asyncio.gather(
        *(
            photo_then_generate(
                ledgers[n % len(ledgers)], user, message, limits, price=price, free_videos=free
            )
            for n, (user, message, limits, price, free) in enumerate(calls)
        ),
        return_exceptions=True,
    )
    failures = [result for result in results if isinstance(result, BaseException)]
    assert failures == []
    outcomes: dict[int, Counter[StartOutcome]] = {}
    for result in results:
        assert not isinstance(result, BaseException)
        user, outcome = result
        outcomes.setdefault(user, Counter())[outcome] += 1
    return outcomes


def assert_limits_held(outcomes: dict[int, Counter[StartOutcome]]) -> None:
    for user in CALM_USERS:
        assert outcomes[user] == Counter({StartOutcome.STARTED: 2})
    assert outcomes[ACTIVE_CAPPED_USER] == Counter(
        {StartOutcome.STARTED: 2, StartOutcome.TOO_MANY_ACTIVE: 10}
    )
    assert outcomes[DAILY_CAPPED_USER] == Counter(
        {StartOutcome.STARTED: 3, StartOutcome.DAILY_LIMIT: 7}
    )
    assert outcomes[PAYING_USER] == Counter({StartOutcome.STARTED: 1, StartOutcome.INVOICE: 7})


async def test_a_crowd_of_photos_and_starts_is_served_within_every_limit(ledger: Ledger):
    outcomes = await crowd([ledger])
    assert_limits_held(outcomes)
    running = 2 * len(CALM_USERS) + 2 + 3 + 1
    assert await ledger.count_active() == running
    assert await ledger.count_started_since(DAILY_CAPPED_USER, 0.0) == 3
    assert await ledger.free_videos_used(PAYING_USER) == 1


async def test_three_bots_on_one_database_serve_the_crowd_within_every_limit(
    postgres_url: str, clock: Clock
):
    """The bench's shape: three instances, each with its own pool, on one PostgreSQL."""
    ledgers = [PostgresLedger(postgres_url, clock=clock) for _ in range(3)]
    for ledger in ledgers:
        await ledger.open()
    try:
        assert_limits_held(await crowd(ledgers))
    finally:
        for ledger in ledgers:
            await ledger.close()
