"""The inbox's part of the Ledger contract (webhook mode: bot/telegram/inbox.py), run
against every backend: an update is claimed once and stored with its claim, marked
handled, and an unhandled one is taken again only once its holder is gone, by one
taker, a bounded number of times; old rows are pruned."""

import asyncio

from bot.core.leases import LEASE_SECONDS, Lease
from bot.core.ports import UPDATE_CLAIM_SECONDS, Ledger, StoredUpdate
from bot.storage import SqliteLedger

HOLDER = Lease("holder-1")
TAKER = Lease("taker-2")
OTHER = Lease("other-3")
NOW = 1000.0
#: Just after a lease taken at NOW has lapsed.
LAPSED = NOW + LEASE_SECONDS + 1


def body(update_id: int) -> str:
    return f'{{"update_id": {update_id}, "message": {{"text": "é"}}}}'


async def stranded(ledger: Ledger, lease: Lease, now: float, max_attempts: int = 3):
    return await ledger.claim_stranded_updates(lease, now, max_attempts=max_attempts, limit=50)


async def test_an_update_is_claimed_once(ledger):
    assert await ledger.receive_update(5001, body(5001), HOLDER, NOW)
    assert not await ledger.receive_update(5001, body(5001), OTHER, NOW + 1)
    assert await ledger.receive_update(5002, body(5002), HOLDER, NOW + 1)


async def test_concurrent_claims_of_one_update_give_one_winner(ledger):
    claims = await asyncio.gather(
        *(ledger.receive_update(7001, body(7001), Lease(f"i-{n}"), NOW) for n in range(8))
    )
    assert claims.count(True) == 1


async def test_a_claim_survives_a_reopen(open_ledger):
    ledger = await open_ledger()
    assert await ledger.receive_update(6001, body(6001), HOLDER, NOW)
    await ledger.close()
    reopened = await open_ledger()
    assert not await reopened.receive_update(6001, body(6001), HOLDER, NOW + 10)


async def test_an_unhandled_update_waits_for_its_holders_lease_then_is_taken_once(ledger):
    assert await ledger.receive_update(5101, body(5101), HOLDER, NOW)
    assert await stranded(ledger, TAKER, NOW + LEASE_SECONDS - 1) == []  # holder alive
    taken = await asyncio.gather(*(stranded(ledger, lease, LAPSED) for lease in (TAKER, OTHER)))
    assert sorted(len(batch) for batch in taken) == [0, 1]  # one taker, never both
    [[update]] = [batch for batch in taken if batch]
    assert update == StoredUpdate(5101, body(5101), attempts=2)  # stored as received
    assert await stranded(ledger, OTHER, LAPSED + 1) == []  # the taker holds it now


async def test_renewal_keeps_an_update_being_handled(ledger):
    assert await ledger.receive_update(5201, body(5201), HOLDER, NOW)
    assert await ledger.receive_update(5202, body(5202), OTHER, NOW)
    assert await ledger.renew_update_leases(HOLDER, NOW + 20) == 1
    taken = await stranded(ledger, TAKER, LAPSED)
    assert [update.update_id for update in taken] == [5202]  # 5201's holder renewed


async def test_a_handled_update_is_never_taken_again(ledger):
    for update_id in (5301, 5302, 5303):
        assert await ledger.receive_update(update_id, body(update_id), HOLDER, NOW)
    await ledger.updates_handled([5301, 5303], NOW + 1)
    await ledger.updates_handled([], NOW + 1)  # nothing to mark: no statement needed
    assert await ledger.renew_update_leases(HOLDER, NOW + 2) == 1  # 5302 only
    taken = await stranded(ledger, TAKER, LAPSED + 10)
    assert [update.update_id for update in taken] == [5302]
    await ledger.updates_handled([5302], LAPSED + 11)
    assert await stranded(ledger, OTHER, LAPSED + 100) == []


async def test_an_update_is_given_up_after_its_attempts(ledger):
    """One that kills every process handling it must not be redone for ever."""
    assert await ledger.receive_update(5401, body(5401), HOLDER, NOW)
    now = NOW
    attempts = []
    for _ in range(4):
        now += LEASE_SECONDS + 1
        attempts += [update.attempts for update in await stranded(ledger, TAKER, now)]
    assert attempts == [2, 3]


async def test_handled_and_given_up_claims_older_than_a_day_are_forgotten(ledger):
    assert await ledger.receive_update(8001, body(8001), HOLDER, NOW)
    await ledger.updates_handled([8001], NOW + 1)
    assert await ledger.receive_update(8003, body(8003), HOLDER, NOW)  # never handled
    assert await ledger.receive_update(8004, body(8004), OTHER, NOW)  # still being handled
    later = NOW + UPDATE_CLAIM_SECONDS + 3600.0
    assert await ledger.renew_update_leases(OTHER, later - 5) == 1
    assert await ledger.receive_update(8002, body(8002), HOLDER, later)  # prunes
    assert await ledger.receive_update(8001, body(8001), HOLDER, later)  # forgotten
    assert not await ledger.receive_update(8002, body(8002), HOLDER, later + 1)
    # An unhandled update nobody holds is forgotten too (given up, or its holder gone
    # for a day); one still held is kept.
    assert await ledger.receive_update(8003, body(8003), HOLDER, later + 2)
    assert not await ledger.receive_update(8004, body(8004), HOLDER, later + 2)


async def test_the_one_bot_on_a_sqlite_file_takes_back_what_it_left_unhandled(tmp_path):
    """SQLite's exclusive open proves the holder gone: no waiting for its lease."""
    path = tmp_path / "ledger.sqlite3"
    killed = SqliteLedger(path, exclusive=True)
    await killed.open()
    assert await killed.receive_update(9001, body(9001), HOLDER, NOW)
    await killed.close()  # what a SIGKILL leaves: the hold unlapsed, the lock gone
    restarted = SqliteLedger(path, exclusive=True)
    await restarted.open()
    try:
        taken = await stranded(restarted, TAKER, NOW + 1)
    finally:
        await restarted.close()
    assert [update.update_id for update in taken] == [9001]
