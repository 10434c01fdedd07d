"""Telegram Stars and the real ``python -m bot`` process: a bad price, and SIGKILL at the
worst moments for money.

The bot runs as a child process on an SQLite ledger file, against the fakes served by
this test's event loop. It is killed where a payment or a refund is half recorded,
started again (with every update it had seen re-delivered where Telegram would), and the
money is counted: charges, submits, refunds, and what the user was told. Before counting
an absence the bot is stopped with SIGTERM once the ledger and the fakes show it settled:
a graceful stop handles every update it had fetched to its end.
"""

from __future__ import annotations

import signal

import pytest

from bot.i18n import texts
from tests.conftest import ADMIN_ID, bot_env, ledger, wait_until
from tests.fakes.segmind import TEST_API_KEY
from tests.fakes.telegram import TEST_TOKEN, iter_updates
from tests.processes import BotProcess
from tests.test_crash import redeliver_everything
from tests.test_payments import (
    PRICE,
    invoice_for,
    paid,
    payment_rows,
    refund_notices,
    sent_texts,
    unsettled_rows,
)
from tests.test_private_flow import send_photo_get_keyboard

USER = 1701


@pytest.fixture
def env(telegram, segmind, database):
    return bot_env(
        telegram, segmind, database, POLL_INTERVAL_SECONDS="0.1", PRICE_STARS=str(PRICE)
    )


async def stop_when_settled(telegram, database, process: BotProcess) -> None:
    """Once the ledger has no work left and every update was fetched (and confirmed),
    SIGTERM: the bot finishes every update it had fetched, then exits 0."""

    def left() -> list[str]:
        pending = ["updates not yet fetched"] if telegram.pending_updates() else []
        return [*pending, *unsettled_rows(database)]

    await wait_until(lambda: not left(), timeout=20, what="the bot to settle")
    process.signal(signal.SIGTERM)
    assert await process.wait() == 0


async def kill(process: BotProcess) -> None:
    process.signal(signal.SIGKILL)
    await process.wait()


# -- 11. a malformed price ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["fifty", "-5", "10001", "*=50,720p/9s=90", "720p/8s=90"],
    ids=["words", "negative", "over-telegrams-cap", "unknown-duration", "no-default"],
)
async def test_a_malformed_price_stops_the_bot_with_one_line_naming_it(spawn, env, value):
    process = await spawn({**env, "PRICE_STARS": value})
    code = await process.wait()
    _, stderr = await process.output()
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: PRICE_STARS "), lines[0]
    assert "Traceback" not in stderr
    assert TEST_TOKEN not in stderr
    assert TEST_API_KEY not in stderr


# -- 12. SIGKILL where money is half recorded ------------------------------------------------


async def test_sigkill_after_the_payment_was_recorded_and_before_the_submit(
    telegram, segmind, spawn, env, database
):
    telegram.private_chat(USER)
    process = await spawn(env)
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    invoice = await invoice_for(telegram, keyboard, USER, USER)
    # Telegram holds up the photo's download (flood control, 20 s): the paid job waits
    # in PREPARING, its payment recorded, nothing uploaded or submitted yet.
    telegram.fail_next("getFile", error_code=429, description="Too Many Requests: retry after 20")
    result = await paid(telegram.pay_invoice(USER, invoice.result))
    await wait_until(
        lambda: payment_rows(database) and telegram.calls_of("getFile"),
        what="the payment recorded and the job under way",
    )
    await kill(process)

    (job,) = ledger(database)
    assert (job["state"], job["charge_id"]) == ("preparing", result.charge_id)
    (row,) = payment_rows(database)
    assert (row["charge_id"], row["job_id"], row["refund"]) == (
        result.charge_id,
        job["id"],
        "none",
    )
    assert (segmind.uploads, segmind.submits) == ([], [])

    # Telegram re-sends what the dead process had not confirmed; we re-send everything,
    # the successful_payment included.
    assert redeliver_everything(telegram) >= 4  # photo, Generate, pre-checkout, payment
    (payment,) = telegram.payments
    process = await spawn(env)
    (video,) = await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=15)
    assert video.ok
    await stop_when_settled(telegram, database, process)

    handed = [update["update_id"] for update in iter_updates(telegram.calls)]
    assert handed.count(payment.update_id) == 2  # the second process got it too
    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (1, 1, 0)
    assert len([c for c in telegram.calls_of("sendVideo") if c.ok]) == 1
    assert len(payment_rows(database)) == 1
    (job,) = ledger(database)
    assert (job["state"], job["charge_id"]) == ("delivered", result.charge_id)
    assert refund_notices(telegram, USER) == []
    keyboards = [
        text for text in sent_texts(telegram, USER) if texts.keyboard_prompt("en") in text
    ]
    assert len(keyboards) == 1  # the re-delivered photo got no second keyboard
    assert len(telegram.calls_of("sendInvoice")) == 1
    # Reconciliation at start found every Telegram charge in the ledger: no alert.
    assert telegram.calls_of("sendMessage", chat_id=ADMIN_ID) == []


async def test_sigkill_between_the_refund_and_recording_it_refunds_once_and_tells_once(
    telegram, segmind, spawn, env, database
):
    telegram.private_chat(USER)
    segmind.fail_next_job("Content blocked by safety filter (RAI)")
    # Telegram refunds, but the bot never hears its "true"...
    telegram.refund_then_drop_answer(disconnect=True)
    process = await spawn(env)
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    invoice = await invoice_for(telegram, keyboard, USER, USER)
    result = await paid(telegram.pay_invoice(USER, invoice.result))
    # ... and dies before it could record anything about it.
    await telegram.wait_for_call("refundStarPayment", timeout=15)
    await kill(process)

    assert len(telegram.refunds) == 1  # the Stars are back already
    (row,) = payment_rows(database)
    assert (row["charge_id"], row["refund"]) == (result.charge_id, "due")
    assert refund_notices(telegram, USER) == []

    process = await spawn(env)
    await wait_until(
        lambda: payment_rows(database)[0]["refund_told_at"] is not None,
        timeout=20,
        what="the refund confirmed and told",
    )
    await stop_when_settled(telegram, database, process)

    calls = telegram.calls_of("refundStarPayment")
    assert calls[0].lost_answer == {"ok": True, "result": True}
    assert "CHARGE_ALREADY_REFUNDED" in calls[-1].response["description"]
    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (1, 1, 1)
    assert telegram.star_balance == 0
    (row,) = payment_rows(database)
    assert (row["refund"], row["refund_reason"]) == ("done", "job_ended")
    (notice,) = refund_notices(telegram, USER)
    assert notice.startswith("⭐ 50 refunded")
    (job,) = ledger(database)
    assert job["state"] == "failed"
    # The failure itself is told once, or twice if the kill came between sending it and
    # writing that down (the one documented repeat after a crash).
    outcome = [text for text in sent_texts(telegram, USER) if "try another photo" in text]
    assert 1 <= len(outcome) <= 2
