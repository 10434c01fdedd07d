"""The gettext catalogues: complete, well-formed, within Telegram's limits in every language,
and a broken one falls back to English string by string (logged once).

The end-to-end side (a Portuguese user, /language, groups, menus) is tests/test_languages.py.
"""

from __future__ import annotations

import gettext
import inspect
import io
import logging
import os
import shutil
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

from bot.core.jobs import JobState, Reason
from bot.core.options import DURATIONS, QUALITIES, STYLES, Adjustment, VideoOptions
from bot.core.payments import PreCheckout
from bot.i18n import catalogues, texts
from bot.i18n.catalogues import LANGUAGES, SOURCE_LANGUAGE, match_language, placeholders
from bot.settings import DEFAULT_PAYSUPPORT_TEXT
from tests.builders import job_row

REPO = Path(__file__).resolve().parent.parent
LOCALE = REPO / "bot" / "i18n" / "locale"
TRANSLATED = [language for language in LANGUAGES if language != SOURCE_LANGUAGE]
KEYWORDS = {"_": (2,), "_n": (2, 3)}


def read(path: Path, language: str | None = None) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle, locale=language)


def messages(catalog: Catalog) -> dict[str | tuple[str, ...], Message]:
    """Each message by its id: a text, or (singular, plural)."""
    return {
        (message.id if isinstance(message.id, str) else tuple(message.id)): message
        for message in catalog
        if message.id
    }


@pytest.fixture(scope="module")
def template() -> Catalog:
    return read(LOCALE / "bot.pot")


def test_the_template_holds_exactly_the_messages_of_the_source(template):
    """`make i18n` was run after the last text changed (Babel, keywords _:2 and _n:2,3)."""
    found = set()
    for _filename, _line, message, _comments, _context in extract_from_dir(
        str(REPO / "bot"), method_map=[("**.py", "python")], keywords=KEYWORDS
    ):
        found.add(message if isinstance(message, str) else tuple(message))
    assert found == set(messages(template)), "run `make i18n` and translate what is new"


def test_every_catalogue_in_the_tree_is_a_language_the_bot_offers():
    """A .po without its LANGUAGE_NAMES entry would never be offered nor tested."""
    found = {po.parent.parent.name for po in LOCALE.glob("*/LC_MESSAGES/bot.po")}
    assert found == set(TRANSLATED)
    assert SOURCE_LANGUAGE == texts.FALLBACK_LANGUAGE == LANGUAGES[0]


def test_english_texts_use_the_same_placeholders_in_singular_and_plural(template):
    for msgid in messages(template):
        if isinstance(msgid, tuple):
            assert placeholders(msgid[0]) == placeholders(msgid[1]), msgid


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_catalogue_translates_every_message_with_the_same_placeholders(language, template):
    catalog = read(LOCALE / language / "LC_MESSAGES" / "bot.po", language)
    translated = messages(catalog)
    missing = [msgid for msgid in messages(template) if msgid not in translated]
    assert not missing, f"{language} lacks {missing}"
    expected_forms = Catalog(locale=language).num_plurals
    assert catalog.num_plurals == expected_forms, "Plural-Forms header"
    for msgid, message in translated.items():
        assert not message.fuzzy, f"{language}: fuzzy {msgid!r}"
        forms = message.string
        if isinstance(msgid, tuple):
            assert isinstance(forms, tuple), (language, msgid)
            assert len(forms) == expected_forms, (language, msgid)
            wanted = placeholders(msgid[1])
        else:
            assert isinstance(forms, str), (language, msgid)
            forms = (forms,)
            wanted = placeholders(msgid)
        for form in forms:
            assert form, f"{language}: empty translation of {msgid!r}"
            assert placeholders(form) == wanted, f"{language}: {form!r} for {msgid!r}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_callback_answers_fit_telegrams_200_characters(language):
    answers = [
        texts.answer_started(language),
        texts.answer_already_started(language),
        texts.answer_not_yours(language),
        texts.answer_stale(language),
        texts.answer_invalid(language),
        texts.answer_not_allowed(language),
        texts.answer_invoice_sent(language),
        texts.answer_invoice_failed(language),
        texts.answer_awaiting_payment(language),
        texts.answer_options_again(language),
        texts.answer_unknown_language(language),
        texts.ledger_busy(language),
        *(texts.adjustment_note(language, adjustment) or "" for adjustment in Adjustment),
        *(texts.too_many_active(language, limit) for limit in (1, 2, 5, 21, 1000)),
        *(texts.daily_limit(language, limit, 86_399) for limit in (1, 3, 20, 1000)),
        *(texts.precheckout_refusal(language, verdict) for verdict in PreCheckout),
    ]
    # Every other toast (answer_<what>(lang)), so a new one cannot be forgotten here.
    for name in dir(texts):
        function = getattr(texts, name)
        if name.startswith("answer_") and list(inspect.signature(function).parameters) == ["lang"]:
            answers.append(function(language))
    assert len(answers) > 30
    for answer in answers:
        assert len(answer) <= 200, (language, answer)


@pytest.mark.parametrize("language", LANGUAGES)
def test_invoices_fit_telegrams_limits_for_every_option(language):
    assert len(texts.invoice_title(language)) <= 32
    assert 1 <= len(texts.invoice_price_label(language)) <= 32
    for quality, duration, style in product(QUALITIES, DURATIONS, STYLES):
        description = texts.invoice_description(language, VideoOptions(quality, duration, style))
        assert len(description) <= 255, (language, description)


@pytest.mark.parametrize("language", LANGUAGES)
def test_profile_texts_fit_telegrams_limits(language):
    assert len(texts.bot_description(language)) <= 512
    assert len(texts.bot_short_description(language)) <= 120
    commands = [
        texts.command_start,
        texts.command_help,
        texts.command_warmth,
        texts.command_paysupport,
        texts.command_terms,
        texts.command_language,
    ]
    for command in commands:
        assert 1 <= len(command(language)) <= 256


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_outcome_and_text_renders(language):
    """Every function of the texts module runs in every language (formats all fill)."""
    for state, reason in product(JobState, [None, *Reason]):
        assert texts.outcome(language, job_row(state, reason))
    assert texts.terms(language, [("540p", 5, 50), ("720p", 8, 90)], 3)
    assert texts.terms(language, [], 0)
    assert texts.video_link(language, "https://x/v.mp4", 0).endswith("https://x/v.mp4")
    assert "⭐ 50" in texts.generate_label(language, 50)


def test_the_generate_button_says_generate_in_english():
    assert "Generate" in texts.generate_label("en", 0)
    assert "Generate" in texts.generate_label("en", 50)


def test_the_paysupport_default_is_the_english_message_id():
    assert texts.default_paysupport("en") == DEFAULT_PAYSUPPORT_TEXT


@pytest.mark.parametrize(
    ("code", "language"),
    [
        ("pt-br", "pt_BR"),
        ("pt-BR", "pt_BR"),
        ("pt", "pt_BR"),
        ("pt-PT", "pt_BR"),
        ("es-419", "es"),
        ("es", "es"),
        ("fr-CA", "fr"),
        ("ru", "ru"),
        ("en-GB", "en"),
        ("de", None),
        ("", None),
        (None, None),
    ],
)
def test_telegram_language_codes_match_the_bots_languages(code, language):
    assert match_language(code) == language


# -- a broken catalogue ----------------------------------------------------------------


def _plant(folder: Path, language: str, entries: dict[str, str]) -> Path:
    catalog = Catalog(locale=language, domain="bot")
    for msgid, translation in entries.items():
        catalog.add(msgid, translation)
    po = folder / language / "LC_MESSAGES" / "bot.po"
    po.parent.mkdir(parents=True)
    with po.open("wb") as handle:
        write_po(handle, catalog)
    return po


def test_a_missing_or_broken_translation_falls_back_to_english_logged_once(tmp_path, caplog):
    price = "🎬 Generate · ⭐ {price}"
    _plant(
        tmp_path,
        "pt_BR",
        {
            "🎬 Generate": "🎬 Gerar",
            price: "🎬 Gerar · ⭐ {preco}",  # a placeholder the code does not pass
            "Starting your video…": "Começando {",  # not a valid format
        },
    )
    catalogue = catalogues.catalogue("pt_BR", locale=tmp_path)
    caplog.set_level(logging.WARNING, logger="bot.i18n.catalogues")
    for _ in range(3):
        assert catalogue.gettext("🎬 Generate") == "🎬 Gerar"
        assert catalogue.gettext(price).format(price=5) == "🎬 Generate · ⭐ 5"
        assert catalogue.gettext("Starting your video…") == "Starting your video…"
        assert catalogue.gettext("Video") == "Video"  # not in this catalogue
        assert catalogue.ngettext("{n} day", "{n} days", 2) == "{n} days"
    logged = [record.getMessage() for record in caplog.records]
    assert len(logged) == 4, logged  # one line per broken or missing message, not per use
    assert any("unknown placeholders" in line and "preco" in line for line in logged)
    assert any("not a valid format" in line for line in logged)
    assert any("no translation" in line and "'Video'" in line for line in logged)


def test_an_unreadable_catalogue_means_english_not_a_crash(tmp_path, caplog):
    po = tmp_path / "ru" / "LC_MESSAGES" / "bot.po"
    po.parent.mkdir(parents=True)
    po.write_text('msgid "x\nthis is not a po file', encoding="utf-8")
    caplog.set_level(logging.WARNING, logger="bot.i18n.catalogues")
    catalogue = catalogues.catalogue("ru", locale=tmp_path)
    assert catalogue.gettext("🎬 Generate") == "🎬 Generate"
    assert any("cannot be read" in record.getMessage() for record in caplog.records)


def test_a_compiled_catalogue_is_used_unless_its_po_is_newer(tmp_path):
    po = _plant(tmp_path, "es", {"🎬 Generate": "🎬 Generar"})
    compiled = Catalog(locale="es", domain="bot")
    compiled.add("🎬 Generate", "🎬 Generar (compilado)")
    mo = po.with_suffix(".mo")
    with mo.open("wb") as handle:
        write_mo(handle, compiled)
    os.utime(po, (1_000_000, 1_000_000))
    assert (
        catalogues.catalogue("es", locale=tmp_path).gettext("🎬 Generate").endswith("(compilado)")
    )
    os.utime(mo, (900_000, 900_000))  # the .po was edited after the last compile
    assert catalogues.catalogue("es", locale=tmp_path).gettext("🎬 Generate") == "🎬 Generar"


# -- the wheel -------------------------------------------------------------------------


def test_the_package_build_compiles_the_catalogues(tmp_path):
    """`pip install .` (Dockerfile, systemd recipe) builds a wheel from what build_py puts
    in its build folder: the hook named in pyproject.toml compiles every .po there, so
    the installed bot reads .mo files with the standard library (no .po, no Babel).
    (A full `pip wheel` would fetch the build requirements; build_py is the part that is
    ours, run here by setuptools from pyproject.toml's own configuration.)"""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "bot", source / "bot", ignore=shutil.ignore_patterns("__pycache__", "*.mo")
    )
    build = tmp_path / "build"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import setup; setup()",
            "build_py",
            "--build-lib",
            str(build),
        ],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=120,
    )
    locale = build / "bot" / "i18n" / "locale"
    for language in TRANSLATED:
        mo = locale / language / "LC_MESSAGES" / "bot.mo"
        translations = gettext.GNUTranslations(io.BytesIO(mo.read_bytes()))
        assert translations.gettext("🎬 Generate") == texts.generate_label(language, 0)
    assert not list(build.rglob("*.po"))
    assert (build / "bot" / "storage" / "migrations" / "0006_users.sql").exists()
