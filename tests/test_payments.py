"""Telegram Stars end to end: the real PTB Application, httpx and SQLite against the fakes.

Every test counts the money and the work: the charges the fake Telegram took
(``payments``), the submits the fake Segmind got (``submits``), the Stars that went back
(``refunds``), and what the user read. Something that must NOT happen is asserted only
once the whole system has settled (:func:`settle`): every update the fake handed out has
been handled to the end, no job is unfinished, no refund is due or untold, no
pre-checkout query waits. No test sleeps to prove an absence.

The crash tests (a real ``python -m bot`` killed at the worst moments) are in
``test_payments_crash.py``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from telegram import Update
from telegram.ext import Application, ContextTypes, TypeHandler

from bot.core.jobs import ACTIVE_STATES, TERMINAL_STATES
from bot.core.options import VideoOptions
from bot.core.payments import PreCheckout, invoice_payload
from bot.i18n import texts
from bot.telegram.messenger import TelegramMessenger
from tests.conftest import ADMIN_ID, ledger, running, wait_until
from tests.fakes.telegram import Call, FakeTelegram, PaymentAttempt, PaymentResult, iter_updates
from tests.test_private_flow import (
    assert_plain,
    button_data,
    keyboard_labels,
    reply_target,
    send_photo_get_keyboard,
)

USER = 1501
OTHER = 1502
ASKER = 1503
BUYER = 1504
GROUP = -1005550001
PRICE = 50
#: After every handler of the bot: a handler here sees an update once the bot is done
#: with it (PTB runs the groups of one update in order, each to its end).
_LAST_GROUP = 1_000_000

_ACTIVE = {state.value for state in ACTIVE_STATES}
_TERMINAL = {state.value for state in TERMINAL_STATES}


# -- what the ledger says ---------------------------------------------------------------


def payment_rows(database: Path) -> list[dict[str, Any]]:
    """The payments table as rows, read with plain sqlite3 (what an operator would see)."""
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM payments ORDER BY paid_at")]


def unsettled_rows(database: Path) -> list[str]:
    """Ledger rows with work left: a job unfinished or untold, a refund due or untold."""
    if not database.exists():
        return []
    left = [
        f"job {job['id']} {job['state']}"
        for job in ledger(database)
        if job["state"] in _ACTIVE or (job["state"] in _TERMINAL and job["notified_at"] is None)
    ]
    left += [
        f"refund {row['charge_id'][:12]} {row['refund']}"
        for row in payment_rows(database)
        if row["refund"] == "due" or (row["refund"] == "done" and row["refund_told_at"] is None)
    ]
    return left


# -- what the bot has handled -----------------------------------------------------------


class Handled:
    """Update ids the bot has finished handling, in order (a re-delivered one twice)."""

    def __init__(self, application: Application) -> None:
        self.application = application
        self.ids: list[int] = []
        application.add_handler(TypeHandler(Update, self._seen), group=_LAST_GROUP)

    async def _seen(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        self.ids.append(update.update_id)

    def count(self, update_id: int) -> int:
        return self.ids.count(update_id)


def update_id_of(telegram: FakeTelegram, chat_id: int, message_id: int) -> int | None:
    """The update that carried a user's message, once the fake has handed it out."""
    for update in iter_updates(telegram.calls):
        message = update.get("message")
        if message and message["chat"]["id"] == chat_id and message["message_id"] == message_id:
            return int(update["update_id"])
    return None


def unhandled(telegram: FakeTelegram, handled: Handled) -> list[int]:
    """Updates the fake queued or handed out that the bot has not finished handling."""
    handed = Counter(update["update_id"] for update in iter_updates(telegram.calls))
    done = Counter(handled.ids)
    return sorted(update_id for update_id, n in handed.items() if done[update_id] < n)


async def settle(
    telegram: FakeTelegram, handled: Handled, database: Path, timeout: float = 15.0
) -> None:
    """Wait until nothing is left to happen: every update handled to its end, no job or
    refund with work left in the ledger, no pre-checkout query unanswered."""

    def left() -> list[str]:
        return [
            *(f"update {u}" for u in unhandled(telegram, handled)),
            *(["updates not yet fetched"] if telegram.pending_updates() else []),
            *(f"pre-checkout {a.query_id}" for a in telegram.pending_precheckouts),
            *unsettled_rows(database),
        ]

    try:
        await wait_until(lambda: not left(), timeout=timeout, what="the bot to settle")
    except AssertionError as exc:
        raise AssertionError(f"not settled: {left()}") from exc


# -- what the user does and sees ----------------------------------------------------------


def sent_texts(telegram: FakeTelegram, chat_id: int) -> list[str]:
    """The texts of the messages Telegram accepted for the chat, in order."""
    return [call.params["text"] for call in telegram.calls_of("sendMessage", chat_id) if call.ok]


def refund_notices(telegram: FakeTelegram, chat_id: int) -> list[str]:
    return [text for text in sent_texts(telegram, chat_id) if "refunded" in text]


def generate_label(message: dict[str, Any]) -> str:
    labels = [label for row in keyboard_labels(message) for label in row if "Generate" in label]
    assert len(labels) == 1, keyboard_labels(message)
    return labels[0]


def invoice_prices(call: Call) -> list[dict[str, Any]]:
    prices = call.params["prices"]
    return json.loads(prices) if isinstance(prices, str) else list(prices)


async def press(
    telegram: FakeTelegram, chat_id: int, user_id: int, message_id: int, label: str
) -> str | None:
    """Press the button whose label contains ``label`` on the message as it is now; the
    callback answer's text."""
    current = telegram.message(chat_id, message_id)
    assert current is not None, f"message {message_id} is gone"
    query = telegram.press_button(chat_id, user_id, message_id, button_data(current, label))
    await wait_until(lambda: query in telegram.callback_answers, what=f"answer to {label}")
    return telegram.callback_answers[query].get("text")


async def invoice_for(
    telegram: FakeTelegram, keyboard: dict[str, Any], chat_id: int = USER, user_id: int = USER
) -> Call:
    """Press Generate on a priced keyboard; the one sendInvoice it made."""
    before = len(telegram.calls_of("sendInvoice", chat_id))
    answer = await press(telegram, chat_id, user_id, keyboard["message_id"], "Generate")
    assert answer == texts.answer_invoice_sent("en")
    calls = await telegram.wait_for_call("sendInvoice", chat_id=chat_id, count=before + 1)
    assert calls[-1].ok, calls[-1].response

    # Once the invoice is out, the keyboard becomes the way back to the options.
    def changed() -> bool:
        shown = telegram.message(chat_id, keyboard["message_id"])
        return shown is not None and keyboard_labels(shown) == [[texts.change_options_label("en")]]

    await wait_until(changed, what="the Change options keyboard")
    return calls[-1]


async def paid(attempt: PaymentAttempt) -> PaymentResult:
    result = await attempt
    assert result.paid, result
    return result


async def refused(attempt: PaymentAttempt, verdict: PreCheckout) -> PaymentResult:
    """The bot said no at pre-checkout, in time, with the short reason for ``verdict``."""
    result = await attempt
    assert not result.paid
    assert not result.timed_out, "the pre-checkout query was never answered"
    assert result.error_message == texts.precheckout_refusal("en", verdict)
    assert len(result.error_message) <= 80
    assert_plain(result.error_message)
    return result


@pytest.fixture
async def priced(telegram, segmind, make_settings, database):
    """The bot at ⭐ 50 a video, and a record of the updates it handled."""
    async with running(make_settings(PRICE_STARS=str(PRICE))) as application:
        yield Handled(application)


# -- 1. free by default ---------------------------------------------------------------------


async def test_free_by_default_generate_submits_at_once_without_an_invoice(
    telegram, segmind, make_settings, database
):
    telegram.private_chat(USER)
    async with running(make_settings()) as application:
        handled = Handled(application)
        _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
        assert generate_label(keyboard) == texts.generate_label("en", 0)  # no price shown
        answer = await press(telegram, USER, USER, keyboard["message_id"], "Generate")
        assert answer == texts.answer_started("en")
        await telegram.wait_for_call("sendVideo", chat_id=USER)
        await settle(telegram, handled, database)

    assert telegram.calls_of("sendInvoice") == []
    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (0, 1, 0)
    assert payment_rows(database) == []
    assert [job["state"] for job in ledger(database)] == ["delivered"]


# -- 2. one price: invoice, pay, one job ------------------------------------------------------


async def test_a_priced_generate_sends_one_invoice_and_the_payment_starts_one_job(
    telegram, segmind, priced, database
):
    telegram.private_chat(USER)
    photo, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    assert generate_label(keyboard) == "🎬 Generate · ⭐ 50"
    invoice = await invoice_for(telegram, keyboard)
    # Pressed again (a stale view of the keyboard): the invoice already out is the answer.
    again = telegram.press_button(
        USER, USER, keyboard["message_id"], button_data(keyboard, "Generate")
    )
    await settle(telegram, priced, database)
    assert telegram.callback_answers[again]["text"] == texts.answer_awaiting_payment("en")

    (job,) = ledger(database)
    assert len(telegram.calls_of("sendInvoice")) == 1
    assert invoice.chat_id == USER
    assert invoice.params["currency"] == "XTR"
    assert invoice.params.get("provider_token") in (None, "")
    assert [price["amount"] for price in invoice_prices(invoice)] == [PRICE]
    assert invoice.params["payload"] == invoice_payload(job["id"], 1)
    assert reply_target(invoice.params) == photo["message_id"]
    assert (job["state"], job["price_stars"]) == ("awaiting_payment", PRICE)
    assert job["invoice_message_id"] == invoice.result["message_id"]
    # The keyboard became the way back: Change options (it voids the invoice).
    waiting = telegram.message(USER, keyboard["message_id"])
    assert keyboard_labels(waiting) == [[texts.change_options_label("en")]]
    assert waiting["text"] == texts.awaiting_payment("en", VideoOptions(), PRICE)
    assert (len(telegram.payments), len(segmind.submits)) == (0, 0)  # nothing before paying

    result = await paid(telegram.pay_invoice(USER, invoice.result))
    (answer,) = telegram.precheckout_answers
    assert (answer.ok, answer.accepted) == (True, True)
    (video,) = await telegram.wait_for_call("sendVideo", chat_id=USER)
    assert reply_target(video.params) == photo["message_id"]
    await settle(telegram, priced, database)

    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (1, 1, 0)
    assert telegram.star_balance == PRICE
    (row,) = payment_rows(database)
    assert row["charge_id"] == result.charge_id
    assert (row["job_id"], row["amount"], row["currency"], row["refund"]) == (
        job["id"],
        PRICE,
        "XTR",
        "none",
    )
    (job,) = ledger(database)
    assert (job["state"], job["charge_id"]) == ("delivered", result.charge_id)
    edits = [c.params["text"] for c in telegram.calls_of("editMessageText", USER) if c.ok]
    assert texts.payment_received("en") in edits
    assert refund_notices(telegram, USER) == []


# -- 3. a price per option --------------------------------------------------------------------


async def test_the_price_follows_the_options_on_the_button_and_the_invoice(
    telegram, segmind, make_settings, database
):
    telegram.private_chat(USER)
    async with running(make_settings(PRICE_STARS="*=50,720p/8s=90")) as application:
        handled = Handled(application)
        _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
        message_id = keyboard["message_id"]
        assert generate_label(keyboard) == "🎬 Generate · ⭐ 50"
        await press(telegram, USER, USER, message_id, "720p")
        await wait_until(
            lambda: "✅ 720p" in keyboard_labels(telegram.message(USER, message_id))[0]
        )
        assert generate_label(telegram.message(USER, message_id)) == "🎬 Generate · ⭐ 50"
        await press(telegram, USER, USER, message_id, "8 s")
        await wait_until(
            lambda: "✅ 8 s" in keyboard_labels(telegram.message(USER, message_id))[1]
        )
        assert generate_label(telegram.message(USER, message_id)) == "🎬 Generate · ⭐ 90"

        invoice = await invoice_for(telegram, telegram.message(USER, message_id))
        assert [price["amount"] for price in invoice_prices(invoice)] == [90]
        await paid(telegram.pay_invoice(USER, invoice.result))
        await telegram.wait_for_call("sendVideo", chat_id=USER)
        await settle(telegram, handled, database)

    (submit,) = segmind.submits
    assert (submit["quality"], submit["duration"]) == ("720p", 8)
    assert [payment.amount for payment in telegram.payments] == [90]
    assert [row["amount"] for row in payment_rows(database)] == [90]
    assert telegram.refunds == []


# -- 4. free videos first -----------------------------------------------------------------------


async def test_the_free_videos_need_no_invoice_and_the_next_one_does(
    telegram, segmind, make_settings, database
):
    telegram.private_chat(USER)
    async with running(make_settings(PRICE_STARS="50", FREE_VIDEOS_PER_USER="1")) as app:
        handled = Handled(app)
        _, first = await send_photo_get_keyboard(telegram, USER, USER)
        assert generate_label(first) == texts.generate_label("en", 0)  # free: no price shown
        answer = await press(telegram, USER, USER, first["message_id"], "Generate")
        assert answer == texts.answer_started("en")
        await telegram.wait_for_call("sendVideo", chat_id=USER)
        await settle(telegram, handled, database)
        assert telegram.calls_of("sendInvoice") == []
        assert (len(telegram.payments), len(segmind.submits)) == (0, 1)

        _, second = await send_photo_get_keyboard(telegram, USER, USER)
        assert generate_label(second) == "🎬 Generate · ⭐ 50"  # the free one is used up
        invoice = await invoice_for(telegram, second)
        await settle(telegram, handled, database)
        assert len(segmind.submits) == 1  # the second waits for its payment
        await paid(telegram.pay_invoice(USER, invoice.result))
        await telegram.wait_for_call("sendVideo", chat_id=USER, count=2)
        await settle(telegram, handled, database)

    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (1, 2, 0)
    assert len(telegram.calls_of("sendInvoice")) == 1
    jobs = ledger(database)
    assert [(job["state"], job["price_stars"]) for job in jobs] == [
        ("delivered", 0),
        ("delivered", PRICE),
    ]
    assert [job["charge_id"] is None for job in jobs] == [True, False]


async def test_an_invoice_that_could_not_be_sent_leaves_generate_to_press_again(
    telegram, segmind, priced, database
):
    telegram.private_chat(USER)
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    telegram.fail_next("sendInvoice", error_code=500, description="Internal Server Error")
    answer = await press(telegram, USER, USER, keyboard["message_id"], "Generate")
    assert answer == texts.answer_invoice_failed("en")
    # The keyboard still offers Generate (not a Change options with no invoice under it).
    assert generate_label(telegram.message(USER, keyboard["message_id"])) == "🎬 Generate · ⭐ 50"
    invoice = await invoice_for(telegram, keyboard)
    await paid(telegram.pay_invoice(USER, invoice.result))
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    await settle(telegram, priced, database)
    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (1, 1, 0)
    assert len([c for c in telegram.calls_of("sendInvoice") if c.ok]) == 1


# -- 5. pre-checkout refusals -------------------------------------------------------------------


async def test_someone_else_paying_the_askers_invoice_in_a_group_is_refused(
    telegram, segmind, priced, database
):
    telegram.group(GROUP, "Family", supergroup=True)
    telegram.user(ASKER, "Ann")
    telegram.user(OTHER, "Bob")
    photo = telegram.send_photo(GROUP, ASKER, caption="/warmth")
    (call,) = await telegram.wait_for_call(
        "sendMessage",
        chat_id=GROUP,
        where=lambda c: (
            "reply_markup" in c.params and reply_target(c.params) == photo["message_id"]
        ),
    )
    keyboard = call.response["result"]
    assert generate_label(keyboard) == "🎬 Generate · ⭐ 50"
    invoice = await invoice_for(telegram, keyboard, GROUP, ASKER)
    assert reply_target(invoice.params) == photo["message_id"]  # in the group, on the photo

    await refused(telegram.pay_invoice(OTHER, invoice.result), PreCheckout.NOT_YOURS)
    await settle(telegram, priced, database)
    assert (len(telegram.payments), len(segmind.submits)) == (0, 0)
    assert ledger(database)[0]["state"] == "awaiting_payment"

    # The asker still can, and the video comes to the group.
    await paid(telegram.pay_invoice(ASKER, invoice.result))
    (video,) = await telegram.wait_for_call("sendVideo", chat_id=GROUP)
    assert reply_target(video.params) == photo["message_id"]
    await settle(telegram, priced, database)
    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (1, 1, 0)
    assert [(row["user_id"], row["chat_id"]) for row in payment_rows(database)] == [(ASKER, GROUP)]


async def test_an_invoice_voided_by_change_options_is_refused_as_stale(
    telegram, segmind, priced, database
):
    telegram.private_chat(USER)
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    message_id = keyboard["message_id"]
    old = await invoice_for(telegram, keyboard)

    # The bot removes the void invoice; here Telegram refuses (too old, say), so the
    # user still has it to press.
    telegram.fail_next(
        "deleteMessage",
        error_code=400,
        description="Bad Request: message can't be deleted",
        chat_id=USER,
    )
    answer = await press(telegram, USER, USER, message_id, "Change options")
    assert answer == texts.answer_options_again("en")
    (delete,) = await telegram.wait_for_call("deleteMessage", chat_id=USER)
    assert int(delete.params["message_id"]) == old.result["message_id"]
    reopened = telegram.message(USER, message_id)
    assert generate_label(reopened) == "🎬 Generate · ⭐ 50"
    new = await invoice_for(telegram, reopened)
    (job,) = ledger(database)
    assert old.params["payload"] == invoice_payload(job["id"], 1)
    assert new.params["payload"] == invoice_payload(job["id"], 2)

    await refused(telegram.pay_invoice(USER, old.result), PreCheckout.STALE)
    await settle(telegram, priced, database)
    assert (len(telegram.payments), len(segmind.submits)) == (0, 0)

    await paid(telegram.pay_invoice(USER, new.result))
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    await settle(telegram, priced, database)
    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (1, 1, 0)
    assert [row["payload"] for row in payment_rows(database)] == [new.params["payload"]]


async def test_a_user_over_the_active_jobs_limit_at_pre_checkout_is_refused(
    telegram, segmind, make_settings, database
):
    telegram.private_chat(USER)
    segmind.processing_seconds = 60  # the first job stays active until advanced
    settings = make_settings(PRICE_STARS=str(PRICE), MAX_ACTIVE_JOBS_PER_USER="1")
    async with running(settings) as application:
        handled = Handled(application)
        _, first = await send_photo_get_keyboard(telegram, USER, USER)
        _, second = await send_photo_get_keyboard(telegram, USER, USER)
        # Both invoices go out: an unpaid job is not active yet.
        first_invoice = await invoice_for(telegram, first)
        second_invoice = await invoice_for(telegram, second)

        await paid(telegram.pay_invoice(USER, first_invoice.result))
        await wait_until(lambda: len(segmind.jobs) == 1, what="the first job submitted")
        await refused(
            telegram.pay_invoice(USER, second_invoice.result), PreCheckout.TOO_MANY_ACTIVE
        )
        assert (len(telegram.payments), len(segmind.submits)) == (1, 1)

        # Once the first video is out, the same invoice pays.
        segmind.advance(120)
        await telegram.wait_for_call("sendVideo", chat_id=USER)
        await settle(telegram, handled, database)
        segmind.processing_seconds = 0.15
        await paid(telegram.pay_invoice(USER, second_invoice.result))
        await telegram.wait_for_call("sendVideo", chat_id=USER, count=2)
        await settle(telegram, handled, database)

    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (2, 2, 0)
    assert [job["state"] for job in ledger(database)] == ["delivered", "delivered"]


# -- 6. answered in time under load -----------------------------------------------------------


async def test_pre_checkout_is_answered_within_seconds_while_30_photos_arrive(
    telegram, segmind, priced, database
):
    telegram.private_chat(USER)
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    invoice = await invoice_for(telegram, keyboard)
    crowd = list(range(3000, 3030))
    for user in crowd:
        telegram.private_chat(user)
        telegram.send_photo(user, user)
    attempt = telegram.pay_invoice(USER, invoice.result)  # queued behind the 30 photos
    await paid(attempt)

    (answer,) = telegram.precheckout_answers
    assert answer.since_fetch is not None
    assert answer.since_fetch < 2.0, f"pre-checkout answered {answer.since_fetch:.3f}s after fetch"
    assert answer.since_query < 2.0, f"pre-checkout answered {answer.since_query:.3f}s after Pay"
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    await settle(telegram, priced, database)
    keyboards = [c for c in telegram.calls_of("sendMessage") if "reply_markup" in c.params]
    assert len(keyboards) == 1 + len(crowd)
    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (1, 1, 0)


# -- 7. the same payment twice, a second payment ----------------------------------------------


async def test_a_redelivered_successful_payment_starts_nothing_new(
    telegram, segmind, priced, database
):
    telegram.private_chat(USER)
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    invoice = await invoice_for(telegram, keyboard)
    result = await paid(telegram.pay_invoice(USER, invoice.result))
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    await settle(telegram, priced, database)

    update_id = telegram.redeliver_payment(result.charge_id)
    await wait_until(lambda: priced.count(update_id) == 2, what="the re-delivery handled")
    await settle(telegram, priced, database)

    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (1, 1, 0)
    assert len(payment_rows(database)) == 1
    assert len(ledger(database)) == 1
    assert len(telegram.calls_of("sendVideo")) == 1
    assert refund_notices(telegram, USER) == []


async def test_a_second_payment_for_a_paid_job_is_refunded_at_once(
    telegram, segmind, priced, database
):
    telegram.private_chat(USER)
    segmind.processing_seconds = 0.5
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    invoice = await invoice_for(telegram, keyboard)
    # Paid twice at once (two devices): both pre-checkouts come before either payment.
    first = telegram.pay_invoice(USER, invoice.result)
    second = telegram.pay_again(first)
    first_result, second_result = await paid(first), await paid(second)
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    await settle(telegram, priced, database)

    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (2, 1, 1)
    (refund,) = telegram.refunds
    assert refund.charge_id == second_result.charge_id
    assert telegram.star_balance == PRICE
    (call,) = telegram.calls_of("refundStarPayment")
    assert (int(call.params["user_id"]), call.params["telegram_payment_charge_id"]) == (
        USER,
        second_result.charge_id,
    )
    rows = {row["charge_id"]: row for row in payment_rows(database)}
    assert rows[first_result.charge_id]["refund"] == "none"
    assert (
        rows[second_result.charge_id]["refund"],
        rows[second_result.charge_id]["refund_reason"],
    ) == (
        "done",
        "already_paid",
    )
    (notice,) = refund_notices(telegram, USER)
    assert notice.startswith("⭐ 50 refunded")
    assert_plain(notice)
    (job,) = ledger(database)
    assert (job["state"], job["charge_id"]) == ("delivered", first_result.charge_id)

    # Once the job runs, paying its invoice again is refused before any money moves.
    await refused(telegram.pay_again(first), PreCheckout.ALREADY_PAID)
    await settle(telegram, priced, database)
    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (2, 1, 1)


# -- 8. a paid job without a video is refunded once -------------------------------------------


def _content_blocked(segmind: Any) -> None:
    segmind.fail_next_job("Content blocked by safety filter (RAI)")


def _submit_refused(segmind: Any) -> None:
    segmind.fail_next_submit(400, error="Invalid image")


def _never_finishes(segmind: Any) -> None:
    segmind.processing_seconds = 60


@pytest.mark.parametrize(
    ("arrange", "settings", "state", "outcome"),
    [
        (_content_blocked, {}, "failed", "try another photo"),
        (_submit_refused, {}, "rejected", "couldn't use this photo"),
        (_never_finishes, {"JOB_DEADLINE_MINUTES": "0.02"}, "timed_out", "longer than usual"),
    ],
    ids=["segmind-failed", "submit-400", "past-deadline"],
)
async def test_a_paid_job_that_ends_without_a_video_is_refunded_once(
    telegram,
    segmind,
    make_settings,
    database,
    arrange: Callable[[Any], None],
    settings: dict[str, str],
    state: str,
    outcome: str,
):
    telegram.private_chat(USER)
    arrange(segmind)
    async with running(make_settings(PRICE_STARS=str(PRICE), **settings)) as application:
        handled = Handled(application)
        photo, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
        invoice = await invoice_for(telegram, keyboard)
        result = await paid(telegram.pay_invoice(USER, invoice.result))
        (notice,) = await telegram.wait_for_call(
            "sendMessage", chat_id=USER, where=lambda c: "refunded" in c.params["text"]
        )
        await settle(telegram, handled, database)

    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (1, 1, 1)
    assert telegram.refunds[0].charge_id == result.charge_id
    assert telegram.star_balance == 0
    assert len(telegram.calls_of("refundStarPayment")) == 1
    assert telegram.calls_of("sendVideo") == []
    (job,) = ledger(database)
    assert job["state"] == state
    (row,) = payment_rows(database)
    assert (row["refund"], row["refund_reason"]) == ("done", "job_ended")
    assert row["refund_told_at"] is not None
    told = sent_texts(telegram, USER)
    assert len([text for text in told if outcome in text]) == 1
    assert refund_notices(telegram, USER) == [notice.params["text"]]
    assert notice.params["text"].startswith("⭐ 50 refunded")
    assert_plain(notice.params["text"])
    assert reply_target(notice.params) == photo["message_id"]


async def test_a_user_who_blocks_the_bot_after_paying_gets_the_stars_back_silently(
    telegram, segmind, priced, database
):
    telegram.private_chat(USER)
    segmind.processing_seconds = 0.6
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    invoice = await invoice_for(telegram, keyboard)
    result = await paid(telegram.pay_invoice(USER, invoice.result))
    await wait_until(lambda: len(segmind.jobs) == 1, what="submitted")
    telegram.block_chat(USER)
    blocked_at = len(telegram.calls)
    await wait_until(lambda: telegram.refunds, what="the refund")
    await settle(telegram, priced, database)

    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (1, 1, 1)
    assert telegram.refunds[0].charge_id == result.charge_id
    (job,) = ledger(database)
    assert (job["state"], job["reason"]) == ("undeliverable", "chat_gone")
    (row,) = payment_rows(database)
    assert (row["refund"], row["refund_reason"]) == ("done", "job_ended")
    to_user = [
        c
        for c in telegram.calls[blocked_at:]
        if c.chat_id == USER and c.method != "refundStarPayment"  # a refund needs no chat
    ]
    assert [c for c in to_user if c.ok] == []  # nothing reached the blocked chat
    assert len(to_user) == 1, [(c.method, c.response) for c in to_user]  # one 403, then silence
    assert not any(c.ok for c in telegram.calls_of("sendVideo"))


# -- 9. refunds that Telegram does not confirm at once ----------------------------------------


async def _failed_paid_job(telegram, segmind) -> PaymentResult:
    telegram.private_chat(USER)
    segmind.fail_next_job("Content blocked by safety filter (RAI)")
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    invoice = await invoice_for(telegram, keyboard)
    return await paid(telegram.pay_invoice(USER, invoice.result))


async def test_a_refund_refused_by_server_errors_and_flood_control_is_retried_until_done(
    telegram, segmind, priced, database, monkeypatch
):
    monkeypatch.setattr("bot.core.refunds.RETRY_SECONDS", 0.05)
    for code, description in ((500, "Internal Server Error"), (502, "Bad Gateway")):
        telegram.fail_next("refundStarPayment", error_code=code, description=description)
    telegram.fail_next(
        "refundStarPayment",
        error_code=429,
        description="Too Many Requests: retry after 1",
        times=3,
    )
    result = await _failed_paid_job(telegram, segmind)
    await wait_until(lambda: telegram.refunds, timeout=20, what="the refund")
    await settle(telegram, priced, database)

    calls = telegram.calls_of("refundStarPayment")
    assert [c.ok for c in calls] == [False] * 5 + [True], [c.response for c in calls]
    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (1, 1, 1)
    assert telegram.refunds[0].charge_id == result.charge_id
    (row,) = payment_rows(database)
    assert row["refund"] == "done"
    assert row["refund_attempts"] >= 2
    (notice,) = refund_notices(telegram, USER)
    assert notice.startswith("⭐ 50 refunded")


async def test_a_refund_whose_answer_was_lost_is_confirmed_by_already_refunded(
    telegram, segmind, priced, database, monkeypatch
):
    monkeypatch.setattr("bot.core.refunds.RETRY_SECONDS", 0.05)
    telegram.refund_then_drop_answer()
    result = await _failed_paid_job(telegram, segmind)
    await telegram.wait_for_call("refundStarPayment", count=2, timeout=15)
    await settle(telegram, priced, database)

    lost, again = telegram.calls_of("refundStarPayment")
    assert lost.lost_answer == {"ok": True, "result": True}  # it happened; the bot never knew
    assert "CHARGE_ALREADY_REFUNDED" in again.response["description"]
    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (1, 1, 1)
    assert telegram.refunds[0].charge_id == result.charge_id
    (row,) = payment_rows(database)
    assert (row["refund"], row["refund_attempts"]) == ("done", 1)
    assert len(refund_notices(telegram, USER)) == 1


# -- 10. /paysupport, /terms, /refund, /stats ---------------------------------------------------


async def _pay_for_a_video(telegram, user: int, *, fails: bool = False, segmind=None) -> str:
    """A photo, Generate, pay; the charge id (the video, or its refund, follows)."""
    if fails:
        segmind.fail_next_job("Content blocked by safety filter (RAI)")
    _, keyboard = await send_photo_get_keyboard(telegram, user, user)
    invoice = await invoice_for(telegram, keyboard, user, user)
    result = await paid(telegram.pay_invoice(user, invoice.result))
    assert result.charge_id is not None
    return result.charge_id


async def _command(telegram, handled: Handled, chat_id: int, user_id: int, text: str) -> list[str]:
    """Send a command; once the bot has handled it, what it said in that chat."""
    before = len(sent_texts(telegram, chat_id))
    message = telegram.send_text(chat_id, user_id, text)

    def done() -> bool:
        update_id = update_id_of(telegram, chat_id, message["message_id"])
        return update_id is not None and handled.count(update_id) >= 1

    await wait_until(done, what=f"{text} handled")
    return sent_texts(telegram, chat_id)[before:]


async def test_paysupport_shows_the_support_text_and_only_the_users_own_payments(
    telegram, segmind, make_settings, database
):
    support = "Payment trouble? Write to @warmth_help and quote the charge id."
    for user in (USER, OTHER, BUYER):
        telegram.private_chat(user)
    settings = make_settings(PRICE_STARS=str(PRICE), PAYSUPPORT_TEXT=support)
    async with running(settings) as application:
        handled = Handled(application)
        refunded_charge = await _pay_for_a_video(telegram, USER, fails=True, segmind=segmind)
        await settle(telegram, handled, database)
        kept_charge = await _pay_for_a_video(telegram, USER)
        others_charge = await _pay_for_a_video(telegram, OTHER)
        await telegram.wait_for_call("sendVideo", count=2)
        await settle(telegram, handled, database)

        (answer,) = await _command(telegram, handled, USER, USER, "/paysupport")
        (nobody,) = await _command(telegram, handled, BUYER, BUYER, "/paysupport")
        await settle(telegram, handled, database)

    assert answer.startswith(support)
    assert refunded_charge in answer
    assert kept_charge in answer
    assert others_charge not in answer
    lines = answer.splitlines()
    refunded_line = lines[lines.index(f"   charge id: {refunded_charge}") - 1]
    kept_line = lines[lines.index(f"   charge id: {kept_charge}") - 1]
    assert refunded_line.startswith("⭐ 50")
    assert "refunded" in refunded_line
    assert kept_line.startswith("⭐ 50")
    assert kept_line.endswith("paid")
    assert nobody.startswith(support)
    assert "no payments" in nobody
    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (3, 3, 1)


async def test_terms_state_the_prices_and_the_refund_rule(
    telegram, segmind, make_settings, database
):
    telegram.private_chat(BUYER)
    async with running(make_settings(PRICE_STARS="*=50,720p/8s=90")) as application:
        handled = Handled(application)
        (terms,) = await _command(telegram, handled, BUYER, BUYER, "/terms")
    assert "720p 8 s: ⭐ 90" in terms
    assert "540p 5 s: ⭐ 50" in terms
    assert "refunded" in terms
    assert "/paysupport" in terms
    assert_plain(terms)


async def test_an_operator_refunds_a_charge_once_and_others_cannot(
    telegram, segmind, priced, database
):
    for user in (USER, ADMIN_ID, OTHER):
        telegram.private_chat(user)
    charge = await _pay_for_a_video(telegram, USER)
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    await settle(telegram, priced, database)

    # Not an operator: silence, and no refund.
    assert await _command(telegram, priced, OTHER, OTHER, f"/refund {charge}") == []
    assert await _command(telegram, priced, OTHER, OTHER, "/stats") == []
    await settle(telegram, priced, database)
    assert telegram.refunds == []

    (queued,) = await _command(telegram, priced, ADMIN_ID, ADMIN_ID, f"/refund {charge}")
    assert queued == texts.refund_command("en", "queued", charge)
    await wait_until(lambda: telegram.refunds, what="the operator's refund")
    await settle(telegram, priced, database)
    (again,) = await _command(telegram, priced, ADMIN_ID, ADMIN_ID, f"/refund {charge}")
    assert again == texts.refund_command("en", "done", charge)
    (stats,) = await _command(telegram, priced, ADMIN_ID, ADMIN_ID, "/stats")
    await settle(telegram, priced, database)

    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (1, 1, 1)
    assert len(telegram.calls_of("refundStarPayment")) == 1
    (notice,) = refund_notices(telegram, USER)
    assert notice.startswith("⭐ 50 refunded")
    (row,) = payment_rows(database)
    assert (row["refund"], row["refund_reason"]) == ("done", "operator")
    assert "Stars 24 h: ⭐ 50 taken, ⭐ 50 refunded, ⭐ 0 net" in stats.splitlines()


async def test_stats_shows_the_stars_taken_and_refunded(telegram, segmind, priced, database):
    for user in (USER, ADMIN_ID):
        telegram.private_chat(user)
    await _pay_for_a_video(telegram, USER, fails=True, segmind=segmind)
    await settle(telegram, priced, database)
    await _pay_for_a_video(telegram, USER)
    await _pay_for_a_video(telegram, USER)
    await telegram.wait_for_call("sendVideo", chat_id=USER, count=2)
    await settle(telegram, priced, database)

    (stats,) = await _command(telegram, priced, ADMIN_ID, ADMIN_ID, "/stats")
    lines = stats.splitlines()
    assert "Stars 24 h: ⭐ 150 taken, ⭐ 50 refunded, ⭐ 100 net" in lines
    assert "Stars 7 days: ⭐ 150 taken, ⭐ 50 refunded, ⭐ 100 net" in lines
    assert (len(telegram.payments), len(segmind.submits), len(telegram.refunds)) == (3, 3, 1)
    assert telegram.star_balance == 100


# -- reconciliation ---------------------------------------------------------------------------


async def test_the_messenger_reads_telegrams_stars_payments_for_reconciliation(
    telegram, segmind, priced, database
):
    telegram.private_chat(USER)
    kept = await _pay_for_a_video(telegram, USER)
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    refunded = await _pay_for_a_video(telegram, USER, fails=True, segmind=segmind)
    await settle(telegram, priced, database)
    assert [refund.charge_id for refund in telegram.refunds] == [refunded]
    runtime = priced.application.bot_data["runtime"]
    messenger = TelegramMessenger(priced.application.bot, frozenset(), photos=runtime.photos)
    charges = await messenger.star_payments(since=0.0)
    # Incoming payments only (the refund is an outgoing transaction), newest first.
    assert [(c.charge_id, c.user_id, c.amount) for c in charges] == [
        (refunded, USER, PRICE),
        (kept, USER, PRICE),
    ]
    assert await messenger.star_payments(since=charges[0].date + 1) == []
