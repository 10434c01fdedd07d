"""Inline keyboards and their callback data.

Callback data is ``<action>:<job id>[:<value>]`` (at most 64 bytes): the job's state is
in the ledger, the button only names it. :func:`parse` refuses anything malformed —
old keyboards and forged data arrive too. The history's page buttons name a job too:
the one the page continues from (older than it, or newer). The /language buttons carry
``l:<language>`` (:data:`LANGUAGE_PATTERN`, :func:`parse_language`). Labels are in the
language given, the job's (its asker's) for a job's keyboard.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, SwitchInlineQueryChosenChat

from ..core.options import DURATIONS, QUALITIES, VideoOptions
from ..i18n import texts
from ..i18n.catalogues import LANGUAGES

__all__ = [
    "Action",
    "Press",
    "parse",
    "options_keyboard",
    "awaiting_payment_keyboard",
    "retry_keyboard",
    "after_video_keyboard",
    "history_keyboard",
    "HISTORY_ACTIONS",
    "share_query",
    "parse_share_query",
    "LANGUAGE_PATTERN",
    "language_keyboard",
    "parse_language",
]

#: Callback data of a /language button (the handler that takes them is registered first).
LANGUAGE_PATTERN = r"^l:"


class Action(StrEnum):
    QUALITY = "q"
    DURATION = "d"
    STYLE = "s"
    GENERATE = "g"
    RETRY = "r"
    CHANGE = "c"  #: back from an unpaid invoice to the options
    AGAIN = "a"  #: under a video: the same photo and options, a new seed
    OPTIONS = "o"  #: under a video: a fresh options keyboard for the same photo
    RESEND = "v"  #: in /history: send that video again by its file id
    OLDER = "h"  #: in /history: the page of jobs older than this one
    NEWER = "n"  #: in /history: the page of jobs newer than this one


#: Buttons of a /history message: their job may live in another chat than the message.
HISTORY_ACTIONS = frozenset({Action.RESEND, Action.OLDER, Action.NEWER})


@dataclass(frozen=True)
class Press:
    action: Action
    job_id: int
    value: str | None = None

    def data(self) -> str:
        parts = [self.action.value, str(self.job_id)]
        if self.value is not None:
            parts.append(self.value)
        return ":".join(parts)


_MAX_JOB_ID = 10**15


def parse(data: str | None) -> Press | None:
    """The press a callback's data describes, or None for anything we did not make."""
    if not data or len(data) > 64:
        return None
    parts = data.split(":")
    if len(parts) not in (2, 3):
        return None
    try:
        action = Action(parts[0])
    except ValueError:
        return None
    if not parts[1].isdigit() or not 0 < int(parts[1]) < _MAX_JOB_ID:
        return None
    job_id = int(parts[1])
    value = parts[2] if len(parts) == 3 else None
    if action is Action.QUALITY:
        if value not in QUALITIES:
            return None
    elif action is Action.DURATION:
        if value is None or not value.isdigit() or int(value) not in DURATIONS:
            return None
    elif value is not None:
        return None
    return Press(action, job_id, value)


def _mark(label: str, chosen: bool) -> str:
    return f"{texts.CHOSEN_MARK}{label}" if chosen else label


def options_keyboard(
    lang: str, job_id: int, options: VideoOptions, price: int = 0
) -> InlineKeyboardMarkup:
    """Quality row, duration row, style button, Generate (with its price, if any)."""
    qualities = [
        InlineKeyboardButton(
            _mark(quality, quality == options.quality),
            callback_data=Press(Action.QUALITY, job_id, quality).data(),
        )
        for quality in QUALITIES
    ]
    durations = [
        InlineKeyboardButton(
            _mark(texts.duration_label(duration), duration == options.duration),
            callback_data=Press(Action.DURATION, job_id, str(duration)).data(),
        )
        for duration in DURATIONS
    ]
    style = InlineKeyboardButton(
        texts.style_label(lang, options.style),
        callback_data=Press(Action.STYLE, job_id).data(),
    )
    generate = InlineKeyboardButton(
        texts.generate_label(lang, price), callback_data=Press(Action.GENERATE, job_id).data()
    )
    return InlineKeyboardMarkup([qualities, durations, [style], [generate]])


def awaiting_payment_keyboard(lang: str, job_id: int) -> InlineKeyboardMarkup:
    """Under an unpaid invoice: go back and change the options (voids the invoice)."""
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    texts.change_options_label(lang),
                    callback_data=Press(Action.CHANGE, job_id).data(),
                )
            ]
        ]
    )


def retry_keyboard(lang: str, job_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    texts.retry_label(lang), callback_data=Press(Action.RETRY, job_id).data()
                )
            ]
        ]
    )


def after_video_keyboard(
    lang: str, job_id: int, *, share: bool, again: bool = True
) -> InlineKeyboardMarkup:
    """Under a delivered video: Again and Options (``again``: in the job's own chat), and
    Share when the bot has inline mode (the chat picker, then the user's own videos)."""
    rows: list[list[InlineKeyboardButton]] = []
    if again:
        rows.append(
            [
                InlineKeyboardButton(
                    texts.again_label(lang),
                    callback_data=Press(Action.AGAIN, job_id).data(),
                ),
                InlineKeyboardButton(
                    texts.options_label(lang),
                    callback_data=Press(Action.OPTIONS, job_id).data(),
                ),
            ]
        )
    if share:
        rows.append(
            [
                InlineKeyboardButton(
                    texts.share_label(lang),
                    switch_inline_query_chosen_chat=SwitchInlineQueryChosenChat(
                        query=share_query(job_id),
                        allow_user_chats=True,
                        allow_group_chats=True,
                        allow_channel_chats=True,
                    ),
                )
            ]
        )
    return InlineKeyboardMarkup(rows)


def share_query(job_id: int) -> str:
    """The inline query a Share button starts with: it names the video to offer first."""
    return f"#{job_id}"


def parse_share_query(query: str) -> int | None:
    """The job a Share button's query names (``#12``), or None for anything else."""
    text = query.strip()
    if not text.startswith("#") or not text[1:].isdigit() or not 0 < int(text[1:]) < _MAX_JOB_ID:
        return None
    return int(text[1:])


def history_keyboard(
    lang: str,
    resendable: list[tuple[int, int]],
    *,
    older_than: int | None,
    newer_than: int | None,
) -> InlineKeyboardMarkup | None:
    """One "send again" button per delivered video ((line number, job id)), and the
    page buttons; None when there is nothing to press."""
    rows: list[list[InlineKeyboardButton]] = []
    buttons = [
        InlineKeyboardButton(
            texts.resend_label(lang, number),
            callback_data=Press(Action.RESEND, job_id).data(),
        )
        for number, job_id in resendable
    ]
    rows.extend(buttons[i : i + 5] for i in range(0, len(buttons), 5))
    pages: list[InlineKeyboardButton] = []
    if older_than is not None:
        pages.append(
            InlineKeyboardButton(
                texts.older_label(lang),
                callback_data=Press(Action.OLDER, older_than).data(),
            )
        )
    if newer_than is not None:
        pages.append(
            InlineKeyboardButton(
                texts.newer_label(lang),
                callback_data=Press(Action.NEWER, newer_than).data(),
            )
        )
    if pages:
        rows.append(pages)
    return InlineKeyboardMarkup(rows) if rows else None


def language_keyboard(current: str) -> InlineKeyboardMarkup:
    """One button per language, each in its own name; the current one marked."""
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    _mark(texts.language_name(language), language == current),
                    callback_data=f"l:{language}",
                )
            ]
            for language in LANGUAGES
        ]
    )


def parse_language(data: str | None) -> str | None:
    """The language a /language button names; None for one the bot does not speak."""
    if not data or not data.startswith("l:"):
        return None
    language = data[2:]
    return language if language in LANGUAGES else None
