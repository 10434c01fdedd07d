"""The inbox end to end: ``python -m bot`` in webhook mode killed (SIGKILL) while it
handles an update it had already answered 200 for. Telegram never sends that update
again; the stored copy is handled by the next start (SQLite: one process) or, once the
dead instance's lease lapses, by another instance (PostgreSQL), exactly once. The two
PostgreSQL instances run tests/short_intervals.py (test-only): leases of SHORT_LEASE
seconds instead of 30, in the same proportions, so the takeover comes within seconds.

The fake Telegram holds the handler at one of its calls (``hold_next``) so the kill
lands mid-handling; the held request dies with the process and is never carried out.
Counted afterwards: keyboards, submits, videos, payments, refunds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from telegram import Update

from bot.i18n import texts
from bot.storage.sqlite import SqliteLedger
from tests.conftest import free_port, ledger, running, settled, wait_until
from tests.fakes.balancer import RoundRobinBalancer
from tests.fakes.segmind import FakeSegmind
from tests.fakes.telegram import FakeTelegram, HeldCall
from tests.processes import BotProcess
from tests.short_intervals import MODULE, shortened
from tests.test_payments import PRICE, invoice_for, paid, payment_rows
from tests.test_private_flow import button_data, reply_target, send_photo_get_keyboard

USER = 4101
WEBHOOK_URL = "https://bot.example.test/telegram/hook"
SECRET = "s3cret_Webhook-token"
REDONE = "its handling was interrupted"
#: The two instances' test-only lease (tests/short_intervals.py).
SHORT_LEASE = 6.0
#: A dead instance's update waits for its lease, then the next scan (room for load).
TAKEOVER_WITHIN = SHORT_LEASE + SHORT_LEASE / 6 + 15.0


def update_rows(database: Path) -> list[dict[str, Any]]:
    """The inbox as an operator would read it (plain sqlite3)."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM updates ORDER BY update_id")]


async def killed(process: BotProcess, held: HeldCall) -> None:
    """SIGKILL; back once the fake saw the held request's connection go."""
    process.signal(signal.SIGKILL)
    await process.wait()
    await wait_until(lambda: held.abandoned, what="the held request dropped")


async def stopped(process: BotProcess) -> str:
    """SIGTERM: exit 0, no traceback; its log."""
    process.signal(signal.SIGTERM)
    assert await process.wait(timeout=30) == 0
    log = process.stderr.decode(errors="replace")
    assert "Traceback" not in log, log
    return log


def keyboard_for(photo: dict[str, Any]) -> Callable[[Any], bool]:
    """Whether a sendMessage call is a keyboard Telegram took, replying to ``photo``."""
    return lambda call: (
        call.ok
        and "reply_markup" in call.params
        and reply_target(call.params) == photo["message_id"]
    )


def keyboards_for(telegram: FakeTelegram, photo: dict[str, Any]) -> list[Any]:
    return list(filter(keyboard_for(photo), telegram.calls_of("sendMessage", chat_id=USER)))


def videos(telegram: FakeTelegram) -> list[Any]:
    return [call for call in telegram.calls_of("sendVideo") if call.ok]


# -- one process on SQLite: the next start handles it -------------------------------------


@pytest.fixture
async def webhook_bot(telegram: FakeTelegram, env: dict[str, str], tmp_path: Path):
    """Starts ``python -m bot`` in webhook mode on this test's port (again after a kill)."""
    port = free_port()
    telegram.webhook_proxy = f"http://127.0.0.1:{port}"
    started: list[BotProcess] = []

    async def start(**overrides: str) -> BotProcess:
        hooks = len(telegram.calls_of("setWebhook"))
        process = BotProcess(
            {
                **env,
                "WEBHOOK_URL": WEBHOOK_URL,
                "WEBHOOK_SECRET": SECRET,
                "HTTP_LISTEN": f"127.0.0.1:{port}",
                **overrides,
            },
            tmp_path,
        )
        started.append(await process.start())
        await wait_until(
            lambda: len(telegram.calls_of("setWebhook")) > hooks, timeout=30, what="serving"
        )
        return process

    yield start
    for process in started:
        await process.kill()


async def test_a_photo_whose_keyboard_was_on_its_way_gets_it_after_a_restart(
    telegram: FakeTelegram, segmind: FakeSegmind, webhook_bot, database
):
    """Without the inbox this photo would never get a keyboard: its draft exists, but
    Telegram had its 200 and sends the update no more."""
    telegram.private_chat(USER)
    process = await webhook_bot()
    held = telegram.hold_next("sendMessage", chat_id=USER)
    photo = telegram.send_photo(USER, USER)
    await asyncio.wait_for(held.reached.wait(), 15)
    [row] = update_rows(database)
    assert row["body"] is not None  # stored before Telegram got its 200
    assert row["handled_at"] is None
    await killed(process, held)
    assert keyboards_for(telegram, photo) == []

    process = await webhook_bot()
    [keyboard] = await telegram.wait_for_call(
        "sendMessage",
        chat_id=USER,
        where=keyboard_for(photo),
        timeout=15,
    )
    await wait_until(lambda: update_rows(database)[0]["handled_at"], what="marked handled")
    # The keyboard works: one submit, one video.
    message = keyboard.result
    telegram.press_button(USER, USER, message["message_id"], button_data(message, "Generate"))
    await wait_until(lambda: ledger(database)[0]["notified_at"], timeout=20, what="video")
    log = await stopped(process)
    assert REDONE in log
    assert len(keyboards_for(telegram, photo)) == 1
    assert (len(segmind.submits), len(videos(telegram))) == (1, 1)
    assert all(row["handled_at"] is not None for row in update_rows(database))


async def test_a_generate_press_interrupted_by_a_kill_makes_one_video(
    telegram: FakeTelegram, segmind: FakeSegmind, webhook_bot, database
):
    telegram.private_chat(USER)
    process = await webhook_bot()
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    held = telegram.hold_next("answerCallbackQuery", chat_id=None)
    press = telegram.press_button(
        USER, USER, keyboard["message_id"], button_data(keyboard, "Generate")
    )
    await asyncio.wait_for(held.reached.wait(), 15)
    await killed(process, held)
    assert press not in telegram.callback_answers

    process = await webhook_bot()
    await wait_until(lambda: press in telegram.callback_answers, what="the press answered")
    await wait_until(lambda: ledger(database)[0]["notified_at"], timeout=20, what="video")
    await wait_until(
        lambda: all(row["handled_at"] for row in update_rows(database)), what="all handled"
    )
    log = await stopped(process)
    assert REDONE in log
    [job] = ledger(database)
    assert job["state"] == "delivered"
    assert (len(segmind.submits), len(videos(telegram))) == (1, 1)


async def test_a_successful_payment_interrupted_by_a_kill_pays_for_one_job(
    telegram: FakeTelegram, segmind: FakeSegmind, webhook_bot, database
):
    """Killed at the handler's last step (the "payment received" edit): the redone
    update finds the payment recorded (by its charge id) and starts nothing more."""
    telegram.private_chat(USER)
    process = await webhook_bot(PRICE_STARS=str(PRICE))
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    invoice = await invoice_for(telegram, keyboard, USER, USER)
    held = telegram.hold_next(
        "editMessageText",
        chat_id=USER,
        where=lambda params: params.get("text") == texts.payment_received("en"),
    )
    result = await paid(telegram.pay_invoice(USER, invoice.result))
    await asyncio.wait_for(held.reached.wait(), 15)
    await killed(process, held)
    [payment] = telegram.payments
    unhandled = [row["update_id"] for row in update_rows(database) if row["handled_at"] is None]
    assert unhandled == [payment.update_id]

    process = await webhook_bot(PRICE_STARS=str(PRICE))
    await wait_until(lambda: ledger(database)[0]["notified_at"], timeout=20, what="video")
    await wait_until(
        lambda: all(row["handled_at"] for row in update_rows(database)), what="all handled"
    )
    log = await stopped(process)
    assert f"update {payment.update_id}: {REDONE}" in log
    [job] = ledger(database)
    assert (job["state"], job["charge_id"]) == ("delivered", result.charge_id)
    [row] = payment_rows(database)
    assert (row["charge_id"], row["refund"]) == (result.charge_id, "none")
    assert (len(telegram.payments), len(telegram.refunds)) == (1, 0)
    assert (len(segmind.submits), len(videos(telegram))) == (1, 1)


async def test_in_polling_mode_a_photo_confirmed_before_its_keyboard_gets_it_after_a_restart(
    telegram: FakeTelegram, segmind: FakeSegmind, spawn, env, database
):
    """PTB confirms what getUpdates returned with its next getUpdates, right away: the
    kill comes after Telegram forgot the update. The inbox stored it before that."""
    telegram.private_chat(USER)
    process = await spawn(env)
    held = telegram.hold_next("sendMessage", chat_id=USER)
    photo = telegram.send_photo(USER, USER)
    await asyncio.wait_for(held.reached.wait(), 15)
    await wait_until(lambda: telegram.pending_updates() == 0, what="Telegram told it was taken")
    await killed(process, held)

    process = await spawn(env)
    await telegram.wait_for_call(
        "sendMessage",
        chat_id=USER,
        where=keyboard_for(photo),
        timeout=15,
    )
    await wait_until(lambda: update_rows(database)[0]["handled_at"], what="marked handled")
    log = await stopped(process)
    assert REDONE in log
    assert len(keyboards_for(telegram, photo)) == 1


async def test_an_update_whose_handler_raised_is_marked_handled(
    telegram: FakeTelegram, make_settings, database
):
    """The error handler has dealt with it (logged; the user told where it can): not
    handled again at the next start."""
    telegram.private_chat(USER)
    telegram.fail_next("sendMessage", error_code=400, description="Bad Request: odd", chat_id=USER)
    async with running(make_settings()) as app:
        telegram.send_text(USER, USER, "/start")
        await telegram.wait_for_call("sendMessage", chat_id=USER)
        await settled(app, telegram)
        await wait_until(lambda: update_rows(database)[0]["handled_at"], what="marked handled")
        assert app.bot_data["runtime"].inbox.in_hand == 0
    [row] = update_rows(database)
    assert row["attempts"] == 1


async def test_a_polled_batch_is_stored_all_at_once_before_telegram_is_told_it_was_taken(
    telegram: FakeTelegram, make_settings, database, monkeypatch
):
    """Updates that come together come back in one getUpdates. Each is stored before
    the next getUpdates confirms it, and the batch's writes go to the ledger together:
    stored one after another, as PTB queues them, 50 updates a second came in no faster
    than the ledger's writes in turn and every answer waited (docs/benchmarks.md)."""
    in_flight = most = 0
    receive_update = SqliteLedger.receive_update

    async def counted(self: SqliteLedger, *args: Any) -> bool:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await receive_update(self, *args)
        finally:
            in_flight -= 1

    monkeypatch.setattr(SqliteLedger, "receive_update", counted)
    users = range(USER, USER + 5)
    for user in users:
        telegram.private_chat(user)
        telegram.send_text(user, user, "/start")  # all waiting before the first poll
    async with running(make_settings()) as app:
        for user in users:
            await telegram.wait_for_call("sendMessage", chat_id=user)
        await settled(app, telegram)
        await wait_until(
            lambda: all(row["handled_at"] for row in update_rows(database)), what="handled"
        )
    assert most == len(users)
    rows = update_rows(database)
    assert len(rows) == len(users)
    for row in rows:  # Telegram's own JSON, as recovery reads it back
        update = Update.de_json(json.loads(row["body"]), None)
        assert update is not None
        assert update.update_id == row["update_id"]
        assert update.effective_user is not None
        assert update.effective_user.id in users
        assert row["attempts"] == 1


# -- several instances on PostgreSQL: another instance takes it over ----------------------


@pytest.fixture
async def two_instances(
    telegram: FakeTelegram, env: dict[str, str], postgres_url: str, tmp_path: Path
) -> AsyncIterator[Callable[[int], Awaitable[list[BotProcess]]]]:
    """Starts two bots (videos at ``price`` Stars) on one DATABASE_URL, behind a
    round-robin balancer; their leases last SHORT_LEASE seconds."""
    processes: list[BotProcess] = []
    balancers: list[RoundRobinBalancer] = []

    async def start(price: int) -> list[BotProcess]:
        ports = [free_port() for _ in range(2)]
        balancer = await RoundRobinBalancer([f"http://127.0.0.1:{p}" for p in ports]).start()
        balancers.append(balancer)
        telegram.webhook_proxy = balancer.url
        for port in ports:
            process = BotProcess(
                {
                    **env,
                    "DATABASE_URL": postgres_url,
                    "WEBHOOK_URL": WEBHOOK_URL,
                    "WEBHOOK_SECRET": SECRET,
                    "HTTP_LISTEN": f"127.0.0.1:{port}",
                    "PRICE_STARS": str(price),
                    "LOG_LEVEL": "INFO",
                    **shortened(lease=SHORT_LEASE),
                },
                tmp_path,
                module=MODULE,
            )
            processes.append(await process.start())
        await wait_until(
            lambda: len(telegram.calls_of("setWebhook")) == 2, timeout=60, what="both serving"
        )
        return processes

    yield start
    for process in processes:
        await process.kill()
    for balancer in balancers:
        await balancer.close()


def holder(processes: list[BotProcess], owner: str) -> BotProcess:
    """The instance a lease's owner names (its id is host-pid-random)."""
    pid = int(owner.rsplit("-", 2)[1])
    [process] = [p for p in processes if p.process is not None and p.process.pid == pid]
    return process


@pytest.mark.timeout(120)  # its own bounds add up to more than 60 s
async def test_a_generate_press_whose_instance_died_is_taken_over_and_makes_one_video(
    telegram: FakeTelegram, segmind: FakeSegmind, two_instances, postgres_url
):
    instances = await two_instances(0)
    telegram.private_chat(USER)
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    held = telegram.hold_next("answerCallbackQuery")
    press = telegram.press_button(
        USER, USER, keyboard["message_id"], button_data(keyboard, "Generate")
    )
    await asyncio.wait_for(held.reached.wait(), 15)
    db = await asyncpg.connect(postgres_url)
    try:
        owner = await db.fetchval(
            "SELECT owner FROM updates WHERE handled_at IS NULL AND body LIKE '%callback_query%'"
        )
        victim = holder(instances, owner)
        await killed(victim, held)
        [survivor] = [p for p in instances if p is not victim]
        await wait_until(
            lambda: press in telegram.callback_answers, timeout=TAKEOVER_WITHIN, what="answered"
        )
        await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=20)

        async def done() -> bool:
            jobs = await db.fetch("SELECT * FROM jobs")
            unhandled = await db.fetchval("SELECT count(*) FROM updates WHERE handled_at IS NULL")
            return unhandled == 0 and all(job["notified_at"] is not None for job in jobs)

        await until(done, "the survivor done")
        [job] = await db.fetch("SELECT * FROM jobs")
    finally:
        await db.close()
    log = await stopped(survivor)
    assert REDONE in log
    assert job["state"] == "delivered"
    assert (len(segmind.submits), len(videos(telegram))) == (1, 1)


@pytest.mark.timeout(120)  # its own bounds add up to more than 60 s
async def test_a_payment_whose_instance_died_before_recording_it_is_taken_over(
    telegram: FakeTelegram, segmind: FakeSegmind, two_instances, postgres_url
):
    """The worst loss: the Stars taken, the update answered 200, and the instance dead
    before the payment reached the ledger. The test holds the payments table locked, so
    the handler waits at its INSERT; the instance is killed there (its transaction dies
    with it), and the other instance records the payment from the stored update."""
    instances = await two_instances(PRICE)
    telegram.private_chat(USER)
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    invoice = await invoice_for(telegram, keyboard, USER, USER)
    lock = await asyncpg.connect(postgres_url)
    try:
        async with lock.transaction():
            await lock.execute("LOCK TABLE payments IN EXCLUSIVE MODE")
            result = await paid(telegram.pay_invoice(USER, invoice.result))
            [payment] = telegram.payments

            async def waiting_at_the_lock() -> str | None:
                owner = await lock.fetchval(
                    "SELECT owner FROM updates WHERE update_id=$1 AND handled_at IS NULL",
                    payment.update_id,
                )
                waiting = await lock.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type='Lock'"
                )
                return owner if owner and waiting else None

            owner = await until(waiting_at_the_lock, "the handler blocked at the payment")
            victim = holder(instances, owner)
            victim.signal(signal.SIGKILL)
            await victim.wait()
        # The lock is gone; the dead instance's transaction was rolled back.
        assert await lock.fetchval("SELECT count(*) FROM payments") == 0
        [survivor] = [p for p in instances if p is not victim]

        async def recorded() -> list[Any]:
            return await lock.fetch("SELECT * FROM payments")

        [row] = await until(recorded, "the survivor recorded the payment", TAKEOVER_WITHIN)
        assert (row["charge_id"], row["refund"]) == (result.charge_id, "none")
        await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=20)

        async def settled() -> bool:
            jobs = await lock.fetch("SELECT * FROM jobs")
            unhandled = await lock.fetchval(
                "SELECT count(*) FROM updates WHERE handled_at IS NULL"
            )
            return unhandled == 0 and all(job["notified_at"] is not None for job in jobs)

        await until(settled, "the survivor done")
        [job] = await lock.fetch("SELECT * FROM jobs")
    finally:
        await lock.close()
    log = await stopped(survivor)
    assert f"update {payment.update_id}: {REDONE}" in log
    assert (job["state"], job["charge_id"]) == ("delivered", result.charge_id)
    assert (len(telegram.payments), len(telegram.refunds)) == (1, 0)
    assert (len(segmind.submits), len(videos(telegram))) == (1, 1)


async def until(read, what: str, timeout: float = 15.0) -> Any:
    """``await read()`` until it gives something truthy (read again between tries)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await read()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)  # between reads of a state; never a wait in itself
