"""The gettext catalogues: which languages the bot speaks, and each one's translations.

Sources are ``locale/<lang>/LC_MESSAGES/bot.po`` (English message ids; English needs no
catalogue). They are compiled to ``bot.mo`` when the package is built (``pip install .``,
see :mod:`bot.i18n.build`), so an installed bot reads ``.mo`` files with the standard
library alone. A checkout has no ``.mo`` (they are not committed): there a missing or
stale ``.mo`` is compiled from its ``.po`` in memory at first use, with Babel (a dev
dependency), so ``make run`` and ``make test`` need no extra step and an edited ``.po``
is seen at the next start.

A message a catalogue lacks, or whose translation is broken (its ``{placeholders}`` are
not the English ones, or it cannot be formatted), is shown in English and logged once.
"""

from __future__ import annotations

import gettext
import io
import logging
import string
import threading
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = [
    "DOMAIN",
    "SOURCE_LANGUAGE",
    "LANGUAGES",
    "LANGUAGE_NAMES",
    "Catalogue",
    "catalogue",
    "compile_po",
    "match_language",
    "user_language",
    "placeholders",
    "reset",
]

log = logging.getLogger(__name__)

DOMAIN = "bot"
#: The language of the message ids: it needs no catalogue.
SOURCE_LANGUAGE = "en"
#: Every language the bot speaks, each in its own name (the /language buttons).
LANGUAGE_NAMES: dict[str, str] = {
    "en": "English",
    "pt_BR": "Português (Brasil)",
    "es": "Español",
    "fr": "Français",
    "ru": "Русский",
}
LANGUAGES: tuple[str, ...] = tuple(LANGUAGE_NAMES)


def match_language(code: str | None) -> str | None:
    """The language the bot has for a tag like Telegram's ``language_code`` (``pt-br``,
    ``es-419``, ``fr-CA``, ``en``) or one of ours (``pt_BR``); None when it has none.

    The whole tag first (``pt-BR`` → ``pt_BR``), then its language alone (``es-419`` →
    ``es``, ``pt`` → ``pt_BR``).
    """
    if not code:
        return None
    tag = code.strip().replace("-", "_").lower()
    by_tag = {language.lower(): language for language in LANGUAGES}
    if tag in by_tag:
        return by_tag[tag]
    base = tag.split("_", 1)[0]
    for language in LANGUAGES:
        if language.lower().split("_", 1)[0] == base:
            return language
    return None


def user_language(chosen: str | None, telegram_code: str | None, default: str) -> str:
    """The language to speak with a user: their /language choice, else their Telegram
    ``language_code`` when the bot has texts for it, else ``default``."""
    if chosen in LANGUAGES:
        return chosen
    return match_language(telegram_code) or default


def placeholders(text: str) -> frozenset[str]:
    """The ``{names}`` a ``str.format`` text uses; ValueError when it is malformed."""
    return frozenset(
        name.split(".")[0].split("[")[0]
        for _, name, _, _ in string.Formatter().parse(text)
        if name is not None
    )


#: What a catalogue's fallback answers for a message it lacks (compared by identity).
_MISSING = "\x00missing"


class _Miss(gettext.NullTranslations):
    """The fallback of every compiled catalogue: tells a miss from a translation."""

    def gettext(self, message: str) -> str:
        return _MISSING

    def ngettext(self, msgid1: str, msgid2: str, n: int) -> str:
        return _MISSING


class Catalogue:
    """One language's translations; English (logged once) where a message has none."""

    def __init__(self, language: str, translations: gettext.NullTranslations | None) -> None:
        self.language = language
        self._translations = translations
        if translations is not None:
            translations.add_fallback(_Miss())
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def _fallback(self, message: str, why: str) -> None:
        with self._lock:
            if message in self._logged:
                return
            self._logged.add(message)
        log.warning("i18n: %s %s for %r; English is shown", self.language, why, message)

    def _checked(self, message: str, translated: str, english: frozenset[str]) -> bool:
        """True when the translation can stand in for the English text."""
        if translated is _MISSING or not translated:
            self._fallback(message, "has no translation")
            return False
        try:
            used = placeholders(translated)
        except ValueError:
            self._fallback(message, "translation is not a valid format")
            return False
        if not used <= english:
            self._fallback(message, f"translation uses unknown placeholders {sorted(used)}")
            return False
        return True

    def gettext(self, message: str) -> str:
        if self._translations is None:
            return message
        translated = self._translations.gettext(message)
        return translated if self._checked(message, translated, placeholders(message)) else message

    def ngettext(self, singular: str, plural: str, count: int) -> str:
        english = singular if count == 1 else plural
        if self._translations is None:
            return english
        translated = self._translations.ngettext(singular, plural, count)
        allowed = placeholders(singular) | placeholders(plural)
        return translated if self._checked(singular, translated, allowed) else english


_LOCALE = resources.files(__package__) / "locale"
_catalogues: dict[str, Catalogue] = {}
_loading = threading.Lock()


def compile_po(po: bytes, language: str) -> bytes:
    """A ``.po`` file's bytes as ``.mo`` bytes (Babel); fuzzy entries are left out.

    A malformed file raises (Babel's PoFileError) instead of being guessed at.
    """
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    catalog = read_po(io.BytesIO(po), locale=language, domain=DOMAIN, abort_invalid=True)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    return compiled.getvalue()


def _mtime(entry: Traversable) -> float | None:
    try:
        return Path(str(entry)).stat().st_mtime
    except OSError:
        return None


def _load(language: str, locale: Traversable) -> gettext.NullTranslations | None:
    """The compiled catalogue, or the ``.po`` compiled now when no current ``.mo`` exists."""
    folder = locale / language / "LC_MESSAGES"
    mo, po = folder / f"{DOMAIN}.mo", folder / f"{DOMAIN}.po"
    if mo.is_file() and (not po.is_file() or (_mtime(mo) or 0) >= (_mtime(po) or 0)):
        return gettext.GNUTranslations(io.BytesIO(mo.read_bytes()))
    if not po.is_file():
        log.warning("i18n: no catalogue for %s; English is shown", language)
        return None
    try:
        data = compile_po(po.read_bytes(), language)
    except ImportError:
        log.warning(
            "i18n: %s has no compiled catalogue and Babel is not installed to "
            "compile it; English is shown (reinstall the bot: pip install .)",
            language,
        )
        return None
    except Exception as exc:  # a broken .po must not stop the bot: English instead
        log.warning("i18n: the %s catalogue cannot be read (%s); English is shown", language, exc)
        return None
    return gettext.GNUTranslations(io.BytesIO(data))


def catalogue(language: str, locale: Traversable | None = None) -> Catalogue:
    """The catalogue of one of :data:`LANGUAGES` (another tag: English), loaded once."""
    if locale is None:
        found = _catalogues.get(language)
        if found is not None:
            return found
    with _loading:
        if locale is None and language in _catalogues:
            return _catalogues[language]
        if language == SOURCE_LANGUAGE or language not in LANGUAGES:
            loaded = Catalogue(SOURCE_LANGUAGE, None)
        else:
            loaded = Catalogue(language, _load(language, locale or _LOCALE))
        if locale is None:
            _catalogues[language] = loaded
        return loaded


def reset() -> None:
    """Forget the loaded catalogues (tests plant other ones)."""
    with _loading:
        _catalogues.clear()
