"""What a video costs in Telegram Stars: the one place that knows it.

``PRICE_STARS`` is read once into a :class:`PriceTable`. Its text is either one whole
number (every video costs that much; ``0`` = free) or comma-separated
``quality/duration=stars`` pairs with ``*=stars`` for every combination not listed::

    *=50,720p/8s=90,1080p/5s=120

A table always holds a price for every combination :mod:`bot.core.options` allows, so a
lookup never guesses: without ``*`` each allowed combination must be listed, and parsing
says which is missing. The keyboard's label, the invoice, the pre-checkout check and
``/terms`` all ask this table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .options import DURATIONS, QUALITIES, VideoOptions, is_allowed

__all__ = ["MAX_STARS", "PriceTable"]

#: Telegram's cap on one item of a Stars invoice.
MAX_STARS = 10_000

#: Every (quality, duration) the model accepts, in the keyboard's order.
_COMBINATIONS: tuple[tuple[str, int], ...] = tuple(
    (quality, duration)
    for quality in QUALITIES
    for duration in DURATIONS
    if is_allowed(VideoOptions(quality=quality, duration=duration))
)
_DEFAULT_KEY = "*"
_QUOTE_LIMIT = 20  # an error quotes at most this much of the offending piece
_DIGITS = re.compile(r"[0-9]+")
_NEGATIVE = re.compile(r"-\s*[0-9]+")
_DURATION = re.compile(r"([0-9]{1,3})\s*s?", re.IGNORECASE)


def _quote(piece: str) -> str:
    """The offending piece, cut short, as ``'…'``: an error never repeats the whole input."""
    if len(piece) > _QUOTE_LIMIT:
        piece = piece[: _QUOTE_LIMIT - 1] + "…"
    return repr(piece)


def _key(quality: str, duration: int) -> str:
    return f"{quality}/{duration}s"


def _stars(text: str) -> int:
    """A whole number of Stars from 0 to :data:`MAX_STARS`."""
    if _NEGATIVE.fullmatch(text):
        raise ValueError(f"Stars can't be negative: {_quote(text)}")
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"Stars must be a whole number: {_quote(text)}")
    # Length first: int() refuses thousands of digits with an error of its own.
    if len(text.lstrip("0")) > len(str(MAX_STARS)) or int(text) > MAX_STARS:
        raise ValueError(f"{_quote(text)} is above {MAX_STARS} Stars, Telegram's limit")
    return int(text)


def _combination(text: str) -> tuple[str, int]:
    """``720p/8s`` (or ``720P/8``, ``720p / 8 s``) → ``("720p", 8)``, if the model allows it."""
    quality_text, slash, duration_text = text.partition("/")
    if not slash or "/" in duration_text:
        raise ValueError(f"{_quote(text)} is not quality/duration, like 720p/8s")
    quality = quality_text.strip().lower()
    if quality not in QUALITIES:
        choices = ", ".join(QUALITIES)
        raise ValueError(f"unknown quality {_quote(quality_text.strip())} (use {choices})")
    match = _DURATION.fullmatch(duration_text.strip())
    if match is None or int(match[1]) not in DURATIONS:
        choices = ", ".join(f"{duration}s" for duration in DURATIONS)
        raise ValueError(f"unknown duration {_quote(duration_text.strip())} (use {choices})")
    combination = (quality, int(match[1]))
    if combination not in _COMBINATIONS:
        raise ValueError(f"{_key(*combination)} is not a combination the model offers")
    return combination


@dataclass(frozen=True)
class PriceTable:
    """The price of every allowed (quality, duration), in Stars; 0 = free.

    Build one with :meth:`parse` or :meth:`flat`. ``entries`` lists every allowed
    combination exactly once, in :data:`bot.core.options.QUALITIES` × ``DURATIONS`` order.
    """

    entries: tuple[tuple[str, int, int], ...]

    def __post_init__(self) -> None:
        if tuple((quality, duration) for quality, duration, _ in self.entries) != _COMBINATIONS:
            raise ValueError("a price table lists every allowed combination once, in order")
        if any(not 0 <= stars <= MAX_STARS for *_, stars in self.entries):
            raise ValueError(f"every price is from 0 to {MAX_STARS} Stars")

    @classmethod
    def flat(cls, stars: int) -> PriceTable:
        """Every video costs ``stars``; ``flat(0)`` is the free table."""
        return cls(tuple((quality, duration, stars) for quality, duration in _COMBINATIONS))

    @classmethod
    def parse(cls, text: str) -> PriceTable:
        """Read ``PRICE_STARS``; a ``ValueError`` says briefly what is wrong and where."""
        text = text.strip()
        if not text:
            raise ValueError("empty: give a number of Stars (0 = free)")
        if "=" not in text and "," not in text:
            if "/" in text or text == _DEFAULT_KEY:
                raise ValueError(f"{_quote(text)} has no =stars")
            return cls.flat(_stars(text))

        default: int | None = None
        given: dict[tuple[str, int], int] = {}
        for raw in text.split(","):
            piece = raw.strip()
            if not piece:
                raise ValueError("an empty piece between commas")
            key_text, equals, stars_text = (part.strip() for part in piece.partition("="))
            if not equals:
                raise ValueError(f"{_quote(piece)} has no =stars")
            if not key_text:
                raise ValueError(f"{_quote(piece)} has no quality/duration before =")
            if not stars_text:
                raise ValueError(f"{_quote(piece)} has no Stars after =")
            if key_text == _DEFAULT_KEY:
                if default is not None:
                    raise ValueError("* is given twice")
                default = _stars(stars_text)
                continue
            combination = _combination(key_text)
            if combination in given:
                raise ValueError(f"{_key(*combination)} is given twice")
            given[combination] = _stars(stars_text)

        if default is None:
            missing = [
                _key(*combination) for combination in _COMBINATIONS if combination not in given
            ]
            if missing:
                raise ValueError(f"no price for {', '.join(missing)} (list each, or add *=stars)")
        return cls(
            tuple(
                (quality, duration, given.get((quality, duration), default or 0))
                for quality, duration in _COMBINATIONS
            )
        )

    def price(self, options: VideoOptions) -> int:
        """Stars for a video with these options; 0 = free. Style and seed cost nothing extra."""
        for quality, duration, stars in self.entries:
            if (quality, duration) == (options.quality, options.duration):
                return stars
        raise ValueError(
            f"{_key(options.quality, options.duration)} is not an allowed combination"
        )

    @property
    def is_free(self) -> bool:
        """True when every video is free: no invoices at all."""
        return all(stars == 0 for *_, stars in self.entries)

    def describe(self) -> list[tuple[str, int, int]]:
        """``(quality, duration, stars)`` for every allowed combination, for ``/terms``.

        Data, not words: the texts decide how to say it in the user's language.
        """
        return list(self.entries)
