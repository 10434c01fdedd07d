"""Issue 6: cost control, operator alerts and commands, and the job log."""

from __future__ import annotations

import asyncio
import logging

import pytest
from telegram import Bot

from bot.core.alerts import OUTAGE_SECONDS, QUIET_SECONDS, AlertKind, Alerts
from bot.i18n import texts
from bot.storage import SqliteLedger
from bot.telegram import runtime
from bot.telegram.runtime import TokenWatch
from tests.conftest import ADMIN_ID, ledger, running, settled, wait_until
from tests.fakes.telegram import TEST_TOKEN
from tests.test_private_flow import button_data, send_photo_get_keyboard

USER = 1501
GROUP = -100555


async def press_generate(telegram, user=USER, chat=None):
    chat = chat or user
    _, keyboard = await send_photo_get_keyboard(telegram, chat, user)
    return telegram.press_button(
        chat, user, keyboard["message_id"], button_data(keyboard, "Generate")
    )


async def answer_of(telegram, query):
    await wait_until(lambda: query in telegram.callback_answers, what="callback answer")
    return telegram.callback_answers[query]


# -- limits ---------------------------------------------------------------------------


async def test_too_many_active_jobs_is_refused_with_the_limit_named(
    telegram, segmind, make_settings, database
):
    segmind.processing_seconds = 60  # the first job stays active until the clock is moved
    telegram.private_chat(USER)
    async with running(make_settings(MAX_ACTIVE_JOBS_PER_USER="1")) as application:
        await press_generate(telegram)
        await wait_until(lambda: segmind.jobs, what="first submit")
        query = await press_generate(telegram)
        answer = await answer_of(telegram, query)
        assert answer["text"] == texts.too_many_active("en", 1)
        assert str(answer.get("show_alert")).lower() == "true"
        segmind.advance(60)  # the first job finishes; a wrongly started second would go on
        await settled(application, telegram)
        assert len(segmind.submits) == 1
        assert [job["state"] for job in ledger(database)] == ["delivered", "draft"]  # kept


async def test_the_daily_limit_holds_across_a_restart(telegram, segmind, make_settings, database):
    telegram.private_chat(USER)
    settings = make_settings(DAILY_JOBS_PER_USER="1")
    async with running(settings):
        await press_generate(telegram)
        await telegram.wait_for_call("sendVideo", chat_id=USER)
    async with running(settings):
        query = await press_generate(telegram)
        answer = await answer_of(telegram, query)
    assert "today's limit of 1" in answer["text"]
    assert "midnight UTC" in answer["text"]
    assert len(segmind.submits) == 1


async def test_users_outside_allowed_user_ids_cannot_start_jobs(
    telegram, segmind, make_settings, database
):
    telegram.private_chat(USER)
    async with running(make_settings(ALLOWED_USER_IDS="42,43")):
        photo = telegram.send_photo(USER, USER)
        (call,) = await telegram.wait_for_call("sendMessage", chat_id=USER)
    assert call.params["text"] == texts.not_allowed_user("en")
    assert photo["message_id"]
    assert ledger(database) == []


async def test_groups_outside_allowed_chat_ids_are_told_and_nothing_starts(
    telegram, segmind, make_settings, database
):
    telegram.group(GROUP, "Elsewhere")
    async with running(make_settings(ALLOWED_CHAT_IDS="-100999")):
        telegram.send_photo(GROUP, USER, caption="/warmth")
        (call,) = await telegram.wait_for_call("sendMessage", chat_id=GROUP)
    assert call.params["text"] == texts.answer_chat_not_allowed("en")
    assert ledger(database) == []


# -- operator commands ----------------------------------------------------------------


async def test_stats_and_jobs_for_operators(telegram, segmind, bot, database):
    telegram.private_chat(USER)
    telegram.private_chat(ADMIN_ID)
    await press_generate(telegram)
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    segmind.fail_next_job("blocked")
    await press_generate(telegram)
    await wait_until(lambda: len(ledger(database)) == 2 and ledger(database)[1]["notified_at"])

    telegram.send_text(ADMIN_ID, ADMIN_ID, "/stats")
    (stats,) = await telegram.wait_for_call("sendMessage", chat_id=ADMIN_ID)
    text = stats.params["text"]
    assert "Last 24 h: 2 (delivered 1, failed 1)" in text
    assert "Ended without a video (7 days): 1 (content 1)" in text
    assert "median" in text
    assert "Active now: 0" in text

    telegram.send_text(ADMIN_ID, ADMIN_ID, "/jobs")
    calls = await telegram.wait_for_call("sendMessage", chat_id=ADMIN_ID, count=2)
    lines = calls[1].params["text"].splitlines()
    assert lines[1].startswith("J2 ")
    assert "failed (content)" in lines[1]
    assert lines[2].startswith("J1 ")
    assert "delivered" in lines[2]


@pytest.mark.parametrize("command", ["/stats", "/jobs"])
async def test_non_operators_get_no_reply_to_operator_commands(telegram, segmind, bot, command):
    telegram.private_chat(USER)
    telegram.send_text(USER, USER, command)
    telegram.send_text(USER, USER, "/help")  # answered, so we know the first was seen
    (call,) = await telegram.wait_for_call("sendMessage", chat_id=USER)
    assert call.params["text"] == texts.start("en")
    await settled(bot, telegram)  # the operator command handled too, and silent
    assert len(telegram.calls_of("sendMessage", chat_id=USER)) == 1


# -- alerts ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def collector(sent: list[str]):
    """An operator's inbox: the alert sender appends each message to ``sent``."""

    async def send(kind: AlertKind, resolved: bool) -> None:
        sent.append(texts.alert("en", kind, resolved=resolved))

    return send


@pytest.fixture
async def alert_store(tmp_path):
    store = SqliteLedger(tmp_path / "alerts.sqlite3")
    await store.open()
    yield store
    await store.close()


async def test_one_alert_per_kind_per_quiet_period_and_one_when_cleared(alert_store):
    sent: list[str] = []
    send = collector(sent)
    clock = Clock()
    alerts = Alerts(alert_store, send, clock)
    for _ in range(5):
        await alerts.trouble(AlertKind.OUT_OF_CREDITS)
    await alerts.trouble(AlertKind.KEY_REJECTED)
    assert len(sent) == 2
    # The state is in the ledger: a restarted bot does not alert again at once.
    restarted = Alerts(alert_store, send, clock)
    await restarted.trouble(AlertKind.KEY_REJECTED)
    assert len(sent) == 2
    clock.now += QUIET_SECONDS + 1
    await alerts.trouble(AlertKind.OUT_OF_CREDITS)  # still broken: a reminder
    assert len(sent) == 3
    await alerts.cleared(AlertKind.OUT_OF_CREDITS)
    await alerts.cleared(AlertKind.OUT_OF_CREDITS)
    assert len(sent) == 4
    assert sent[-1].startswith("✅ Resolved")


async def test_segmind_failing_for_minutes_alerts_once_then_clears(alert_store):
    sent: list[str] = []
    send = collector(sent)
    clock = Clock()
    alerts = Alerts(alert_store, send, clock)
    await alerts.segmind_failed()
    clock.now += OUTAGE_SECONDS / 2
    await alerts.segmind_failed()
    assert sent == []  # a blip is not an outage
    clock.now += OUTAGE_SECONDS
    for _ in range(3):
        await alerts.segmind_failed()
    assert len(sent) == 1
    assert "failing" in sent[0]
    await alerts.segmind_answered()
    assert len(sent) == 2
    await alerts.segmind_answered()
    assert len(sent) == 2


# -- logs -----------------------------------------------------------------------------


async def test_one_info_line_per_job_transition(telegram, segmind, bot, database, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    telegram.private_chat(USER)
    # The job stays in PROCESSING until the bot has seen it there, however slow the machine:
    # a first poll later than queued + processing would go straight to COMPLETED.
    segmind.processing_seconds = 60
    await press_generate(telegram)
    await wait_until(lambda: ledger(database)[0]["state"] == "processing", what="processing")
    segmind.advance(60)
    await telegram.wait_for_call("sendVideo", chat_id=USER)
    # Not the ledger's "delivered": the line is logged after the commit, once the row has
    # been read back. Settled, the job's task has returned, its last line logged.
    await settled(bot, telegram)
    assert ledger(database)[0]["state"] == "delivered"
    transitions = [
        r.getMessage()
        for r in caplog.records
        if r.name == "bot.storage.sqlite" and " -> " in r.getMessage()
    ]
    assert [t.split(": ", 1)[1].split(",")[0] for t in transitions] == [
        "preparing -> submitting",
        "submitting -> queued",
        "queued -> processing",
        "processing -> completed",
        "completed -> delivered",
    ]
    assert all(t.startswith("job J1: ") and "after Generate" in t for t in transitions)


async def test_long_telegram_flood_control_alerts_operators_and_clears(
    telegram, segmind, bot, monkeypatch
):
    # A real flood ban lasts minutes; the threshold is lowered so the test takes a second.
    monkeypatch.setattr("bot.telegram.pacing.LONG_FLOOD_WAIT_SECONDS", 1.0)
    telegram.private_chat(USER)
    telegram.private_chat(ADMIN_ID)
    telegram.fail_next("sendVideo", error_code=429, description="Too Many Requests: retry after 1")
    await press_generate(telegram)
    await telegram.wait_for_call("sendVideo", chat_id=USER, count=2, timeout=15)
    alerts = await telegram.wait_for_call("sendMessage", chat_id=ADMIN_ID, count=2)
    assert "limiting the bot" in alerts[0].params["text"]
    assert alerts[1].params["text"].startswith("✅ Resolved")


async def test_the_token_watch_stops_the_bot_only_when_telegram_rejects_the_token(
    telegram, monkeypatch
):
    """A revoked token ends PTB's getUpdates loop quietly; the watch notices and stops
    the bot. Telegram being unreachable for a while is no reason to stop."""
    monkeypatch.setattr(runtime, "TOKEN_CHECK_SECONDS", 0.05)
    bot = Bot(TEST_TOKEN, base_url=telegram.api_url, base_file_url=telegram.file_url)
    await bot.initialize()
    stopped = asyncio.Event()
    watch = TokenWatch(bot, on_rejected=stopped.set)
    watch.start()
    try:
        await wait_until(lambda: len(telegram.calls_of("getMe")) >= 3, what="periodic checks")
        telegram.fail_next("getMe", error_code=502, description="Bad Gateway", times=3)
        checks = len(telegram.calls_of("getMe"))
        await wait_until(lambda: len(telegram.calls_of("getMe")) >= checks + 4, what="checks")
        assert not watch.rejected
        assert not stopped.is_set()

        telegram.token = "123:revoked-in-botfather"
        await asyncio.wait_for(stopped.wait(), 2)
        assert watch.rejected
    finally:
        await watch.stop()
        await bot.shutdown()
