"""Issue 14, languages: each user is spoken to in their language, end to end — the real
PTB app, httpx and SQLite against the fakes.

The catalogues themselves (complete, within Telegram's limits) are tests/test_catalogues.py.
"""

from __future__ import annotations

import sqlite3

import pytest

from bot.core.jobs import JobState
from bot.core.options import VideoOptions
from bot.core.progress import Progress, Status
from bot.i18n import texts
from bot.i18n.catalogues import LANGUAGE_NAMES, LANGUAGES
from tests.builders import job_row
from tests.conftest import ADMIN_ID, ledger, running, settled, wait_until
from tests.test_groups import keyboard_for
from tests.test_private_flow import button_data, keyboard_labels, send_photo_get_keyboard

USER = 601
GROUP = -1009876543


def users_row(database, user_id: int) -> dict | None:
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM users WHERE user_id=?", (user_id,)).fetchone()
    return dict(row) if row else None


async def test_a_brazilian_user_gets_portuguese_from_photo_to_video(
    telegram, segmind, bot, database
):
    telegram.user(USER, "Ana", language_code="pt-br")
    telegram.private_chat(USER)
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    assert keyboard["text"] == texts.keyboard_caption("pt_BR", VideoOptions())
    assert keyboard["text"].startswith("Escolha a qualidade")
    labels = keyboard_labels(keyboard)
    assert labels[0] == ["360p", "✅ 540p", "720p", "1080p"]  # the contract's labels
    assert labels[1] == ["✅ 5 s", "8 s"]
    assert labels[-1] == ["🎬 Gerar"]

    query = telegram.press_button(
        USER, USER, keyboard["message_id"], button_data(keyboard, "Gerar")
    )
    (video,) = await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=15)
    assert video.params["caption"] == "✨ O abraço de Jesus"
    assert telegram.callback_answers[query]["text"] == texts.answer_started("pt_BR")
    edits = [c.params["text"] for c in telegram.calls_of("editMessageText", chat_id=USER)]
    waiting = texts.progress("pt_BR", Status(Progress.QUEUED), VideoOptions())
    assert waiting.startswith("⏳")
    assert waiting != texts.progress("en", Status(Progress.QUEUED), VideoOptions())
    assert any(text.startswith(waiting) for text in edits)
    await wait_until(lambda: ledger(database)[0]["state"] == "delivered", what="delivered")
    assert ledger(database)[0]["language"] == "pt_BR"


@pytest.mark.parametrize(
    ("code", "language"),
    [("es-419", "es"), ("fr-CA", "fr"), ("ru", "ru"), ("en-GB", "en"), ("de", "en"), (None, "en")],
)
async def test_telegrams_language_code_picks_the_language(telegram, bot, code, language):
    telegram.user(USER, language_code=code)
    telegram.private_chat(USER)
    telegram.send_text(USER, USER, "/start")
    (answer,) = await telegram.wait_for_call("sendMessage", chat_id=USER)
    assert answer.params["text"] == texts.start(language)


async def test_an_unknown_language_falls_back_to_default_language(
    telegram, make_settings, segmind
):
    async with running(make_settings(DEFAULT_LANGUAGE="es")):
        telegram.user(USER, language_code="de")
        telegram.private_chat(USER)
        telegram.send_text(USER, USER, "/start")
        (answer,) = await telegram.wait_for_call("sendMessage", chat_id=USER)
    assert answer.params["text"] == texts.start("es")


async def test_language_command_switch_persists_across_a_restart(
    telegram, segmind, make_settings, database
):
    telegram.user(USER, language_code="pt-br")
    telegram.private_chat(USER)
    async with running(make_settings()):
        telegram.send_text(USER, USER, "/language")
        (menu,) = await telegram.wait_for_call(
            "sendMessage", chat_id=USER, where=lambda c: "reply_markup" in c.params
        )
        message = menu.response["result"]
        assert message["text"] == texts.language_prompt("pt_BR")
        names = [label for row in keyboard_labels(message) for label in row]
        assert names == [
            f"✅ {name}" if language == "pt_BR" else name
            for language, name in LANGUAGE_NAMES.items()
        ]
        assert "Português (Brasil)" in names[1]
        query = telegram.press_button(
            USER, USER, message["message_id"], button_data(message, "Español")
        )
        await wait_until(lambda: query in telegram.callback_answers, what="answer")
        await wait_until(
            lambda: (
                telegram.message(USER, message["message_id"])["text"]
                == texts.language_chosen("es")
            ),
            what="confirmation",
        )
        assert "español" in texts.language_chosen("es")
    assert (users_row(database, USER) or {}).get("language") == "es"

    telegram.clear_calls()
    async with running(make_settings()):
        telegram.send_text(USER, USER, "/start")
        (answer,) = await telegram.wait_for_call("sendMessage", chat_id=USER)
        assert answer.params["text"] == texts.start("es")  # not the app's Portuguese
        _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
        assert keyboard_labels(keyboard)[-1] == ["🎬 Generar"]


@pytest.mark.parametrize("data", ["l:xx", "l:", "l:pt_br", "l:" + "x" * 62])
async def test_an_unknown_language_button_gets_a_short_answer(telegram, bot, database, data):
    telegram.user(USER, language_code="fr")
    telegram.private_chat(USER)
    telegram.send_text(USER, USER, "/language")
    (menu,) = await telegram.wait_for_call("sendMessage", chat_id=USER)
    query = telegram.press_button(USER, USER, menu.response["result"]["message_id"], data)
    await wait_until(lambda: query in telegram.callback_answers, what="answer")
    assert telegram.callback_answers[query]["text"] == texts.answer_unknown_language("fr")
    await settled(bot, telegram)
    assert users_row(database, USER) is None  # nothing remembered


async def test_in_a_group_each_asker_is_spoken_to_in_their_language(
    telegram, segmind, bot, database
):
    telegram.group(GROUP, "Família")
    telegram.user(701, "Ana", language_code="pt-br")
    telegram.user(702, "Ivan", language_code="ru")
    first = telegram.send_photo(GROUP, 701, caption="/warmth")
    ana = (await keyboard_for(telegram, first["message_id"], GROUP)).response["result"]
    second = telegram.send_photo(GROUP, 702, caption="/warmth")
    ivan = (await keyboard_for(telegram, second["message_id"], GROUP)).response["result"]
    assert ana["text"].startswith(texts.keyboard_prompt("pt_BR"))
    assert ivan["text"].startswith(texts.keyboard_prompt("ru"))
    assert keyboard_labels(ivan)[-1] == ["🎬 Создать"]

    # Ivan presses Ana's keyboard: refused in Russian, the keyboard stays Portuguese.
    refused = telegram.press_button(GROUP, 702, ana["message_id"], button_data(ana, "720p"))
    await wait_until(lambda: refused in telegram.callback_answers, what="refusal")
    assert telegram.callback_answers[refused]["text"] == texts.answer_not_yours("ru")

    segmind.fail_next_job()
    telegram.press_button(GROUP, 701, ana["message_id"], button_data(ana, "Gerar"))
    await wait_until(lambda: ledger(database)[0]["notified_at"], what="Ana told", timeout=15)
    telegram.press_button(GROUP, 702, ivan["message_id"], button_data(ivan, "Создать"))
    (video,) = await telegram.wait_for_call("sendVideo", chat_id=GROUP, timeout=15)
    assert video.params["caption"] == texts.video_caption("ru")
    outcome = [
        c.params["text"]
        for c in telegram.calls_of("sendMessage", chat_id=GROUP)
        if c.params["text"] == texts.outcome("pt_BR", job_row(JobState.FAILED))
    ]
    assert len(outcome) == 1  # the tracker's later message, in the job's language
    assert [row["language"] for row in ledger(database)] == ["pt_BR", "ru"]


async def test_tracker_messages_keep_the_jobs_language_after_a_switch(
    telegram, segmind, bot, database
):
    """The job was asked in French; the user then switches to Russian: the job's status and
    video still speak French (they belong to that job), the next keyboard Russian."""
    telegram.user(USER, language_code="fr")
    telegram.private_chat(USER)
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    telegram.send_text(USER, USER, "/language")
    (menu,) = await telegram.wait_for_call(
        "sendMessage",
        chat_id=USER,
        where=lambda c: c.params["text"] == texts.language_prompt("fr"),
    )
    menu_id = menu.response["result"]["message_id"]
    query = telegram.press_button(USER, USER, menu_id, "l:ru")
    await wait_until(lambda: query in telegram.callback_answers, what="answered")
    assert (users_row(database, USER) or {}).get("language") == "ru"
    telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, "Générer"))
    (video,) = await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=15)
    assert video.params["caption"] == texts.video_caption("fr")
    _, second = await send_photo_get_keyboard(telegram, USER, USER)
    assert keyboard_labels(second)[-1] == ["🎬 Создать"]


async def test_the_last_options_are_the_next_keyboards_defaults(telegram, segmind, bot, database):
    telegram.user(USER)
    telegram.private_chat(USER)
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    for label in ("720p", "8 s", "Style"):
        telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, label))
        await settled(bot, telegram)
    _, second = await send_photo_get_keyboard(telegram, USER, USER)
    rows = keyboard_labels(second)
    assert rows[0] == ["360p", "540p", "✅ 720p", "1080p"]
    assert rows[1] == ["5 s", "✅ 8 s"]
    assert rows[2] == [texts.style_label("en", "anime")]
    row = users_row(database, USER) or {}
    assert (row["quality"], row["duration"], row["style"]) == ("720p", 8, "anime")


async def test_menus_and_descriptions_are_published_per_language(telegram, bot):
    codes = {language.split("_")[0] for language in LANGUAGES}
    assert codes == {"en", "pt", "es", "fr", "ru"}
    for code in codes | {""}:
        language = {"": "en", "pt": "pt_BR"}.get(code, code)
        private = telegram.menus[("all_private_chats", code)]
        assert [c["command"] for c in private] == ["start", "help", "history", "language"]
        assert private[0]["description"] == texts.command_start(language)
        group = telegram.menus[("all_group_chats", code)]
        assert [c["command"] for c in group] == ["warmth", "help", "history", "language"]
        assert group[2]["description"] == texts.command_history(language)
        assert telegram.descriptions[code] == texts.bot_description(language)
        assert telegram.short_descriptions[code] == texts.bot_short_description(language)
    assert telegram.descriptions["pt"].startswith("Mande uma foto")


async def test_operators_read_stats_in_default_language(telegram, segmind, make_settings):
    async with running(make_settings(DEFAULT_LANGUAGE="pt-BR")):
        telegram.user(ADMIN_ID, language_code="en")
        telegram.private_chat(ADMIN_ID)
        telegram.send_text(ADMIN_ID, ADMIN_ID, "/stats")
        (answer,) = await telegram.wait_for_call("sendMessage", chat_id=ADMIN_ID)
    assert answer.params["text"].startswith("📊 Trabalhos")
    assert "Últimas 24 h" in answer.params["text"]


async def test_a_paid_video_in_portuguese_invoice_outcome_and_refund(
    telegram, segmind, make_settings, database
):
    """Everything about a paid job the tracker and refunds send later speaks its asker's
    language: the invoice, the outcome, the refund notice."""
    telegram.user(USER, language_code="pt-BR")
    telegram.private_chat(USER)
    segmind.fail_next_job()
    async with running(make_settings(PRICE_STARS="50")) as application:
        _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
        assert keyboard_labels(keyboard)[-1] == ["🎬 Gerar · ⭐ 50"]
        query = telegram.press_button(
            USER, USER, keyboard["message_id"], button_data(keyboard, "Gerar")
        )
        (invoice,) = await telegram.wait_for_call("sendInvoice", chat_id=USER)
        assert invoice.params["title"] == "Vídeo: O abraço de Jesus"
        assert invoice.params["description"] == texts.invoice_description("pt_BR", VideoOptions())
        await wait_until(lambda: query in telegram.callback_answers, what="answer")
        assert telegram.callback_answers[query]["text"] == texts.answer_invoice_sent("pt_BR")
        result = await telegram.pay_invoice(USER, invoice.result)
        assert result.paid
        (notice,) = await telegram.wait_for_call(
            "sendMessage", chat_id=USER, where=lambda c: c.params["text"].startswith("⭐ 50")
        )
        await settled(application, telegram)
    assert notice.params["text"].startswith("⭐ 50 devolvidas")
    sent = [c.params["text"] for c in telegram.calls_of("sendMessage", chat_id=USER)]
    assert texts.outcome("pt_BR", job_row(JobState.FAILED)) in sent


async def test_an_unknown_default_language_stops_the_bot_with_one_line(spawn, env):
    process = await spawn({**env, "DEFAULT_LANGUAGE": "tlh"})
    assert await process.wait() == 2
    _, stderr = await process.output()
    assert stderr.strip().splitlines() == [
        "error: DEFAULT_LANGUAGE must be one of the bot's languages: en, pt_BR, es, fr, ru"
    ]
