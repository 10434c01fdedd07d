"""A ledger that cannot be written (disk full, read-only) never drops an update silently.

"Read-only" is SQLite's ``PRAGMA query_only=ON`` on the bot's own connection: every
write then fails with "attempt to write a readonly database" (SQLITE_READONLY), the
same error path as a file made read-only, at once and deterministically. "Disk full" is
``PRAGMA max_page_count`` set to the file's size: the next write that needs a new page
fails with "database or disk is full" (SQLITE_FULL), as on a full disk.
"""

from __future__ import annotations

import sqlite3

import pytest

from bot.core.alerts import AlertKind, Alerts
from bot.core.errors import LedgerReadFailed, LedgerWriteFailed
from bot.core.jobs import NewJob
from bot.core.options import VideoOptions
from bot.core.payments import NewPayment
from bot.i18n import texts
from bot.storage import SqliteLedger
from bot.storage.held import HeldPayments
from bot.telegram import runtime as runtime_module
from tests.conftest import ADMIN_ID, running, settled, wait_until
from tests.test_payments import payment_rows
from tests.test_private_flow import button_data, send_photo_get_keyboard

USER = 702


def draft(n: int) -> NewJob:
    return NewJob(
        chat_id=USER,
        user_id=USER,
        chat_type="private",
        trigger_message_id=n,
        photo_message_id=n,
        thread_id=None,
        file_id="f" * 400 + str(n),
        file_unique_id=f"u{n}",
        file_size=1,
        mime_type="image/jpeg",
    )


async def fill(ledger: SqliteLedger) -> None:
    for n in range(1, 1000):
        await ledger.create_draft(draft(n), VideoOptions())


async def test_a_full_disk_raises_ledger_write_failed_and_the_next_write_works(tmp_path):
    ledger = SqliteLedger(tmp_path / "l.sqlite3")
    await ledger.open()
    try:
        async with ledger.db.execute("PRAGMA page_count") as cursor:
            (pages,) = await cursor.fetchone()  # type: ignore[misc]
        await ledger.db.execute(f"PRAGMA max_page_count={pages}")
        with pytest.raises(LedgerWriteFailed, match="disk is full"):
            await fill(ledger)
        assert not ledger.db.in_transaction
        await ledger.db.execute("PRAGMA max_page_count=1073741823")
        job, created = await ledger.create_draft(draft(5000), VideoOptions())
        assert created
        assert await ledger.get(job.id) is not None
    finally:
        await ledger.close()


async def test_a_read_only_ledger_raises_ledger_write_failed(tmp_path):
    ledger = SqliteLedger(tmp_path / "l.sqlite3")
    await ledger.open()
    try:
        await ledger.db.execute("PRAGMA query_only=ON")
        with pytest.raises(LedgerWriteFailed, match="read-only"):
            await ledger.create_draft(draft(1), VideoOptions())
        assert not ledger.db.in_transaction
    finally:
        await ledger.close()


async def test_the_user_is_told_to_try_again_and_work_resumes_when_writable(
    telegram, segmind, make_settings, monkeypatch, caplog
):
    monkeypatch.setattr(runtime_module, "LEDGER_PROBE_SECONDS", 0.2)
    telegram.private_chat(USER)
    telegram.private_chat(ADMIN_ID)
    async with running(make_settings()) as bot:
        runtime = bot.bot_data["runtime"]
        photo, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
        await runtime.ledger.db.execute("PRAGMA query_only=ON")

        # A photo: a plain reply, not silence.
        telegram.send_photo(USER, USER)
        (busy,) = await telegram.wait_for_call(
            "sendMessage",
            chat_id=USER,
            where=lambda c: c.params["text"] == texts.ledger_busy("en"),
        )
        # A button: the callback answer says it.
        telegram.press_button(
            USER, USER, keyboard["message_id"], button_data(keyboard, "Generate")
        )
        (answer,) = await telegram.wait_for_call(
            "answerCallbackQuery", where=lambda c: c.params.get("text") == texts.ledger_busy("en")
        )
        # Operators: one alert, however many failures.
        telegram.send_photo(USER, USER)
        await telegram.wait_for_call(
            "sendMessage",
            chat_id=USER,
            count=2,
            where=lambda c: c.params["text"] == texts.ledger_busy("en"),
        )
        alert = texts.alert("en", AlertKind.LEDGER_FAILING)
        await telegram.wait_for_call(
            "sendMessage", chat_id=ADMIN_ID, where=lambda c: c.params["text"] == alert
        )

        await runtime.ledger.db.execute("PRAGMA query_only=OFF")
        resolved = texts.alert("en", AlertKind.LEDGER_FAILING, resolved=True)
        await telegram.wait_for_call(
            "sendMessage", chat_id=ADMIN_ID, where=lambda c: c.params["text"] == resolved
        )
        await send_photo_get_keyboard(telegram, USER, USER)  # the photo again: a keyboard
        await settled(bot, telegram)
        alerts = [
            c
            for c in telegram.calls_of("sendMessage", chat_id=ADMIN_ID)
            if "⚠️" in c.params["text"]
        ]
        assert len(alerts) == 1
    assert "Traceback" not in caplog.text
    assert "cannot rollback" not in caplog.text


async def test_the_ledger_notices_its_file_deleted_or_replaced(tmp_path):
    path = tmp_path / "l.sqlite3"
    ledger = SqliteLedger(path)
    await ledger.open()
    try:
        assert ledger.gone() is None
        other = tmp_path / "other"
        other.write_bytes(path.read_bytes())
        other.replace(path)
        assert ledger.gone() == "was replaced by another file"
        path.unlink()
        assert ledger.gone() == "was deleted"
    finally:
        await ledger.close()


async def test_a_payment_the_ledger_cannot_record_is_held_and_starts_its_job_once_writable(
    telegram, segmind, make_settings, monkeypatch
):
    monkeypatch.setattr(runtime_module, "LEDGER_PROBE_SECONDS", 0.2)
    telegram.private_chat(USER)
    async with running(make_settings(PRICE_STARS="50")) as bot:
        runtime = bot.bot_data["runtime"]
        _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
        telegram.press_button(
            USER, USER, keyboard["message_id"], button_data(keyboard, "Generate")
        )
        (invoice,) = await telegram.wait_for_call("sendInvoice", chat_id=USER)
        # Writes stop; reads still work, so the pre-checkout is answered ok from the ledger.
        await runtime.ledger.db.execute("PRAGMA query_only=ON")
        result = await telegram.pay_invoice(USER, invoice.result)
        assert result.paid
        await telegram.wait_for_call(
            "sendMessage",
            chat_id=USER,
            where=lambda c: c.params["text"] == texts.payment_held("en"),
        )
        assert segmind.submits == []  # nothing recorded, nothing started yet

        await runtime.ledger.db.execute("PRAGMA query_only=OFF")
        await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=15)
        await settled(bot, telegram)
        payment = await runtime.ledger.payment(result.charge_id)
        assert payment is not None
        assert payment.job_id is not None
    assert len(segmind.submits) == 1
    assert telegram.refunds == []


async def test_a_read_sqlite_cannot_answer_raises_ledger_read_failed(tmp_path):
    """Reads fail as the core's LedgerReadFailed, not sqlite3's errors: the Telegram layer
    handles both ledger backends alike (here the jobs table vanished under the bot)."""
    path = tmp_path / "l.sqlite3"
    ledger = SqliteLedger(path)
    await ledger.open()
    try:
        with sqlite3.connect(path) as other:
            other.execute("DROP TABLE payments")
        with pytest.raises(LedgerReadFailed, match="no such table"):
            await ledger.payment("ch-1")
        paid = NewPayment(
            charge_id="ch-1", provider_charge_id="", user_id=1, chat_id=1, payload="x", amount=1
        )
        with pytest.raises(LedgerWriteFailed, match="no such table"):  # its first step: a read
            await ledger.record_payment(paid)
        assert not ledger.db.in_transaction
    finally:
        await ledger.close()


async def test_alert_states_the_ledger_missed_are_written_once_it_takes_writes(tmp_path):
    ledger = SqliteLedger(tmp_path / "l.sqlite3")
    await ledger.open()
    sent: list[tuple[AlertKind, bool]] = []

    async def send(kind: AlertKind, resolved: bool) -> None:
        sent.append((kind, resolved))

    try:
        alerts = Alerts(ledger, send)
        await ledger.db.execute("PRAGMA query_only=ON")
        await alerts.trouble(AlertKind.SEGMIND_DOWN)  # sent, but not recorded
        await alerts.trouble(AlertKind.LEDGER_FAILING)
        assert alerts.unsaved == {AlertKind.SEGMIND_DOWN, AlertKind.LEDGER_FAILING}
        await alerts.save_unsaved()  # still read-only: kept for the next try
        assert await ledger.alert_state(AlertKind.SEGMIND_DOWN.value) is None

        await ledger.db.execute("PRAGMA query_only=OFF")
        await alerts.save_unsaved()
        assert alerts.unsaved == frozenset()
        state = await ledger.alert_state(AlertKind.SEGMIND_DOWN.value)
        assert state is not None
        assert state[0]  # open
        # A restart (new Alerts on the same ledger) neither repeats it nor forgets it.
        restarted = Alerts(ledger, send)
        await restarted.trouble(AlertKind.SEGMIND_DOWN)
        await restarted.cleared(AlertKind.SEGMIND_DOWN)
        assert sent == [
            (AlertKind.SEGMIND_DOWN, False),
            (AlertKind.LEDGER_FAILING, False),
            (AlertKind.SEGMIND_DOWN, True),
        ]
    finally:
        await ledger.close()


async def test_an_operator_refunds_a_charge_only_telegram_knows(
    telegram, segmind, make_settings, monkeypatch, database
):
    """A payment held in memory, and the process gone before the ledger took writes, its
    side files lost too (a reboot cleared the temp folder): only Telegram lists the
    charge. /refund finds it there, refunds it to its payer and records it."""
    monkeypatch.setattr(runtime_module, "LEDGER_PROBE_SECONDS", 3600)
    telegram.private_chat(USER)
    telegram.private_chat(ADMIN_ID)
    settings = make_settings(PRICE_STARS="50")
    async with running(settings) as bot:
        runtime = bot.bot_data["runtime"]
        _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
        telegram.press_button(
            USER, USER, keyboard["message_id"], button_data(keyboard, "Generate")
        )
        (invoice,) = await telegram.wait_for_call("sendInvoice", chat_id=USER)
        await runtime.ledger.db.execute("PRAGMA query_only=ON")
        result = await telegram.pay_invoice(USER, invoice.result)
        assert result.paid
        await telegram.wait_for_call(
            "sendMessage",
            chat_id=USER,
            where=lambda c: c.params["text"] == texts.payment_held("en"),
        )
    side = HeldPayments(settings.database_path)
    assert any(path.exists() for path in side.paths)
    side.clear()

    async with running(settings) as bot:
        runtime = bot.bot_data["runtime"]
        charge = result.charge_id
        assert await runtime.ledger.payment(charge) is None
        for command, answer in [
            ("/refund no-such-charge", texts.refund_command("en", "unknown", "no-such-charge")),
            (f"/refund {charge}", texts.refund_unrecorded(texts.FALLBACK_LANGUAGE, charge, USER)),
        ]:
            telegram.send_text(ADMIN_ID, ADMIN_ID, command)
            await telegram.wait_for_call(
                "sendMessage", chat_id=ADMIN_ID, where=lambda c, a=answer: c.params["text"] == a
            )
        await telegram.wait_for_call("refundStarPayment")
        await wait_until(
            lambda: [row for row in payment_rows(database) if row["refund_told_at"]],
            what="the refund done and its payer told",
        )
        payment = await runtime.ledger.payment(charge)
        assert payment is not None
        assert (payment.user_id, payment.refund.value) == (USER, "done")
        # (Its job still awaits a payment: the user may pay again, and then gets a video.)
    assert [(r.user_id, r.charge_id) for r in telegram.refunds] == [(USER, charge)]
    assert segmind.submits == []  # the operator asked for the Stars back, not a video
    (notice,) = [
        c.params["text"]
        for c in telegram.calls_of("sendMessage", chat_id=USER)
        if "refunded" in c.params["text"]
    ]
    assert notice.startswith("⭐ 50 refunded")
