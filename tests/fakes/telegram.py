"""A local stand-in for the Telegram Bot API, good enough for the real python-telegram-bot.

``FakeTelegram`` runs an aiohttp server on 127.0.0.1 (a free port) inside the current event
loop. Point PTB at it with ``base_url(f"{fake.url}/bot")`` and
``base_file_url(f"{fake.url}/file/bot")``; unit tests, end-to-end tests (the bot as a child
process) and the benchmark then drive the real HTTP path without touching Telegram.

Routes::

    GET|POST /bot{token}/{method}        the Bot API (JSON, urlencoded or multipart bodies)
    GET      /file/bot{token}/{path}     a file's bytes, after getFile gave its path

Methods: getMe, getUpdates, deleteWebhook, setWebhook, getWebhookInfo, setMyCommands,
deleteMyCommands, getMyCommands, setMyDescription, getMyDescription, setMyShortDescription,
getMyShortDescription, sendMessage, sendPhoto, sendVideo, sendDocument, sendInvoice,
sendChatAction, editMessageText, editMessageCaption, editMessageReplyMarkup, deleteMessage,
setMessageReaction, answerCallbackQuery, answerPreCheckoutQuery, answerInlineQuery,
refundStarPayment, getStarTransactions, getFile, close, logOut. Anything else is 404, as
Telegram answers. Reactions: at most one of Telegram's reaction emoji, within what the chat
allows (``set_available_reactions``; else ``REACTION_INVALID``); ``reactions`` reads them back.

Inline mode: ``inline_mode`` (off by default, as for a new bot until BotFather /setinline) is
what getMe reports as ``supports_inline_queries``; ``send_inline_query`` plays a user typing
``@bot <query>`` (an ``inline_query`` update, delivered only when ``allowed_updates`` let it
through). ``answerInlineQuery`` is checked like the Bot API checks it: a known, unanswered
query; at most 50 results with unique ids of 1-64 bytes; a cached video's file id must name a
video the fake knows; ``button.start_parameter`` 1-64 of ``A-Za-z0-9_-``. ``inline_answers``
holds each answer; ``choose_inline_result`` plays the user picking a result: the video is
posted in the chosen chat ``via_bot`` (no update: the bot is not told). Every inline-keyboard
button must carry exactly one action; a ``switch_inline_query*`` button from a bot without
inline mode is refused (BUTTON_TYPE_INVALID; the fake's own strictness).

Users' photos and image files are real pictures a decoder reads (``send_photo`` makes
JPEGs of the given ``width`` × ``height``, padded to ``size_bytes`` with comment segments;
``send_document`` makes a JPEG or PNG, or sends the ``data`` a test built itself).

The test plays the users (``send_text``, ``send_photo``, ``press_button``, ``pay_invoice``, ...),
each of which queues an Update; it injects failures (``fail_next``, ``lose_answer_next``,
``block_chat``, ``flood_limits``; ``hold_next`` stops the bot at a call until released) and
inspects what the bot did (``calls``, ``wait_for_call``, ``bot_messages``,
``callback_answers``, ``payments``, ``refunds``). All helpers are meant to be called from
the event loop the server runs in.

Telegram Stars (digital goods): ``sendInvoice`` with ``currency="XTR"``, no provider token and
exactly one price of 1..10000 Stars stores an invoice message. ``pay_invoice`` plays a user
pressing Pay: it queues a ``pre_checkout_query`` update and returns a ``PaymentAttempt`` to await
(the update reaches the bot only if its ``allowed_updates`` include ``pre_checkout_query``, as
the default does; otherwise it is dropped and the payment times out, as on Telegram).
If the bot answers it with ok=true within ``precheckout_timeout`` seconds (10, counted from when
the query is sent, i.e. queued: a bot that polls slowly loses part of them), a
``successful_payment`` message from the user follows in the invoice's chat (same topic) and the
charge is recorded; ok=false or no answer in time charges nothing, and any later answer gets
"query is too old" (``pending_precheckouts``, ``precheckout_answers`` with the seconds from
query and from getUpdates to the answer, ``star_balance``). The same invoice can be paid again
(``pay_again``), each time under a new ``telegram_payment_charge_id``. ``refundStarPayment``
refunds a charge once (then ``CHARGE_ALREADY_REFUNDED``; unknown charge or another user's:
``CHARGE_NOT_FOUND``) and queues a ``refunded_payment`` service message in the user's private
chat; ``getStarTransactions`` lists incoming payments and outgoing refunds, newest first.
``refund_then_drop_answer`` makes a refund happen while its answer is lost (502 or a closed
connection), and ``redeliver_payment`` delivers a ``successful_payment`` update once more.
Error wordings follow the Bot API server (tdlib/telegram-bot-api) and TDLib sources: e.g. an
empty payload is 'parameter "payload" is required' and a zero amount "total price must be
positive"; only the wording for a too long title or description is the fake's own.

Webhooks: ``setWebhook`` (an https URL, a ``secret_token`` of ``A-Za-z0-9_-``, as Telegram
checks) switches the fake from getUpdates (now answered 409 Conflict) to pushing: each
pending update is POSTed as JSON with ``X-Telegram-Bot-Api-Secret-Token`` to the webhook URL,
whose scheme and host are replaced by ``webhook_proxy`` when set (the TLS reverse proxy in
front of a bot listening on plain HTTP). An update is done when the bot answers 2xx;
otherwise (or on a failed connection) it is tried again after ``webhook_retry_seconds`` and
``getWebhookInfo`` reports ``last_error_message``. ``webhook_posts`` lists every post.
``deleteWebhook`` (or ``setWebhook`` with an empty URL) switches back to getUpdates.
Command menus, descriptions and short descriptions are kept per ``language_code`` (two
letters or none) and, for menus, per scope (``menus``, ``descriptions``,
``short_descriptions``), refused beyond the Bot API's limits: 100 commands of 1-32
characters (a-z, 0-9, _) with 1-256 character descriptions, descriptions up to 512
characters and short ones up to 120 (those wordings are the fake's own).

Deliberate simplifications: parse_mode HTML is rendered by dropping the tags (no entities),
Markdown is stored as sent; uploaded files over ``keep_uploads_up_to`` bytes are hashed, not
kept, so their download URL answers 404; with ``flood_limits`` a private chat takes a burst
of ``PRIVATE_BURST`` messages, then about one a second (sends and edits count); webhook
updates are posted one at a time unless ``webhook_connections`` allows more (Telegram: up
to ``max_connections``, 40 by default, at once) and retried quickly; only Stars invoices
exist (any other currency is refused as PAYMENT_PROVIDER_INVALID).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import functools
import hashlib
import html
import io
import itertools
import json
import math
import re
import secrets
import string
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import BodyPartReader, web
from PIL import Image, ImageDraw

__all__ = [
    "BOT_ID",
    "BOT_NAME",
    "BOT_USERNAME",
    "MAX_DOWNLOAD_BYTES",
    "MAX_STARS_PER_INVOICE",
    "MAX_INLINE_RESULTS",
    "MAX_UPLOAD_BYTES",
    "PRECHECKOUT_TIMEOUT",
    "SEND_METHODS",
    "STARS",
    "TEST_TOKEN",
    "ApiError",
    "Call",
    "FakeTelegram",
    "HeldCall",
    "PaymentAttempt",
    "PaymentResult",
    "PrecheckoutAnswer",
    "StarPayment",
    "StarRefund",
    "UploadedFile",
    "iter_updates",
]

TEST_TOKEN = "123456:TEST-token_abcdefghijklmnopqrstuvwxyz"
BOT_ID = 123456
BOT_USERNAME = "warmth_test_bot"
BOT_NAME = "Warmth"

#: Longest text of a message and of a caption, in characters.
MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
#: Longest ``text`` of answerCallbackQuery.
MAX_ANSWER_LENGTH = 200
#: Bots may upload up to 50 MB per request (multipart).
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
#: getFile serves files up to 20 MB; Telegram fetches files sent by URL up to 20 MB.
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
#: Flood limits applied when ``flood_limits=True`` (Bot FAQ figures).
GROUP_SENDS_PER_MINUTE = 20
SENDS_PER_SECOND = 30
#: A private chat takes about one message a second: a short burst of this many passes,
#: then each further one needs the second its predecessor in the burst had (the FAQ's
#: "short bursts ... eventually you'll begin receiving 429 errors").
PRIVATE_BURST = 3
#: The currency code of Telegram Stars.
STARS = "XTR"
#: The most Stars one invoice may ask for.
MAX_STARS_PER_INVOICE = 10_000
#: Seconds a bot has to answer a pre_checkout_query, counted from when it is sent (queued).
PRECHECKOUT_TIMEOUT = 10.0
#: Invoice limits: title and description in characters, payload in bytes.
MAX_INVOICE_TITLE = 32
MAX_INVOICE_DESCRIPTION = 255
MAX_INVOICE_PAYLOAD_BYTES = 128
#: setMyCommands, setMyDescription, setMyShortDescription.
MAX_COMMANDS = 100
MAX_COMMAND_DESCRIPTION = 256
MAX_BOT_DESCRIPTION = 512
MAX_BOT_SHORT_DESCRIPTION = 120
_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_LANGUAGE_CODE_RE = re.compile(r"^[a-z]{2}$")

JSON = dict[str, Any]

_CHUNK = 64 * 1024
_UPDATE_ID_BASE = 1000
_FIRST_MESSAGE_ID = 1
_PRECHECKOUT_ID_BASE = 6_120_000_000_000_000_000
_QUERY_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"
_CHARGE_ALPHABET = string.ascii_letters + string.digits
#: What the nginx in front of the Bot API answers when the backend's answer is lost.
_BAD_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n"
    "</body>\r\n</html>\r\n"
)

#: Parameters whose form value is a plain string, never JSON (``text`` may well be "123").
_STRING_PARAMS = frozenset(
    {
        "action",
        "animation",
        "audio",
        "business_connection_id",
        "callback_query_id",
        "caption",
        "cover",
        "currency",
        "description",
        "document",
        "emoji",
        "error_message",
        "file_id",
        "inline_message_id",
        "language_code",
        "message_effect_id",
        "name",
        "parse_mode",
        "payload",
        "photo",
        "photo_url",
        "pre_checkout_query_id",
        "provider_data",
        "provider_token",
        "secret_token",
        "short_description",
        "start_parameter",
        "sticker",
        "telegram_payment_charge_id",
        "text",
        "thumbnail",
        "title",
        "url",
        "video",
        "video_note",
        "voice",
    }
)
#: Parameters that are objects or arrays: decoded even when a JSON body carries them as text.
_OBJECT_PARAMS = frozenset(
    {
        "allowed_updates",
        "button",
        "results",
        "caption_entities",
        "commands",
        "entities",
        "link_preview_options",
        "prices",
        "reply_markup",
        "reply_parameters",
        "scope",
        "suggested_tip_amounts",
    }
)
#: Methods that count as sending to a chat (send times, flood limits).
SEND_METHODS = frozenset(
    {
        "sendmessage",
        "sendvideo",
        "sendphoto",
        "senddocument",
        "sendinvoice",
        "editmessagetext",
        "editmessagecaption",
        "editmessagereplymarkup",
    }
)
#: Parameters shown in wait_for_call's timeout report.
_REPORTED = (
    "chat_id",
    "message_id",
    "callback_query_id",
    "pre_checkout_query_id",
    "user_id",
    "telegram_payment_charge_id",
    "file_id",
    "offset",
    "action",
    "text",
    "caption",
    "video",
)
#: The emoji a bot may react with (ReactionTypeEmoji in the Bot API reference).
_REACTION_EMOJI_TEXT = (
    "👍 👎 ❤ 🔥 🥰 👏 😁 🤔 🤯 😱 🤬 😢 🎉 🤩 🤮 💩 🙏 👌 🕊 🤡 "
    "🥱 🥴 😍 🐳 ❤‍🔥 🌚 🌭 💯 🤣 ⚡ 🍌 🏆 💔 🤨 😐 🍓 🍾 💋 🖕 😈 "
    "😴 😭 🤓 👻 👨‍💻 👀 🎃 🙈 😇 😨 🤝 ✍ 🤗 🫡 🎅 🎄 ☃ 💅 🤪 🗿 "
    "🆒 💘 🙉 🦄 😘 💊 🙊 😎 👾 🤷‍♂ 🤷 🤷‍♀ 😡"
)
REACTION_EMOJI = frozenset(_REACTION_EMOJI_TEXT.split())
_CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_FILE_ID_PREFIX = {
    "photo": "AgACAgIAAxkBAAI",
    "document": "BQACAgIAAxkBAAI",
    "video": "BAACAgIAAxkBAAI",
    "sticker": "CAACAgIAAxkBAAI",
}
_FILE_DIRS = {"photo": "photos", "document": "documents", "video": "videos", "sticker": "stickers"}
_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "video/mp4": ".mp4",
    "application/pdf": ".pdf",
}
_COMMAND = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")
_MENTION = re.compile(r"(?<![\w/@])@[A-Za-z0-9_]{5,32}")
_TAG = re.compile(r"<[^>]*>")

_JPEG_HEAD = bytes.fromhex("ffd8ffe000104a46494600010100000100010000")
_JPEG_TAIL = b"\xff\xd9"
_PNG_HEAD = b"\x89PNG\r\n\x1a\n"
_MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
_WEBP_HEAD = b"RIFF\x00\x00\x00\x00WEBPVP8 "


# --------------------------------------------------------------------------- records


@dataclass
class UploadedFile:
    """A file the bot uploaded in a multipart request (bytes kept only when small)."""

    filename: str | None
    content_type: str | None
    size: int
    sha256: str
    data: bytes | None = field(default=None, repr=False, compare=False)


@dataclass
class Call:
    """One request the bot made, with the fake's full answer."""

    method: str
    params: dict[str, Any]
    at: float
    response: dict[str, Any]
    chat_id: int | None = None
    #: The answer the method produced when ``lose_answer_next`` kept it from the bot (then
    #: ``response`` is what the bot got instead: a 502, or nothing on a closed connection).
    lost_answer: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Whether the fake answered ``{"ok": true}``."""
        return bool(self.response.get("ok"))

    @property
    def result(self) -> Any:
        """The ``result`` of a successful call (None for a failed one)."""
        return self.response.get("result")


class ApiError(Exception):
    """An error answer: HTTP status == ``error_code``, as the Bot API does."""

    def __init__(self, code: int, description: str, *, retry_after: int | None = None) -> None:
        super().__init__(f"{code} {description}")
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def body(self) -> JSON:
        """The JSON body Telegram sends with this error."""
        body: JSON = {"ok": False, "error_code": self.code, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


@dataclass
class StarPayment:
    """A successful payment in Stars (a charge), as the bot's ``successful_payment`` told it."""

    charge_id: str
    provider_charge_id: str
    user_id: int
    chat_id: int
    invoice_message_id: int
    amount: int
    payload: str
    query_id: str
    date: int
    #: The ``successful_payment`` message and the update that carried it.
    message_id: int
    update_id: int
    currency: str = STARS
    refunded: bool = False


@dataclass
class StarRefund:
    """A refund the bot made with refundStarPayment."""

    charge_id: str
    user_id: int
    amount: int
    payload: str
    date: int
    #: The ``refunded_payment`` service message in the user's private chat, and its update.
    message_id: int
    update_id: int
    currency: str = STARS


@dataclass
class PrecheckoutAnswer:
    """One answerPreCheckoutQuery for a query the fake issued (in time or not)."""

    query_id: str
    ok: bool
    error_message: str | None
    #: False when the fake refused it as too old (timed out, or answered already).
    accepted: bool
    #: Seconds from the query being sent (the user pressing Pay) to this answer.
    since_query: float
    #: Seconds from the first getUpdates that handed the query out; None if it never was.
    since_fetch: float | None


@dataclass(frozen=True)
class PaymentResult:
    """How a payment attempt ended."""

    paid: bool
    query_id: str
    charge_id: str | None = None
    #: The bot's ``error_message`` when it answered ok=false.
    error_message: str | None = None
    #: The bot did not answer within ``precheckout_timeout``.
    timed_out: bool = False
    payment: StarPayment | None = None


class PaymentAttempt:
    """A user paying an invoice: pending until the bot answers the pre_checkout_query or the
    time runs out. ``await attempt`` gives the ``PaymentResult``."""

    def __init__(
        self,
        *,
        query_id: str,
        user_id: int,
        chat_id: int,
        invoice_message_id: int,
        amount: int,
        payload: str,
        timeout: float,
    ) -> None:
        self.query_id = query_id
        self.user_id = user_id
        self.chat_id = chat_id
        self.invoice_message_id = invoice_message_id
        self.amount = amount
        self.payload = payload
        #: The update_id of the pre_checkout_query update.
        self.update_id = 0
        self.created_at = time.monotonic()
        self.deadline = self.created_at + timeout
        #: When a getUpdates first handed the query to the bot (monotonic), or None.
        self.fetched_at: float | None = None
        #: "pending", "paid", "declined" or "timed_out".
        self.status = "pending"
        self._result: PaymentResult | None = None
        self._finished = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

    def done(self) -> bool:
        """Whether the bot answered (or the time ran out)."""
        return self._result is not None

    def result(self) -> PaymentResult:
        """The outcome; raises RuntimeError while the attempt is still pending."""
        if self._result is None:
            raise RuntimeError(f"payment {self.query_id} is still pending")
        return self._result

    async def wait(self) -> PaymentResult:
        """Wait for the outcome (at most ``precheckout_timeout`` after the attempt began)."""
        await self._finished.wait()
        return self.result()

    def __await__(self) -> Generator[Any, None, PaymentResult]:
        return self.wait().__await__()

    def _finish(self, status: str, result: PaymentResult) -> None:
        if self._result is not None:
            return
        self.status = status
        self._result = result
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._finished.set()

    def __repr__(self) -> str:
        return (
            f"PaymentAttempt(query_id={self.query_id!r}, user_id={self.user_id},"
            f" chat_id={self.chat_id}, invoice_message_id={self.invoice_message_id},"
            f" amount={self.amount}, status={self.status!r})"
        )


@dataclass
class _Injected:
    method: str
    chat_id: int | None
    error: ApiError
    times: int


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    kind: str
    size: int
    data: bytes | None
    mime_type: str | None = None
    file_name: str | None = None
    sha256: str | None = None
    path: str | None = None


@dataclass
class _Chat:
    info: JSON
    next_message_id: int = _FIRST_MESSAGE_ID
    messages: dict[int, JSON] = field(default_factory=dict)
    bot_message_ids: list[int] = field(default_factory=list)
    deleted: set[int] = field(default_factory=set)
    blocked: bool = False
    #: Emoji members may react with; None: every one (a group's admins may narrow it).
    available_reactions: frozenset[str] | None = None
    #: The bot's reaction on each message (message id → emoji, in order).
    reactions: dict[int, list[str]] = field(default_factory=dict)

    @property
    def id(self) -> int:
        return int(self.info["id"])

    @property
    def is_private(self) -> bool:
        return bool(self.info["type"] == "private")


@dataclass
class _Pending:
    update_id: int
    update: JSON
    redelivered: bool = False
    delivered: bool = False


@dataclass
class _Poll:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    superseded: bool = False


@dataclass
class _Query:
    chat_id: int
    user_id: int
    message_id: int
    answered: bool = False


@dataclass
class _Lost:
    method: str
    chat_id: int | None
    times: int
    disconnect: bool


@dataclass(eq=False)
class HeldCall:
    """A call the fake holds before acting on it (``hold_next``): ``reached`` is set when
    the bot's request has arrived, ``release()`` lets Telegram carry it out. If the bot
    goes away meanwhile (killed), the request is dropped unanswered and never carried
    out, as when a connection breaks before the request reached Telegram."""

    method: str
    chat_id: int | None
    #: Only a call whose parameters this accepts is held (None: any).
    where: Callable[[JSON], bool] | None = None
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when the bot's connection went away while it was held.
    abandoned: bool = False

    def release(self) -> None:
        self.released.set()


@dataclass
class _Invoice:
    chat_id: int
    message_id: int
    thread_id: int | None
    title: str
    description: str
    payload: str
    currency: str
    amount: int


@dataclass
class _StarTransaction:
    charge_id: str
    amount: int
    date: int
    user_id: int
    payload: str
    incoming: bool


# --------------------------------------------------------------------------- helpers


def _now() -> int:
    return int(time.time())


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _entities(text: str) -> list[JSON]:
    """bot_command and mention entities, with offsets in UTF-16 code units as Telegram does."""
    found: list[tuple[int, int, str]] = []
    for match in _COMMAND.finditer(text):
        found.append((match.start(), match.end(), "bot_command"))
    for match in _MENTION.finditer(text):
        found.append((match.start(), match.end(), "mention"))
    found.sort()
    return [
        {"offset": _utf16_len(text[:start]), "length": _utf16_len(text[start:end]), "type": kind}
        for start, end, kind in found
    ]


def _filler(size: int, seed: int) -> bytes:
    """``size`` deterministic bytes that differ from seed to seed."""
    block = hashlib.sha256(f"fake-telegram-{seed}".encode()).digest() * 64
    repeats = size // len(block) + 1
    return (block * repeats)[:size]


def _file_bytes(head: bytes, tail: bytes, size: int, seed: int) -> bytes:
    """A file of exactly ``size`` bytes: ``head``, deterministic padding, ``tail``."""
    if size <= len(head) + len(tail):
        return (head + tail)[:size]
    return head + _filler(size - len(head) - len(tail), seed) + tail


@functools.cache
def _picture(width: int, height: int, image_format: str) -> bytes:
    """A small real picture (a face-coloured oval on a plain ground), encoded once."""
    image = Image.new("RGB", (width, height), (90, 120, 160))
    ImageDraw.Draw(image).ellipse(
        (width // 4, height // 5, width * 3 // 4, height * 4 // 5), fill=(225, 190, 160)
    )
    out = io.BytesIO()
    image.save(out, image_format, **({"quality": 80} if image_format == "JPEG" else {}))
    return out.getvalue()


def _padded_picture(image_format: str, width: int, height: int, size: int, seed: int) -> bytes:
    """A real JPEG or PNG of ``width`` × ``height`` grown to ``size`` bytes (when it is
    smaller) with segments every decoder skips: JPEG comments, a private PNG chunk."""
    data = _picture(width, height, image_format)
    missing = size - len(data)
    if image_format == "JPEG":
        segments: list[bytes] = []
        while missing > 4:
            body = _filler(min(missing - 4, 65533), seed + len(segments))
            segments.append(b"\xff\xfe" + (len(body) + 2).to_bytes(2, "big") + body)
            missing -= len(body) + 4
        return data[:2] + b"".join(segments) + data[2:]
    if missing > 12:
        body = _filler(missing - 12, seed)
        kind = b"fiLl"
        chunk = len(body).to_bytes(4, "big") + kind + body
        chunk += zlib.crc32(kind + body).to_bytes(4, "big")
        return data[:-12] + chunk + data[-12:]  # before IEND
    return data


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value.strip())
    return None


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _decode_value(name: str, raw: str) -> Any:
    """A form field as the Bot API reads it: JSON where it parses, else the string."""
    if name in _STRING_PARAMS:
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _normalise(params: JSON) -> JSON:
    for name in _OBJECT_PARAMS:
        value = params.get(name)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                params[name] = json.loads(value)
    return params


def _render(text: str, parse_mode: Any) -> str:
    """The text a user would see. HTML tags are dropped; Markdown is left as sent."""
    if isinstance(parse_mode, str) and parse_mode.lower() == "html":
        return html.unescape(_TAG.sub("", text))
    return text


#: What an inline-keyboard button may do; each button does exactly one of these.
_BUTTON_ACTIONS = (
    "callback_data",
    "url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "login_url",
    "web_app",
    "callback_game",
    "pay",
    "copy_text",
)
_INLINE_SWITCHES = frozenset(
    {"switch_inline_query", "switch_inline_query_current_chat", "switch_inline_query_chosen_chat"}
)
#: Inline answers: results per answer, result id bytes, next_offset bytes, start parameter.
MAX_INLINE_RESULTS = 50
MAX_INLINE_RESULT_ID_BYTES = 64
MAX_NEXT_OFFSET_BYTES = 64
_START_PARAMETER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _check_button(button: JSON, inline_mode: bool) -> None:
    actions = [name for name in _BUTTON_ACTIONS if button.get(name) is not None]
    if len(actions) != 1:
        raise _bad("can't parse inline keyboard button: Text buttons are unallowed")
    action = actions[0]
    if action in _INLINE_SWITCHES and not inline_mode:
        raise _bad("BUTTON_TYPE_INVALID")
    if action == "switch_inline_query_chosen_chat":
        chosen = button[action]
        if not isinstance(chosen, dict):
            raise _bad(
                'can\'t parse inline keyboard button: Field "switch_inline_query_chosen_chat" '
                "must be of type Object"
            )
        query = chosen.get("query", "")
        if not isinstance(query, str) or len(query) > 256:
            raise _bad("can't parse inline keyboard button: query is too long")


def _inline_markup(value: Any, *, inline_mode: bool = True) -> JSON | None:
    """The inline keyboard a message keeps (other markups are not stored on messages)."""
    if not isinstance(value, dict):
        return None
    rows = value.get("inline_keyboard")
    if not isinstance(rows, list) or not any(rows):
        return None
    for row in rows:
        if not isinstance(row, list):
            raise _bad(
                "can't parse inline keyboard button: InlineKeyboardButton must be an Object"
            )
        for button in row:
            if not isinstance(button, dict) or not button.get("text"):
                raise _bad("can't parse inline keyboard button: Text buttons are unallowed")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= 64:
                raise _bad("BUTTON_DATA_INVALID")
            _check_button(button, inline_mode)
    return copy.deepcopy(value)


def _reply_copy(message: JSON) -> JSON:
    """A message as it appears in ``reply_to_message`` (which never nests further)."""
    return {
        key: copy.deepcopy(value) for key, value in message.items() if key != "reply_to_message"
    }


def _content(message: JSON) -> tuple[Any, ...]:
    return (
        message.get("text"),
        message.get("entities"),
        message.get("caption"),
        message.get("caption_entities"),
        message.get("reply_markup"),
    )


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, UploadedFile):
        return f"<upload {value.filename} {value.size} B>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- the fake


class FakeTelegram:
    """The Bot API for one bot token, plus the users and chats that talk to it."""

    def __init__(
        self,
        token: str = TEST_TOKEN,
        *,
        flood_limits: bool = False,
        keep_uploads_up_to: int = 1024 * 1024,
        precheckout_timeout: float = PRECHECKOUT_TIMEOUT,
    ) -> None:
        self.token = token
        self.flood_limits = flood_limits
        #: Seconds the bot has to answer a pre_checkout_query (set it small in tests).
        self.precheckout_timeout = precheckout_timeout
        #: Uploads (and URL fetches) up to this many bytes keep their bytes, for getFile.
        self.keep_uploads_up_to = keep_uploads_up_to
        self.url = ""
        self.calls: list[Call] = []
        #: Callback query id -> the params of its (first) answerCallbackQuery.
        self.callback_answers: dict[str, dict[str, Any]] = {}
        #: The file paths the bot downloaded, in order.
        self.downloads: list[str] = []
        #: The URLs the fake fetched for media sent by URL.
        self.fetched_urls: list[str] = []
        #: getMe's ``supports_inline_queries``: BotFather /setinline (read at the bot's start).
        self.inline_mode = False
        #: Inline query id -> the params of its answerInlineQuery (results decoded).
        self.inline_answers: dict[str, dict[str, Any]] = {}
        #: The commands of the last setMyCommands (default scope), as getMyCommands returns.
        self.commands: list[JSON] = []
        #: Command menus by (scope type, language code; "" for none).
        self.menus: dict[tuple[str, str], list[JSON]] = {}
        #: setMyDescription / setMyShortDescription by language code ("" for none).
        self.descriptions: dict[str, str] = {}
        self.short_descriptions: dict[str, str] = {}
        self.webhook_url = ""
        #: Where the fake really posts webhook updates: the scheme and host of
        #: ``webhook_url`` are replaced by this (the TLS reverse proxy in front of the bot).
        self.webhook_proxy = ""
        #: Seconds between tries of an update the webhook did not take (Telegram: longer).
        self.webhook_retry_seconds = 0.05
        #: Updates posted at the same time (Telegram: up to the webhook's
        #: ``max_connections``, 40 by default). 1: strictly one after the other, a failed
        #: one holding back the rest; more: each connection takes the next update not
        #: already being posted, and a failed one is tried again after
        #: ``webhook_retry_seconds`` while the others go on.
        self.webhook_connections = 1
        #: Every webhook post: (update_id, HTTP status, or 0 when the connection failed).
        self.webhook_posts: list[tuple[int, int]] = []
        self._webhook_secret: str | None = None
        self._webhook_error: tuple[int, str] | None = None
        self._webhook_wake = asyncio.Event()
        self._pusher: asyncio.Task[None] | None = None

        self._users: dict[int, JSON] = {}
        self._chats: dict[int, _Chat] = {}
        self._files: dict[str, _StoredFile] = {}
        self._paths: dict[str, _StoredFile] = {}
        self._queries: dict[str, _Query] = {}
        self._inline_queries: dict[str, _Query] = {}
        self._inline_counter = itertools.count(1)
        self._injected: list[_Injected] = []
        self._lost: list[_Lost] = []
        self._holds: list[HeldCall] = []

        self._invoices: dict[tuple[int, int], _Invoice] = {}
        self._precheckouts: dict[str, PaymentAttempt] = {}
        self._precheckout_answers: list[PrecheckoutAnswer] = []
        self._payments: dict[str, StarPayment] = {}
        self._refunds: list[StarRefund] = []
        self._transactions: list[_StarTransaction] = []
        self._precheckout_counter = itertools.count(1)
        self._provider_counters: dict[int, itertools.count[int]] = {}

        self._history: dict[int, JSON] = {}
        self._pending: list[_Pending] = []
        self._next_update_id = _UPDATE_ID_BASE
        self._allowed_updates: list[str] | None = None
        self._poll: _Poll | None = None

        self._file_counter = itertools.count(1)
        self._path_counter = itertools.count(1)
        self._query_counter = itertools.count(1)

        self._chat_sends: dict[int, list[float]] = {}
        self._all_sends: list[float] = []
        self._recent_sends: deque[float] = deque()

        self._call_waiters: set[asyncio.Event] = set()
        self._runner: web.AppRunner | None = None
        self._http: httpx.AsyncClient | None = None
        self._port = 0
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

        self._methods: dict[str, Callable[[JSON], Awaitable[Any]]] = {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "deletewebhook": self._delete_webhook,
            "setwebhook": self._set_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "setmycommands": self._set_my_commands,
            "deletemycommands": self._delete_my_commands,
            "getmycommands": self._get_my_commands,
            "setmydescription": self._set_my_description,
            "getmydescription": self._get_my_description,
            "setmyshortdescription": self._set_my_short_description,
            "getmyshortdescription": self._get_my_short_description,
            "sendmessage": self._send_message,
            "sendphoto": self._send_photo,
            "sendvideo": self._send_video,
            "senddocument": self._send_document,
            "sendinvoice": self._send_invoice,
            "sendchataction": self._send_chat_action,
            "editmessagetext": self._edit_message_text,
            "editmessagecaption": self._edit_message_caption,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "deletemessage": self._delete_message,
            "setmessagereaction": self._set_message_reaction,
            "answercallbackquery": self._answer_callback_query,
            "answerprecheckoutquery": self._answer_pre_checkout_query,
            "answerinlinequery": self._answer_inline_query,
            "refundstarpayment": self._refund_star_payment,
            "getstartransactions": self._get_star_transactions,
            "getfile": self._get_file,
            "close": self._true,
            "logout": self._true,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Serve on 127.0.0.1: a free port the first time, the same port after a stop()."""
        if self._runner is not None:
            return
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        host, port = runner.addresses[0][:2]
        self._port = port
        self._runner = runner
        self._http = httpx.AsyncClient(
            follow_redirects=True, trust_env=False, timeout=httpx.Timeout(15.0)
        )
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Answer any pending long poll with [] at once, then close the server."""
        self._stopping = True
        await self._stop_pusher()
        if self._poll is not None:
            self._poll.wake.set()
        runner, self._runner = self._runner, None
        http, self._http = self._http, None
        if runner is not None:
            await runner.cleanup()
        if http is not None:
            await http.aclose()

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        """PTB's ``base_url``: ``{url}/bot``."""
        return f"{self.url}/bot"

    @property
    def file_url(self) -> str:
        """PTB's ``base_file_url``: ``{url}/file/bot``."""
        return f"{self.url}/file/bot"

    # ------------------------------------------------------------------ inspection

    def calls_of(self, method: str, chat_id: int | None = None) -> list[Call]:
        """The calls of ``method`` (any case), optionally only those to ``chat_id``."""
        wanted = method.lower()
        return [
            call
            for call in self.calls
            if call.method.lower() == wanted and (chat_id is None or call.chat_id == chat_id)
        ]

    async def wait_for_call(
        self,
        method: str,
        *,
        chat_id: int | None = None,
        count: int = 1,
        timeout: float = 20.0,  # noqa: ASYNC109 - the fixture API takes a plain timeout
        where: Callable[[Call], bool] | None = None,
    ) -> list[Call]:
        """Wait until ``count`` calls match (ok or not); return all matching calls.

        Raises AssertionError listing the calls seen when ``timeout`` passes first. The
        default leaves room for a bot process that has just been started on a loaded
        machine: with 10 s, crash tests waiting for their first keyboard timed out three
        times in two whole-suite runs at a load average near 10 (the file alone passed).
        A call that comes returns at once.
        """
        deadline = time.monotonic() + timeout
        event = asyncio.Event()
        self._call_waiters.add(event)
        try:
            while True:
                event.clear()
                matching = [
                    call for call in self.calls_of(method, chat_id) if where is None or where(call)
                ]
                if len(matching) >= count:
                    return matching
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        self._timeout_report(method, chat_id, count, timeout, len(matching))
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)
        finally:
            self._call_waiters.discard(event)

    def clear_calls(self) -> None:
        """Forget the calls recorded so far (the world stays as it is)."""
        self.calls.clear()

    def bot_messages(self, chat_id: int) -> list[dict[str, Any]]:
        """The current state (after edits) of every message the bot sent to the chat and did
        not delete, oldest first."""
        chat = self._chats.get(chat_id)
        if chat is None:
            return []
        return [
            copy.deepcopy(chat.messages[message_id])
            for message_id in chat.bot_message_ids
            if message_id in chat.messages
        ]

    def message(self, chat_id: int, message_id: int) -> dict[str, Any] | None:
        """A message's current state (user's or bot's); None if unknown or deleted."""
        chat = self._chats.get(chat_id)
        if chat is None or message_id not in chat.messages:
            return None
        return copy.deepcopy(chat.messages[message_id])

    def pending_updates(self) -> int:
        """Updates not yet confirmed by a getUpdates offset."""
        return len(self._pending)

    @property
    def long_polling(self) -> bool:
        """A getUpdates is parked here, waiting for an update or its timeout."""
        return self._poll is not None

    def send_times(self, chat_id: int | None = None) -> list[float]:
        """Monotonic times of the accepted sends and edits to a chat (or to all chats)."""
        if chat_id is None:
            return list(self._all_sends)
        return list(self._chat_sends.get(chat_id, ()))

    def forget_file(self, file_id: str) -> None:
        """Telegram no longer knows this file id: sends naming it get "wrong file identifier"."""
        self._files.pop(file_id, None)

    def file_data(self, file_id: str) -> bytes | None:
        """The bytes behind a file id (None when not kept, e.g. big uploads)."""
        stored = self._files.get(file_id)
        return None if stored is None else stored.data

    @property
    def payments(self) -> list[StarPayment]:
        """Every successful payment (charge), oldest first; ``refunded`` tells refunds apart."""
        return list(self._payments.values())

    @property
    def refunds(self) -> list[StarRefund]:
        """Every refund the fake made, oldest first (a lost answer's refund included)."""
        return list(self._refunds)

    @property
    def star_balance(self) -> int:
        """The bot's Stars: payments received minus refunds."""
        return sum(t.amount if t.incoming else -t.amount for t in self._transactions)

    @property
    def pending_precheckouts(self) -> list[PaymentAttempt]:
        """Payment attempts whose pre_checkout_query is still waiting for the bot's answer."""
        return [attempt for attempt in self._precheckouts.values() if not attempt.done()]

    @property
    def precheckout_answers(self) -> list[PrecheckoutAnswer]:
        """Every answerPreCheckoutQuery for a known query, in order, late ones included."""
        return list(self._precheckout_answers)

    # ------------------------------------------------------------------ the world

    def user(
        self,
        user_id: int,
        first_name: str = "Ann",
        username: str | None = None,
        *,
        language_code: str | None = "en",
    ) -> dict[str, Any]:
        """Register (or rename) a user; return the User object. ``language_code`` is the
        IETF tag of the user's app (``pt-br``, ``es-419``…), or None for none at all."""
        info: JSON = {"id": user_id, "is_bot": False, "first_name": first_name}
        if language_code is not None:
            info["language_code"] = language_code
        if username is not None:
            info["username"] = username
        self._users[user_id] = info
        chat = self._chats.get(user_id)
        if chat is not None and chat.is_private:
            chat.info = self._private_info(user_id)
        return copy.deepcopy(info)

    def private_chat(self, user_id: int) -> int:
        """The private chat between the bot and a user; its id is the user's id."""
        self._ensure_chat(user_id)
        return user_id

    def group(
        self,
        chat_id: int,
        title: str = "Family",
        *,
        supergroup: bool = True,
        forum: bool = False,
    ) -> int:
        """A group (negative id, e.g. -1001234) the bot is in; ``forum`` implies topics."""
        if chat_id >= 0:
            raise ValueError(f"group chat ids are negative, got {chat_id}")
        if forum and not supergroup:
            raise ValueError("only supergroups can be forums")
        info: JSON = {"id": chat_id, "type": "supergroup" if supergroup else "group"}
        info["title"] = title
        if forum:
            info["is_forum"] = True
        chat = self._chats.get(chat_id)
        if chat is None:
            self._chats[chat_id] = _Chat(info)
        else:
            chat.info = info
        return chat_id

    def block_chat(self, chat_id: int) -> None:
        """The user blocks the bot (private) or kicks it (group): sends get 403."""
        self._ensure_chat(chat_id).blocked = True

    def unblock_chat(self, chat_id: int) -> None:
        """Undo block_chat."""
        self._ensure_chat(chat_id).blocked = False

    # ------------------------------------------------------------------ users act

    def send_text(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        reply_to: int | None = None,
        thread_id: int | None = None,
    ) -> dict[str, Any]:
        """A user sends a text message; commands and mentions get entities."""
        content: JSON = {"text": text}
        entities = _entities(text)
        if entities:
            content["entities"] = entities
        return self._user_message(chat_id, user_id, content, reply_to, thread_id)

    def send_photo(
        self,
        chat_id: int,
        user_id: int,
        *,
        caption: str | None = None,
        size_bytes: int = 50_000,
        width: int = 1280,
        height: int = 1707,
        media_group_id: str | None = None,
        reply_to: int | None = None,
        thread_id: int | None = None,
    ) -> dict[str, Any]:
        """A user sends a photo: three sizes, ascending, each a real JPEG; the largest is
        ``width`` × ``height`` and ``size_bytes`` long (longer if the picture needs it).
        Photos of one album share a ``media_group_id``."""
        sizes: list[JSON] = []
        for factor, size in ((90 / 1280, size_bytes // 40), (320 / 1280, size_bytes // 6)):
            small = (max(1, round(width * factor)), max(1, round(height * factor)))
            sizes.append(self._photo_size(small, max(1, size)))
        sizes.append(self._photo_size((width, height), size_bytes))
        content: JSON = {"photo": sizes}
        if media_group_id is not None:
            content["media_group_id"] = media_group_id
        self._add_caption(content, caption)
        return self._user_message(chat_id, user_id, content, reply_to, thread_id)

    def _photo_size(self, dimensions: tuple[int, int], size: int) -> JSON:
        width, height = dimensions
        stored = self._new_picture("photo", "JPEG", width, height, size, "image/jpeg", None)
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "width": width,
            "height": height,
            "file_size": stored.size,
        }

    def send_document(
        self,
        chat_id: int,
        user_id: int,
        *,
        mime_type: str = "image/jpeg",
        file_name: str = "photo.jpg",
        size_bytes: int = 80_000,
        data: bytes | None = None,
        caption: str | None = None,
        reply_to: int | None = None,
        thread_id: int | None = None,
    ) -> dict[str, Any]:
        """A user sends a file: ``data`` as given, else a real 1200×900 picture for
        image/jpeg and image/png and stand-in bytes for the rest, ``size_bytes`` long;
        over 20 MB only its size is stored (getFile refuses it)."""
        if data is not None:
            stored = self._store_bytes("document", data, mime_type, file_name)
        elif mime_type in ("image/jpeg", "image/png") and size_bytes <= MAX_DOWNLOAD_BYTES:
            image_format = "JPEG" if mime_type == "image/jpeg" else "PNG"
            stored = self._new_picture(
                "document", image_format, 1200, 900, size_bytes, mime_type, file_name
            )
        else:
            head, tail = {
                "image/jpeg": (_JPEG_HEAD, _JPEG_TAIL),
                "image/png": (_PNG_HEAD, b""),
                "video/mp4": (_MP4_HEAD, b""),
            }.get(mime_type, (b"", b""))
            stored = self._new_file(
                "document", size_bytes, head, tail, mime_type=mime_type, file_name=file_name
            )
        document: JSON = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": file_name,
            "mime_type": mime_type,
            "file_size": stored.size,
        }
        content: JSON = {"document": document}
        self._add_caption(content, caption)
        return self._user_message(chat_id, user_id, content, reply_to, thread_id)

    def send_sticker(self, chat_id: int, user_id: int) -> dict[str, Any]:
        """A user sends a (static) sticker."""
        stored = self._new_file("sticker", 24_000, _WEBP_HEAD, b"", mime_type="image/webp")
        sticker: JSON = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": "\N{SLIGHTLY SMILING FACE}",
            "set_name": "FakeStickers",
            "file_size": stored.size,
        }
        return self._user_message(chat_id, user_id, {"sticker": sticker}, None, None)

    def send_video_message(
        self,
        chat_id: int,
        user_id: int,
        *,
        size_bytes: int = 300_000,
        caption: str | None = None,
    ) -> dict[str, Any]:
        """A user sends a video."""
        stored = self._new_file(
            "video", size_bytes, _MP4_HEAD, b"", mime_type="video/mp4", file_name="clip.mp4"
        )
        content: JSON = {"video": self._video_object(stored, 720, 1280, 5)}
        self._add_caption(content, caption)
        return self._user_message(chat_id, user_id, content, None, None)

    def press_button(self, chat_id: int, user_id: int, message_id: int, data: str) -> str:
        """A user presses an inline button with ``data`` on a message; returns the query id.

        The update carries the message as it is now (text, keyboard); an unknown message is
        sent as a minimal one, as for an old message the fake never saw.
        """
        chat = self._ensure_chat(chat_id)
        user = self._ensure_user(user_id)
        message = chat.messages.get(message_id)
        if message is None:
            message = {
                "message_id": message_id,
                "from": self._bot_user(),
                "chat": copy.deepcopy(chat.info),
                "date": _now() - 60,
                "text": "...",
            }
        query_id = str(4_000_000_000_000_000 + next(self._query_counter))
        self._queries[query_id] = _Query(chat_id, user_id, message_id)
        query: JSON = {
            "id": query_id,
            "from": copy.deepcopy(user),
            "message": copy.deepcopy(message),
            "chat_instance": str(-(abs(chat_id) * 7919 + 13)),
            "data": data,
        }
        self.push_update({"callback_query": query})
        return query_id

    def send_inline_query(
        self, user_id: int, query: str = "", *, chat_type: str = "sender"
    ) -> str:
        """A user types ``@bot <query>`` (or a Share button opened it); returns the query id."""
        user = self._ensure_user(user_id)
        query_id = str(7_000_000_000_000_000 + next(self._inline_counter))
        self._inline_queries[query_id] = _Query(0, user_id, 0)
        self.push_update(
            {
                "inline_query": {
                    "id": query_id,
                    "from": copy.deepcopy(user),
                    "query": query,
                    "offset": "",
                    "chat_type": chat_type,
                }
            }
        )
        return query_id

    def choose_inline_result(self, query_id: str, result_id: str, chat_id: int) -> dict[str, Any]:
        """The user picks one of the bot's answers to their inline query: it is posted in
        ``chat_id`` as their message, ``via_bot`` (the bot gets no update for it)."""
        answer = self.inline_answers.get(query_id)
        query = self._inline_queries.get(query_id)
        if answer is None or query is None:
            raise ValueError(f"inline query {query_id} was not answered")
        result = next((r for r in answer["results"] if r.get("id") == result_id), None)
        if result is None:
            raise ValueError(f"no result {result_id!r} in the answer to {query_id}")
        stored = self._files[result["video_file_id"]]
        chat = self._ensure_chat(chat_id)
        message: JSON = {
            "message_id": self._next_message_id(chat),
            "from": copy.deepcopy(self._ensure_user(query.user_id)),
            "chat": copy.deepcopy(chat.info),
            "date": _now(),
            "via_bot": self._bot_user(),
            "video": self._video_object(stored, 720, 1280, 5),
        }
        if result.get("caption"):
            message["caption"] = result["caption"]
        chat.messages[message["message_id"]] = message
        return copy.deepcopy(message)

    def pay_invoice(
        self,
        user_id: int,
        invoice_message_or_id: Any,
        *,
        chat_id: int | None = None,
    ) -> PaymentAttempt:
        """A user presses Pay on an invoice the bot sent: queues a pre_checkout_query update.

        ``invoice_message_or_id`` is the invoice message (a dict such as ``Call.result``, or a
        ``telegram.Message``) or its message_id (with ``chat_id``, or unambiguous). Returns the
        pending ``PaymentAttempt``; ``await`` it for the ``PaymentResult``. A bot answer with
        ok=true within ``precheckout_timeout`` seconds queues the ``successful_payment``
        message; anything else charges nothing.
        """
        invoice = self._find_invoice(user_id, invoice_message_or_id, chat_id)
        user = self._ensure_user(user_id)
        query_id = str(_PRECHECKOUT_ID_BASE + next(self._precheckout_counter))
        attempt = PaymentAttempt(
            query_id=query_id,
            user_id=user_id,
            chat_id=invoice.chat_id,
            invoice_message_id=invoice.message_id,
            amount=invoice.amount,
            payload=invoice.payload,
            timeout=self.precheckout_timeout,
        )
        self._precheckouts[query_id] = attempt
        query: JSON = {
            "id": query_id,
            "from": copy.deepcopy(user),
            "currency": invoice.currency,
            "total_amount": invoice.amount,
            "invoice_payload": invoice.payload,
        }
        attempt.update_id = self.push_update({"pre_checkout_query": query})
        self._arm_precheckout_timer(attempt)
        return attempt

    def pay_again(
        self, previous: PaymentAttempt | StarPayment, *, user_id: int | None = None
    ) -> PaymentAttempt:
        """Pay the same invoice once more (Telegram allows it): a new query, a new charge id."""
        payer = previous.user_id if user_id is None else user_id
        return self.pay_invoice(payer, previous.invoice_message_id, chat_id=previous.chat_id)

    def redeliver_payment(self, charge_id: str) -> int:
        """Deliver the update with this charge's ``successful_payment`` once more (as after a
        crash before its offset was confirmed); returns its update_id."""
        payment = self._payments.get(charge_id)
        if payment is None:
            raise KeyError(f"no payment {charge_id}")
        self.redeliver_update(payment.update_id)
        return payment.update_id

    def set_available_reactions(self, chat_id: int, emoji: Iterable[str] | None) -> None:
        """A group's admins allow only these reactions (empty: reactions off; None: all)."""
        self._ensure_chat(chat_id).available_reactions = (
            None if emoji is None else frozenset(emoji)
        )

    def reactions(self, chat_id: int, message_id: int) -> list[str]:
        """The bot's reaction on a message, as setMessageReaction left it."""
        return list(self._ensure_chat(chat_id).reactions.get(message_id, []))

    def delete_message(self, chat_id: int, message_id: int) -> None:
        """A user deletes a message (theirs or the bot's): replies to it no longer resolve."""
        chat = self._ensure_chat(chat_id)
        chat.messages.pop(message_id, None)
        chat.deleted.add(message_id)

    def push_update(self, payload: JSON) -> int:
        """Queue a raw update (``{"message": {...}}`` etc.); returns its update_id."""
        update_id = self._next_update_id
        self._next_update_id += 1
        update = {"update_id": update_id, **copy.deepcopy(payload)}
        self._history[update_id] = update
        self._pending.append(_Pending(update_id, update))
        self._wake_poll()
        return update_id

    def redeliver_update(self, update_id: int) -> None:
        """Queue an earlier update again under the SAME update_id, even if it was confirmed.

        It is delivered once even when the bot's offset is already past it (as after a crash
        between handling an update and confirming it). An update handed out but not confirmed
        yet is handed out once more, even if the next offset confirms it.
        """
        update = self._history.get(update_id)
        if update is None:
            raise KeyError(f"no update {update_id}")
        for pending in self._pending:
            if pending.update_id == update_id:
                if pending.delivered:
                    pending.redelivered = True
                    pending.delivered = False
                    self._wake_poll()
                return
        entry = _Pending(update_id, copy.deepcopy(update), redelivered=True)
        keys = [pending.update_id for pending in self._pending]
        self._pending.insert(bisect.bisect_left(keys, update_id), entry)
        self._wake_poll()

    # ------------------------------------------------------------------ failures

    def fail_next(
        self,
        method: str,
        *,
        error_code: int,
        description: str,
        retry_after: int | None = None,
        times: int = 1,
        chat_id: int | None = None,
    ) -> None:
        """The next ``times`` calls of ``method`` (to ``chat_id``, if given) get this error.

        For 429 without ``retry_after`` the description's number (or 1) is used.
        """
        if error_code == 429 and retry_after is None:
            numbers = re.findall(r"\d+", description)
            retry_after = int(numbers[-1]) if numbers else 1
        error = ApiError(error_code, description, retry_after=retry_after)
        self._injected.append(_Injected(method.lower(), chat_id, error, times))

    def lose_answer_next(
        self,
        method: str,
        *,
        times: int = 1,
        chat_id: int | None = None,
        disconnect: bool = False,
    ) -> None:
        """The next ``times`` successful calls of ``method`` take effect, but their answer is
        lost: the bot gets a 502 Bad Gateway (nginx's HTML page), or with ``disconnect`` the
        connection closes without an answer. The Call keeps the real answer in
        ``lost_answer``."""
        self._lost.append(_Lost(method.lower(), chat_id, times, disconnect))

    def hold_next(
        self,
        method: str,
        *,
        chat_id: int | None = None,
        where: Callable[[JSON], bool] | None = None,
    ) -> HeldCall:
        """The next call of ``method`` (to ``chat_id``, if given, with parameters ``where``
        accepts) waits, before anything happens, until the test releases it: the bot's
        handler stops right there."""
        held = HeldCall(method.lower(), chat_id, where)
        self._holds.append(held)
        return held

    def refund_then_drop_answer(self, times: int = 1, *, disconnect: bool = False) -> None:
        """The next ``times`` refunds happen (recorded, service message queued) but the bot
        never sees the ``true``: see ``lose_answer_next``."""
        self.lose_answer_next("refundStarPayment", times=times, disconnect=disconnect)

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/file/bot"):
            return self._serve_file(path[len("/file/bot") :])
        if not path.startswith("/bot"):
            return web.json_response(ApiError(404, "Not Found").body(), status=404)
        token, _, method = path[len("/bot") :].partition("/")
        at = time.monotonic()
        if token != self.token:
            return self._answer(method, {}, at, None, ApiError(401, "Unauthorized"))
        handler = self._methods.get(method.lower())
        if handler is None:
            return self._answer(method, {}, at, None, ApiError(404, "Not Found"))
        try:
            params = await self._read_params(request)
        except ApiError as error:
            return self._answer(method, {}, at, None, error)
        chat_id = self._chat_of(params)
        await self._wait_if_held(method, params, chat_id)
        try:
            self._inject(method, chat_id)
            send_to = chat_id if method.lower() in SEND_METHODS else None
            if send_to is not None:
                self._check_flood(send_to, time.monotonic())
            result = await handler(params)
            if send_to is not None:
                self._record_send(send_to, time.monotonic())
        except ApiError as error:
            return self._answer(method, params, at, chat_id, error)
        lost = self._take_lost(method, chat_id)
        if lost is not None:
            return self._lose_answer(request, lost, method, params, at, chat_id, result)
        return self._answer(method, params, at, chat_id, result)

    async def _wait_if_held(self, method: str, params: JSON, chat_id: int | None) -> None:
        wanted = method.lower()
        held = next(
            (
                h
                for h in self._holds
                if h.method == wanted
                and (h.chat_id is None or h.chat_id == chat_id)
                and (h.where is None or h.where(params))
            ),
            None,
        )
        if held is None:
            return
        self._holds.remove(held)
        held.reached.set()
        try:
            await held.released.wait()
        except asyncio.CancelledError:  # the bot went away (handler_cancellation)
            held.abandoned = True
            raise

    def _answer(
        self, method: str, params: JSON, at: float, chat_id: int | None, outcome: Any
    ) -> web.Response:
        if isinstance(outcome, ApiError):
            body, status = outcome.body(), outcome.code
        else:
            body, status = {"ok": True, "result": outcome}, 200
        self._record_call(Call(method, params, at, body, chat_id))
        return web.json_response(body, status=status)

    def _record_call(self, call: Call) -> None:
        self.calls.append(call)
        for event in self._call_waiters:
            event.set()

    def _take_lost(self, method: str, chat_id: int | None) -> _Lost | None:
        wanted = method.lower()
        for rule in self._lost:
            if rule.method == wanted and (rule.chat_id is None or rule.chat_id == chat_id):
                rule.times -= 1
                if rule.times <= 0:
                    self._lost.remove(rule)
                return rule
        return None

    def _lose_answer(
        self,
        request: web.Request,
        lost: _Lost,
        method: str,
        params: JSON,
        at: float,
        chat_id: int | None,
        result: Any,
    ) -> web.Response:
        """The method ran, but the bot does not get its answer."""
        if lost.disconnect:
            seen: JSON = {"ok": False, "description": "connection closed without an answer"}
        else:
            seen = {"ok": False, "error_code": 502, "description": "Bad Gateway"}
        self._record_call(
            Call(method, params, at, seen, chat_id, lost_answer={"ok": True, "result": result})
        )
        transport = request.transport
        if lost.disconnect and transport is not None:
            # Closing first means aiohttp has nowhere to write the response below.
            transport.close()
            return web.Response(status=502)
        return web.Response(status=502, text=_BAD_GATEWAY_HTML, content_type="text/html")

    async def _read_params(self, request: web.Request) -> JSON:
        params: JSON = {name: _decode_value(name, value) for name, value in request.query.items()}
        if request.method not in ("POST", "PUT") or not request.body_exists:
            return _normalise(params)
        content_type = request.content_type
        try:
            if content_type == "application/json":
                body = json.loads(await request.read() or b"{}")
                if not isinstance(body, dict):
                    raise _bad("parameters must be an object")
                params.update(body)
            elif content_type == "multipart/form-data":
                params.update(await self._read_multipart(request))
            else:
                form = await request.post()
                params.update(
                    {
                        name: _decode_value(name, v)
                        for name, v in form.items()
                        if isinstance(v, str)
                    }
                )
        except ValueError as exc:
            raise _bad(f"can't parse request body: {exc}") from exc
        return _normalise(params)

    async def _read_multipart(self, request: web.Request) -> JSON:
        """Form fields and uploads, streamed: files are hashed while read, kept only if small."""
        fields: JSON = {}
        uploads: dict[str, UploadedFile] = {}
        total = 0
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                await part.release()
                continue
            name = part.name or ""
            if part.filename is None:
                fields[name] = _decode_value(name, await part.text())
                continue
            digest = hashlib.sha256()
            size = 0
            chunks: list[bytes] | None = []
            while chunk := await part.read_chunk(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                total += len(chunk)
                if chunks is not None:
                    chunks.append(chunk)
                    if size > self.keep_uploads_up_to:
                        chunks = None
            uploads[name] = UploadedFile(
                filename=part.filename,
                content_type=part.headers.get("Content-Type"),
                size=size,
                sha256=digest.hexdigest(),
                data=b"".join(chunks) if chunks is not None else None,
            )
        if total > MAX_UPLOAD_BYTES:
            raise ApiError(413, "Request Entity Too Large")
        for key, value in list(fields.items()):
            if isinstance(value, str) and value.startswith("attach://"):
                attached = uploads.pop(value[len("attach://") :], None)
                if attached is not None:
                    fields[key] = attached
        fields.update(uploads)
        return fields

    def _serve_file(self, rest: str) -> web.Response:
        token, _, file_path = rest.partition("/")
        if token != self.token:
            return web.json_response(ApiError(401, "Unauthorized").body(), status=401)
        stored = self._paths.get(file_path)
        if stored is None or stored.data is None:
            return web.json_response(ApiError(404, "Not Found").body(), status=404)
        self.downloads.append(file_path)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    def _chat_of(self, params: JSON) -> int | None:
        chat_id = _as_int(params.get("chat_id"))
        if chat_id is not None:
            return chat_id
        query_id = params.get("callback_query_id")
        if query_id is not None:
            query = self._queries.get(str(query_id))
            return query.chat_id if query is not None else None
        checkout_id = params.get("pre_checkout_query_id")
        if checkout_id is not None:
            attempt = self._precheckouts.get(str(checkout_id))
            return attempt.chat_id if attempt is not None else None
        user_id = _as_int(params.get("user_id"))  # refundStarPayment: the private chat
        return user_id if user_id is not None and user_id > 0 else None

    def _inject(self, method: str, chat_id: int | None) -> None:
        wanted = method.lower()
        for rule in self._injected:
            if rule.method == wanted and (rule.chat_id is None or rule.chat_id == chat_id):
                rule.times -= 1
                if rule.times <= 0:
                    self._injected.remove(rule)
                raise rule.error

    def _check_flood(self, chat_id: int, now: float) -> None:
        if not self.flood_limits:
            return
        recent = self._recent_sends
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        if len(recent) >= SENDS_PER_SECOND:
            raise ApiError(429, "Too Many Requests: retry after 1", retry_after=1)
        if chat_id < 0:
            times = self._chat_sends.get(chat_id, [])
            window = times[bisect.bisect_right(times, now - 60.0) :]
            if len(window) >= GROUP_SENDS_PER_MINUTE:
                oldest = window[-GROUP_SENDS_PER_MINUTE]
                wait = max(1, math.ceil(oldest + 60.0 - now))
                raise ApiError(429, f"Too Many Requests: retry after {wait}", retry_after=wait)
        else:
            times = self._chat_sends.get(chat_id, [])
            window = times[bisect.bisect_right(times, now - PRIVATE_BURST) :]
            if len(window) >= PRIVATE_BURST:
                wait = max(1, math.ceil(window[-PRIVATE_BURST] + PRIVATE_BURST - now))
                raise ApiError(429, f"Too Many Requests: retry after {wait}", retry_after=wait)

    def _record_send(self, chat_id: int, now: float) -> None:
        self._chat_sends.setdefault(chat_id, []).append(now)
        self._all_sends.append(now)
        self._recent_sends.append(now)

    def _wake_poll(self) -> None:
        self._webhook_wake.set()
        poll = self._poll
        if poll is None:
            return
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            loop.call_soon_threadsafe(poll.wake.set)
        else:
            poll.wake.set()

    def _timeout_report(
        self, method: str, chat_id: int | None, count: int, timeout: float, seen: int
    ) -> str:
        target = f" to chat {chat_id}" if chat_id is not None else ""
        lines = [
            f"timed out after {timeout:g}s waiting for {count} x {method}{target};"
            f" {seen} matched. Calls seen ({len(self.calls)}, last 40):"
        ]
        start = self.calls[0].at if self.calls else 0.0
        for call in self.calls[-40:]:
            shown = " ".join(
                f"{key}={_short(value)}" for key, value in call.params.items() if key in _REPORTED
            )
            if call.ok:
                outcome = "ok"
            else:
                outcome = f"{call.response.get('error_code')} {call.response.get('description')}"
            described = f"{call.method} {shown}" if shown else call.method
            lines.append(f"  +{call.at - start:7.3f}s {described} -> {outcome}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ world internals

    def _bot_user(self) -> JSON:
        return {"id": BOT_ID, "is_bot": True, "first_name": BOT_NAME, "username": BOT_USERNAME}

    def _ensure_user(self, user_id: int) -> JSON:
        user = self._users.get(user_id)
        if user is None:
            self.user(user_id)
            user = self._users[user_id]
        return user

    def _private_info(self, user_id: int) -> JSON:
        user = self._ensure_user(user_id)
        info: JSON = {"id": user_id, "type": "private", "first_name": user["first_name"]}
        if "username" in user:
            info["username"] = user["username"]
        return info

    def _ensure_chat(self, chat_id: int) -> _Chat:
        """A chat, created on first use: positive ids are private, negative are groups."""
        chat = self._chats.get(chat_id)
        if chat is None:
            if chat_id > 0:
                chat = _Chat(self._private_info(chat_id))
                self._chats[chat_id] = chat
            else:
                supergroup = str(chat_id).startswith("-100")
                self.group(chat_id, f"Group {-chat_id}", supergroup=supergroup)
                chat = self._chats[chat_id]
        return chat

    def _next_message_id(self, chat: _Chat) -> int:
        message_id = chat.next_message_id
        chat.next_message_id += 1
        return message_id

    def _new_file(
        self,
        kind: str,
        size: int,
        head: bytes,
        tail: bytes,
        *,
        mime_type: str | None = None,
        file_name: str | None = None,
    ) -> _StoredFile:
        """A user's file with real bytes (none above 20 MB: only the size is known)."""
        number = next(self._file_counter)
        data = _file_bytes(head, tail, size, number) if size <= MAX_DOWNLOAD_BYTES else None
        sha = hashlib.sha256(data).hexdigest() if data is not None else None
        return self._store(number, kind, size, data, sha, mime_type, file_name)

    def _new_picture(
        self,
        kind: str,
        image_format: str,
        width: int,
        height: int,
        size: int,
        mime_type: str,
        file_name: str | None,
    ) -> _StoredFile:
        """A user's picture: real bytes a decoder reads (none above 20 MB)."""
        if size > MAX_DOWNLOAD_BYTES:
            return self._new_file(kind, size, b"", b"", mime_type=mime_type, file_name=file_name)
        number = next(self._file_counter)
        data = _padded_picture(image_format, width, height, size, number)
        sha = hashlib.sha256(data).hexdigest()
        return self._store(number, kind, len(data), data, sha, mime_type, file_name)

    def _store_bytes(
        self, kind: str, data: bytes, mime_type: str | None, file_name: str | None
    ) -> _StoredFile:
        """A user's file with exactly these bytes."""
        number = next(self._file_counter)
        sha = hashlib.sha256(data).hexdigest()
        return self._store(number, kind, len(data), data, sha, mime_type, file_name)

    def _store(
        self,
        number: int,
        kind: str,
        size: int,
        data: bytes | None,
        sha256: str | None,
        mime_type: str | None,
        file_name: str | None,
    ) -> _StoredFile:
        tag = hashlib.sha1(f"{kind}-{number}".encode()).hexdigest()[:22]
        stored = _StoredFile(
            file_id=f"{_FILE_ID_PREFIX[kind]}{number:06d}{tag}",
            file_unique_id=f"AQAD{number:06d}{tag[:6]}",
            kind=kind,
            size=size,
            data=data,
            mime_type=mime_type,
            file_name=file_name,
            sha256=sha256,
        )
        self._files[stored.file_id] = stored
        return stored

    def _find_invoice(self, user_id: int, invoice: Any, chat_id: int | None) -> _Invoice:
        """The invoice a user pays: by message (dict or telegram.Message) or message_id."""
        message_id: int | None
        if isinstance(invoice, dict):
            message_id = _as_int(invoice.get("message_id"))
            chat = invoice.get("chat")
            if chat_id is None and isinstance(chat, dict):
                chat_id = _as_int(chat.get("id"))
        elif isinstance(invoice, int) and not isinstance(invoice, bool):
            message_id = invoice
        else:
            message_id = _as_int(getattr(invoice, "message_id", None))
            if chat_id is None:
                chat_id = _as_int(getattr(invoice, "chat_id", None))
        if message_id is None:
            raise TypeError(f"not an invoice message or message_id: {invoice!r}")
        if chat_id is None:
            found = [key for key in self._invoices if key[1] == message_id]
            if (user_id, message_id) in found:
                found = [(user_id, message_id)]
            if len(found) != 1:
                raise ValueError(
                    f"invoice message {message_id} is in chats {[c for c, _ in found]}:"
                    " pass chat_id"
                )
            chat_id = found[0][0]
        stored = self._invoices.get((chat_id, message_id))
        if stored is None:
            raise ValueError(f"chat {chat_id} has no invoice with message_id {message_id}")
        if message_id not in self._ensure_chat(chat_id).messages:
            raise ValueError(f"invoice {message_id} in chat {chat_id} was deleted")
        return stored

    def _arm_precheckout_timer(self, attempt: PaymentAttempt) -> None:
        delay = max(0.0, attempt.deadline - time.monotonic())
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = running or self._loop
        if loop is None:
            raise RuntimeError("pay_invoice needs the event loop the fake runs in")

        def arm() -> None:
            if not attempt.done():
                attempt._timer = loop.call_later(delay, self._expire_precheckout, attempt)

        if running is loop:
            arm()
        else:
            loop.call_soon_threadsafe(arm)

    def _expire_precheckout(self, attempt: PaymentAttempt) -> None:
        """No answer in time: the payment fails on the user's side; nothing is charged."""
        attempt._timer = None
        attempt._finish("timed_out", PaymentResult(False, attempt.query_id, timed_out=True))

    def _charge_id(self) -> str:
        while True:
            charge_id = "stx" + "".join(secrets.choice(_CHARGE_ALPHABET) for _ in range(64))
            if charge_id not in self._payments:
                return charge_id

    def _add_caption(self, content: JSON, caption: str | None) -> None:
        if caption is None:
            return
        content["caption"] = caption
        entities = _entities(caption)
        if entities:
            content["caption_entities"] = entities

    def _topic_root(self, chat: _Chat, thread_id: int) -> JSON:
        """The service message that opened a forum topic: what topic messages reply to."""
        return {
            "message_id": thread_id,
            "from": self._bot_user(),
            "chat": copy.deepcopy(chat.info),
            "date": _now() - 3600,
            "message_thread_id": thread_id,
            "is_topic_message": True,
            "forum_topic_created": {"name": f"Topic {thread_id}", "icon_color": 7322096},
        }

    def _place(
        self, chat: _Chat, message: JSON, reply: JSON | None, thread_id: int | None
    ) -> None:
        """Thread and reply fields, as Telegram fills them in."""
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            if chat.info.get("is_forum"):
                message["is_topic_message"] = True
        if reply is not None:
            message["reply_to_message"] = _reply_copy(reply)
        elif thread_id is not None and chat.info.get("is_forum"):
            message["reply_to_message"] = self._topic_root(chat, thread_id)

    def _user_message(
        self,
        chat_id: int,
        user_id: int,
        content: JSON,
        reply_to: int | None,
        thread_id: int | None,
    ) -> dict[str, Any]:
        return self._queue_user_message(chat_id, user_id, content, reply_to, thread_id)[0]

    def _queue_user_message(
        self,
        chat_id: int,
        user_id: int,
        content: JSON,
        reply_to: int | None,
        thread_id: int | None,
    ) -> tuple[JSON, int]:
        """A user's message, stored and queued as an update: (the message, its update_id)."""
        chat = self._ensure_chat(chat_id)
        user = self._ensure_user(user_id)
        reply = None
        if reply_to is not None:
            reply = chat.messages.get(reply_to)
            if reply is None:
                raise ValueError(f"chat {chat_id} has no message {reply_to} to reply to")
        message: JSON = {
            "message_id": self._next_message_id(chat),
            "from": copy.deepcopy(user),
            "chat": copy.deepcopy(chat.info),
            "date": _now(),
        }
        self._place(chat, message, reply, thread_id)
        message.update(copy.deepcopy(content))
        chat.messages[message["message_id"]] = message
        update_id = self.push_update({"message": message})
        return copy.deepcopy(message), update_id

    @staticmethod
    def _video_object(stored: _StoredFile, width: int, height: int, duration: int) -> JSON:
        video: JSON = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "width": width,
            "height": height,
            "duration": duration,
            "mime_type": "video/mp4",
            "file_size": stored.size,
        }
        if stored.file_name:
            video["file_name"] = stored.file_name
        return video

    def _markup(self, params: JSON) -> JSON | None:
        return _inline_markup(params.get("reply_markup"), inline_mode=self.inline_mode)

    # ------------------------------------------------------------------ methods: bot & updates

    async def _true(self, params: JSON) -> bool:
        return True

    async def _get_me(self, params: JSON) -> JSON:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": self.inline_mode,
        }

    async def _delete_webhook(self, params: JSON) -> bool:
        self.webhook_url = ""
        self._webhook_secret = None
        await self._stop_pusher()
        if _as_bool(params.get("drop_pending_updates", False)):
            self._pending.clear()
        return True

    async def _set_webhook(self, params: JSON) -> bool:
        url = str(params.get("url") or "")
        if not url:  # an empty URL removes the webhook, as on Telegram
            return await self._delete_webhook(params)
        if not url.startswith("https://"):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _bad("secret token contains unallowed characters")
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = [str(kind) for kind in allowed] or None
        self.webhook_url = url
        self._webhook_secret = None if secret is None else str(secret)
        self._webhook_error = None
        if _as_bool(params.get("drop_pending_updates", False)):
            self._pending.clear()
        for entry in self._pending:  # handed out by getUpdates, never confirmed: again
            entry.delivered = False
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.create_task(self._push_updates(), name="fake-webhook")
        self._webhook_wake.set()
        return True

    async def _get_webhook_info(self, params: JSON) -> JSON:
        info: JSON = {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
        }
        if self.webhook_url:
            info["max_connections"] = 40
            if self._allowed_updates is not None:
                info["allowed_updates"] = list(self._allowed_updates)
        if self._webhook_error is not None:
            info["last_error_date"], info["last_error_message"] = self._webhook_error
        return info

    # ------------------------------------------------------------------ webhook delivery

    async def _stop_pusher(self) -> None:
        pusher, self._pusher = self._pusher, None
        if pusher is not None and pusher is not asyncio.current_task():
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher

    def _webhook_target(self) -> str:
        if not self.webhook_proxy:
            return self.webhook_url
        rest = self.webhook_url.split("://", 1)[1]
        path = rest[rest.find("/") :] if "/" in rest else "/"
        return self.webhook_proxy.rstrip("/") + path

    async def _push_updates(self) -> None:
        """Telegram's side of a webhook: POST each update in order, with the secret
        header, until the bot answers 2xx; an update not taken is tried again later and
        holds back the ones after it (the fake posts one at a time; Telegram up to
        ``max_connections`` at once)."""
        if self.webhook_connections > 1:
            await self._push_updates_at_once()
            return
        while self.webhook_url and not self._stopping:
            self._webhook_wake.clear()
            allowed = self._allowed_updates
            if allowed is not None:
                self._pending = [
                    e for e in self._pending if any(kind in e.update for kind in allowed)
                ]
            entry = next((e for e in self._pending if not e.delivered), None)
            if entry is None:
                await self._webhook_wake.wait()
                continue
            status = await self._post_update(entry)
            if 200 <= status < 300:
                entry.delivered = True
                with contextlib.suppress(ValueError):
                    self._pending.remove(entry)
                continue
            await asyncio.sleep(self.webhook_retry_seconds)

    async def _push_updates_at_once(self) -> None:
        """``_push_updates`` over ``webhook_connections`` connections: each posts the
        next update nobody is posting, until the bot answers 2xx."""
        posting: dict[int, asyncio.Task[None]] = {}  # update_id -> its post

        async def post(entry: _Pending) -> None:
            try:
                status = await self._post_update(entry)
                if 200 <= status < 300:
                    entry.delivered = True
                    with contextlib.suppress(ValueError):
                        self._pending.remove(entry)
                else:
                    await asyncio.sleep(self.webhook_retry_seconds)
            finally:
                posting.pop(entry.update_id, None)
                self._webhook_wake.set()

        try:
            while self.webhook_url and not self._stopping:
                self._webhook_wake.clear()
                allowed = self._allowed_updates
                if allowed is not None:
                    self._pending = [
                        e for e in self._pending if any(kind in e.update for kind in allowed)
                    ]
                entry = None
                if len(posting) < self.webhook_connections:
                    entry = next(
                        (
                            e
                            for e in self._pending
                            if not e.delivered and e.update_id not in posting
                        ),
                        None,
                    )
                if entry is None:
                    await self._webhook_wake.wait()
                    continue
                posting[entry.update_id] = asyncio.create_task(post(entry))
        finally:
            posts = list(posting.values())
            for task in posts:
                task.cancel()
            await asyncio.gather(*posts, return_exceptions=True)

    async def _post_update(self, entry: _Pending) -> int:
        assert self._http is not None
        headers = {"Content-Type": "application/json"}
        if self._webhook_secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = self._webhook_secret
        query = entry.update.get("pre_checkout_query")
        if isinstance(query, dict):
            attempt = self._precheckouts.get(str(query.get("id")))
            if attempt is not None and attempt.fetched_at is None:
                attempt.fetched_at = time.monotonic()
        try:
            response = await self._http.post(
                self._webhook_target(), content=json.dumps(entry.update), headers=headers
            )
            status = response.status_code
            message = f"Wrong response from the webhook: {status} {response.reason_phrase}"
        except httpx.HTTPError as exc:
            status, message = 0, f"Connection failed: {type(exc).__name__}"
        self.webhook_posts.append((entry.update_id, status))
        if not 200 <= status < 300:
            self._webhook_error = (_now(), message)
        return status

    @staticmethod
    def _menu_key(params: JSON) -> tuple[str, str]:
        scope = params.get("scope")
        kind = scope.get("type") if isinstance(scope, dict) else None
        return str(kind or "default"), _language_code(params)

    async def _set_my_commands(self, params: JSON) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad('parameter "commands" is required')
        if len(commands) > MAX_COMMANDS:
            raise _bad("too many commands")
        for command in commands:
            name = command.get("command") if isinstance(command, dict) else None
            text = command.get("description") if isinstance(command, dict) else None
            if not isinstance(name, str) or not _COMMAND_RE.match(name):
                raise _bad("BOT_COMMAND_INVALID")
            if not isinstance(text, str) or not 1 <= len(text) <= MAX_COMMAND_DESCRIPTION:
                raise _bad("command description must be 1-256 characters long")
        key = self._menu_key(params)
        self.menus[key] = copy.deepcopy(commands)
        if key == ("default", ""):
            self.commands = copy.deepcopy(commands)
        return True

    async def _delete_my_commands(self, params: JSON) -> bool:
        key = self._menu_key(params)
        self.menus.pop(key, None)
        if key == ("default", ""):
            self.commands = []
        return True

    async def _get_my_commands(self, params: JSON) -> list[JSON]:
        return copy.deepcopy(self.menus.get(self._menu_key(params), []))

    async def _set_my_description(self, params: JSON) -> bool:
        text = str(params.get("description") or "")
        if len(text) > MAX_BOT_DESCRIPTION:
            raise _bad("description is too long")
        self.descriptions[_language_code(params)] = text
        return True

    async def _get_my_description(self, params: JSON) -> JSON:
        code = _language_code(params)
        return {"description": self.descriptions.get(code, self.descriptions.get("", ""))}

    async def _set_my_short_description(self, params: JSON) -> bool:
        text = str(params.get("short_description") or "")
        if len(text) > MAX_BOT_SHORT_DESCRIPTION:
            raise _bad("short description is too long")
        self.short_descriptions[_language_code(params)] = text
        return True

    async def _get_my_short_description(self, params: JSON) -> JSON:
        code = _language_code(params)
        short = self.short_descriptions.get(code, self.short_descriptions.get("", ""))
        return {"short_description": short}

    async def _get_updates(self, params: JSON) -> list[JSON]:
        if self.webhook_url:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active;"
                " use deleteWebhook to delete the webhook first",
            )
        poll = _Poll()
        previous, self._poll = self._poll, poll
        if previous is not None:
            # Telegram ends the older request with 409 and serves the newer one.
            previous.superseded = True
            previous.wake.set()
        try:
            offset = _as_int(params.get("offset"))
            if offset is not None:
                self._confirm(offset)
            allowed = params.get("allowed_updates")
            if isinstance(allowed, list):
                self._allowed_updates = [str(kind) for kind in allowed] or None
            limit = _as_int(params.get("limit")) or 100
            limit = min(max(limit, 1), 100)
            timeout = params.get("timeout") or 0
            try:
                timeout = max(0.0, float(timeout))
            except (TypeError, ValueError):
                timeout = 0.0
            deadline = time.monotonic() + timeout
            while True:
                poll.wake.clear()
                if poll.superseded:
                    raise ApiError(
                        409,
                        "Conflict: terminated by other getUpdates request;"
                        " make sure that only one bot instance is running",
                    )
                batch = self._take(limit)
                remaining = deadline - time.monotonic()
                if batch or self._stopping or remaining <= 0:
                    return batch
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(poll.wake.wait(), remaining)
        finally:
            if self._poll is poll:
                self._poll = None

    def _confirm(self, offset: int) -> None:
        """Forget confirmed updates: ids below ``offset`` (negative: keep the last -offset)."""
        if offset < 0:
            self._pending = self._pending[offset:]
            return
        self._pending = [
            entry
            for entry in self._pending
            if entry.update_id >= offset or (entry.redelivered and not entry.delivered)
        ]

    def _take(self, limit: int) -> list[JSON]:
        allowed = self._allowed_updates
        if allowed is not None:
            self._pending = [
                entry for entry in self._pending if any(kind in entry.update for kind in allowed)
            ]
        batch = self._pending[:limit]
        now = time.monotonic()
        for entry in batch:
            entry.delivered = True
            query = entry.update.get("pre_checkout_query")
            if isinstance(query, dict):
                attempt = self._precheckouts.get(str(query.get("id")))
                if attempt is not None and attempt.fetched_at is None:
                    attempt.fetched_at = now
        return [copy.deepcopy(entry.update) for entry in batch]

    # ------------------------------------------------------------------ methods: sending

    def _target(self, params: JSON) -> _Chat:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise _bad("chat_id is empty")
        chat_id = _as_int(raw)
        if chat_id is None or chat_id == 0:
            raise _bad("chat not found")
        return self._ensure_chat(chat_id)

    def _check_blocked(self, chat: _Chat) -> None:
        if not chat.blocked:
            return
        if chat.is_private:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        kind = "supergroup chat" if chat.info["type"] == "supergroup" else "group chat"
        raise ApiError(403, f"Forbidden: bot was kicked from the {kind}")

    def _reply_target(self, chat: _Chat, params: JSON) -> JSON | None:
        """The message replied to; None when there is none or it is gone and that's allowed."""
        reply_parameters = params.get("reply_parameters")
        allow = _as_bool(params.get("allow_sending_without_reply", False))
        message_id = _as_int(params.get("reply_to_message_id"))
        if isinstance(reply_parameters, dict):
            message_id = _as_int(reply_parameters.get("message_id"))
            allow = allow or _as_bool(reply_parameters.get("allow_sending_without_reply", False))
        if message_id is None:
            return None
        message = chat.messages.get(message_id)
        if message is None and not allow:
            raise _bad("message to be replied not found")
        return message

    def _checked_text(self, params: JSON) -> tuple[str, list[JSON] | None]:
        raw = params.get("text")
        text = "" if raw is None else str(raw)
        rendered = _render(text, params.get("parse_mode"))
        if not rendered.strip():
            raise _bad("message text is empty")
        if len(rendered) > MAX_TEXT_LENGTH:
            raise _bad("message is too long")
        entities = params.get("entities")
        return rendered, (copy.deepcopy(entities) if isinstance(entities, list) else None)

    def _checked_caption(self, params: JSON) -> tuple[str | None, list[JSON] | None]:
        raw = params.get("caption")
        if raw is None or raw == "":
            return None, None
        rendered = _render(str(raw), params.get("parse_mode"))
        if len(rendered) > MAX_CAPTION_LENGTH:
            raise _bad("message caption is too long")
        entities = params.get("caption_entities")
        return rendered, (copy.deepcopy(entities) if isinstance(entities, list) else None)

    def _bot_message(self, chat: _Chat, params: JSON, content: JSON) -> JSON:
        """Store and return a message the bot sent (after all checks passed)."""
        reply = self._reply_target(chat, params)
        markup = self._markup(params)
        message: JSON = {
            "message_id": self._next_message_id(chat),
            "from": self._bot_user(),
            "chat": copy.deepcopy(chat.info),
            "date": _now(),
        }
        self._place(chat, message, reply, _as_int(params.get("message_thread_id")))
        message.update(content)
        if markup is not None:
            message["reply_markup"] = markup
        chat.messages[message["message_id"]] = message
        chat.bot_message_ids.append(message["message_id"])
        return copy.deepcopy(message)

    async def _send_message(self, params: JSON) -> JSON:
        chat = self._target(params)
        self._check_blocked(chat)
        text, entities = self._checked_text(params)
        self._reply_target(chat, params)
        self._markup(params)
        content: JSON = {"text": text}
        if entities:
            content["entities"] = entities
        return self._bot_message(chat, params, content)

    async def _send_media(self, params: JSON, kind: str) -> JSON:
        chat = self._target(params)
        self._check_blocked(chat)
        caption, caption_entities = self._checked_caption(params)
        self._reply_target(chat, params)
        self._markup(params)
        stored = await self._media(params, kind)
        content: JSON = {}
        if kind == "video":
            width = _as_int(params.get("width")) or 720
            height = _as_int(params.get("height")) or 1280
            duration = _as_int(params.get("duration")) or 5
            content["video"] = self._video_object(stored, width, height, duration)
        elif kind == "photo":
            content["photo"] = [
                {
                    "file_id": stored.file_id,
                    "file_unique_id": stored.file_unique_id,
                    "width": 1280,
                    "height": 1280,
                    "file_size": stored.size,
                }
            ]
        else:
            document: JSON = {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_size": stored.size,
            }
            if stored.file_name:
                document["file_name"] = stored.file_name
            if stored.mime_type:
                document["mime_type"] = stored.mime_type
            content["document"] = document
        if caption is not None:
            content["caption"] = caption
            if caption_entities:
                content["caption_entities"] = caption_entities
        return self._bot_message(chat, params, content)

    async def _media(self, params: JSON, kind: str) -> _StoredFile:
        """The file a send names: an upload, a known file_id or an http(s) URL."""
        value = params.get(kind)
        if value is None or value == "":
            raise _bad(f"there is no {kind} in the request")
        if isinstance(value, UploadedFile):
            if value.size == 0:
                raise _bad("file must be non-empty")
            mime = "video/mp4" if kind == "video" else value.content_type
            if kind == "photo":
                mime = "image/jpeg"
            return self._store(
                next(self._file_counter),
                kind,
                value.size,
                value.data,
                value.sha256,
                mime,
                value.filename,
            )
        if not isinstance(value, str):
            raise _bad("wrong file identifier/HTTP URL specified")
        if value.startswith(("http://", "https://")):
            return await self._fetch(value, kind)
        stored = self._files.get(value)
        if stored is None:
            raise _bad("wrong file identifier/HTTP URL specified")
        if kind == "document":
            usable = stored.kind in ("document", "video")
        elif kind == "video":
            usable = stored.kind == "video" or (
                stored.kind == "document" and (stored.mime_type or "").startswith("video/")
            )
        else:
            usable = stored.kind == kind
        if not usable:
            raise _bad(f"can't use file of type {stored.kind.title()} as {kind.title()}")
        return stored

    async def _fetch(self, url: str, kind: str) -> _StoredFile:
        """Fetch media sent by URL, as Telegram does: up to 20 MB, redirects followed."""
        self.fetched_urls.append(url)
        failed = _bad("failed to get HTTP URL content")
        if self._http is None:
            raise failed
        digest = hashlib.sha256()
        size = 0
        chunks: list[bytes] | None = []
        content_type: str | None = None
        try:
            async with self._http.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise failed
                declared = _as_int(response.headers.get("content-length"))
                if declared is not None and declared > MAX_DOWNLOAD_BYTES:
                    raise failed
                content_type = response.headers.get("content-type")
                async for chunk in response.aiter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise failed
                    digest.update(chunk)
                    if chunks is not None:
                        chunks.append(chunk)
                        if size > self.keep_uploads_up_to:
                            chunks = None
        except httpx.HTTPError as exc:
            raise failed from exc
        if size == 0:
            raise failed
        file_name = url.rsplit("/", 1)[-1].split("?", 1)[0] or None
        mime = {"video": "video/mp4", "photo": "image/jpeg"}.get(kind)
        if mime is None and content_type:
            mime = content_type.split(";", 1)[0].strip()
        data = b"".join(chunks) if chunks is not None else None
        number = next(self._file_counter)
        return self._store(number, kind, size, data, digest.hexdigest(), mime, file_name)

    async def _send_photo(self, params: JSON) -> JSON:
        return await self._send_media(params, "photo")

    async def _send_video(self, params: JSON) -> JSON:
        return await self._send_media(params, "video")

    async def _send_document(self, params: JSON) -> JSON:
        return await self._send_media(params, "document")

    async def _send_chat_action(self, params: JSON) -> bool:
        chat = self._target(params)
        self._check_blocked(chat)
        if params.get("action") not in _CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        return True

    # ------------------------------------------------------------------ methods: editing

    def _editable(self, params: JSON) -> tuple[_Chat, JSON]:
        if params.get("inline_message_id"):
            raise _bad("message to edit not found")
        chat = self._target(params)
        self._check_blocked(chat)
        message_id = _as_int(params.get("message_id"))
        message = chat.messages.get(message_id) if message_id is not None else None
        if message is None:
            raise _bad("message to edit not found")
        if message["from"]["id"] != BOT_ID:
            raise _bad("message can't be edited")
        return chat, message

    def _commit_edit(self, chat: _Chat, old: JSON, new: JSON, params: JSON) -> JSON:
        markup = self._markup(params)
        if markup is None:
            new.pop("reply_markup", None)
        else:
            new["reply_markup"] = markup
        if _content(new) == _content(old):
            raise _bad(
                "message is not modified: specified new message content and reply markup are"
                " exactly the same as a current content and reply markup of the message"
            )
        new["edit_date"] = _now()
        chat.messages[new["message_id"]] = new
        return copy.deepcopy(new)

    async def _edit_message_text(self, params: JSON) -> JSON:
        chat, message = self._editable(params)
        if "text" not in message:
            raise _bad("there is no text in the message to edit")
        text, entities = self._checked_text(params)
        new = copy.deepcopy(message)
        new["text"] = text
        new.pop("entities", None)
        if entities:
            new["entities"] = entities
        return self._commit_edit(chat, message, new, params)

    async def _edit_message_caption(self, params: JSON) -> JSON:
        chat, message = self._editable(params)
        if not any(key in message for key in ("photo", "video", "document")):
            raise _bad("there is no caption in the message to edit")
        caption, entities = self._checked_caption(params)
        new = copy.deepcopy(message)
        new.pop("caption", None)
        new.pop("caption_entities", None)
        if caption is not None:
            new["caption"] = caption
            if entities:
                new["caption_entities"] = entities
        return self._commit_edit(chat, message, new, params)

    async def _edit_message_reply_markup(self, params: JSON) -> JSON:
        chat, message = self._editable(params)
        return self._commit_edit(chat, message, copy.deepcopy(message), params)

    async def _delete_message(self, params: JSON) -> bool:
        chat = self._target(params)
        message_id = _as_int(params.get("message_id"))
        if message_id is None or message_id not in chat.messages:
            raise _bad("message to delete not found")
        self.delete_message(chat.id, message_id)
        return True

    async def _set_message_reaction(self, params: JSON) -> bool:
        """The bot's reaction on a message: at most one emoji (bots are not Premium), one
        of Telegram's reaction emoji and allowed in the chat; errors as the Bot API's."""
        chat = self._target(params)
        self._check_blocked(chat)
        message_id = _as_int(params.get("message_id"))
        if message_id is None or message_id not in chat.messages:
            raise _bad("message to react not found")
        reaction = params.get("reaction", [])
        if isinstance(reaction, str):
            try:
                reaction = json.loads(reaction) if reaction else []
            except ValueError as exc:
                raise _bad("can't parse reaction types JSON object") from exc
        if not isinstance(reaction, list):
            raise _bad('field "reaction" must be an Array')
        emoji: list[str] = []
        for item in reaction:
            if not isinstance(item, dict) or item.get("type") not in ("emoji", "custom_emoji"):
                raise _bad("reaction type must be one of emoji, custom_emoji or paid")
            if item["type"] == "custom_emoji" or item.get("emoji") not in REACTION_EMOJI:
                raise _bad("REACTION_INVALID")
            emoji.append(str(item["emoji"]))
        if len(emoji) > 1:
            raise _bad("REACTIONS_TOO_MANY")
        allowed = chat.available_reactions
        if allowed is not None and any(e not in allowed for e in emoji):
            raise _bad("REACTION_INVALID")
        chat.reactions[message_id] = emoji
        return True

    # ------------------------------------------------------------------ methods: queries & files

    async def _answer_callback_query(self, params: JSON) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        query = self._queries.get(query_id)
        if query is None or query.answered:
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        text = params.get("text")
        if isinstance(text, str) and len(text) > MAX_ANSWER_LENGTH:
            raise _bad("MESSAGE_TOO_LONG")
        query.answered = True
        self.callback_answers[query_id] = dict(params)
        return True

    async def _answer_inline_query(self, params: JSON) -> bool:
        query_id = str(params.get("inline_query_id") or "")
        query = self._inline_queries.get(query_id)
        if query is None or query.answered:
            raise _bad(_QUERY_TOO_OLD)
        results = params.get("results")
        if not isinstance(results, list):
            raise _bad("can't parse inline query results JSON object")
        if len(results) > MAX_INLINE_RESULTS:
            raise _bad("RESULTS_TOO_MUCH")
        seen: set[str] = set()
        for result in results:
            if not isinstance(result, dict) or not isinstance(result.get("type"), str):
                raise _bad("can't parse inline query result")
            result_id = result.get("id")
            if (
                not isinstance(result_id, str)
                or not 1 <= len(result_id.encode()) <= MAX_INLINE_RESULT_ID_BYTES
            ):
                raise _bad("RESULT_ID_INVALID")
            if result_id in seen:
                raise _bad("RESULT_ID_DUPLICATE")
            seen.add(result_id)
            if result["type"] == "video" and "video_file_id" in result:
                stored = self._files.get(str(result["video_file_id"]))
                if stored is None or stored.kind != "video":
                    raise _bad("wrong file identifier/HTTP URL specified")
                if not result.get("title"):
                    raise _bad("RESULT_TITLE_EMPTY")
        next_offset = params.get("next_offset")
        if next_offset is not None and len(str(next_offset).encode()) > MAX_NEXT_OFFSET_BYTES:
            raise _bad("NEXT_OFFSET_INVALID")
        button = params.get("button")
        if button is not None:
            if not isinstance(button, dict) or not button.get("text"):
                raise _bad("can't parse inline query results button")
            start = button.get("start_parameter")
            if start is not None and not _START_PARAMETER.match(str(start)):
                raise _bad("START_PARAM_INVALID")
        query.answered = True
        self.inline_answers[query_id] = dict(params)
        return True

    async def _get_file(self, params: JSON) -> JSON:
        file_id = params.get("file_id")
        stored = self._files.get(str(file_id)) if file_id else None
        if stored is None:
            raise _bad("invalid file_id")
        if stored.size > MAX_DOWNLOAD_BYTES:
            raise _bad("file is too big")
        if stored.path is None:
            extension = _EXTENSIONS.get(stored.mime_type or "", "")
            if stored.kind == "photo":
                extension = ".jpg"
            elif stored.file_name and "." in stored.file_name:
                extension = "." + stored.file_name.rsplit(".", 1)[1].lower()
            stored.path = f"{_FILE_DIRS[stored.kind]}/file_{next(self._path_counter)}{extension}"
            self._paths[stored.path] = stored
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "file_path": stored.path,
        }

    # ------------------------------------------------------------------ methods: Stars payments

    async def _send_invoice(self, params: JSON) -> JSON:
        # What the Bot API server and TDLib check before anything reaches Telegram...
        title = _required(params, "title")
        description = _required(params, "description")
        payload = _required(params, "payload")
        currency = _required(params, "currency")
        prices = _checked_prices(params)
        max_tip = _as_int(params.get("max_tip_amount")) or 0
        if max_tip < 0:
            raise _bad("invalid max_tip_amount of the currency specified")
        total = sum(amount for _, amount in prices)
        if total <= 0:
            raise _bad("total price must be positive")
        chat = self._target(params)
        # ... then what Telegram itself refuses.
        if currency != STARS or params.get("provider_token") not in (None, ""):
            raise _bad("PAYMENT_PROVIDER_INVALID")
        if len(prices) != 1 or max_tip or params.get("suggested_tip_amounts"):
            raise _bad("STARS_INVOICE_INVALID")
        if total > MAX_STARS_PER_INVOICE:
            raise _bad("CURRENCY_TOTAL_AMOUNT_INVALID")
        if len(payload.encode()) > MAX_INVOICE_PAYLOAD_BYTES:
            raise _bad("INVOICE_PAYLOAD_INVALID")
        if len(title) > MAX_INVOICE_TITLE:
            raise _bad(f"invoice title must be at most {MAX_INVOICE_TITLE} characters long")
        if len(description) > MAX_INVOICE_DESCRIPTION:
            raise _bad(
                f"invoice description must be at most {MAX_INVOICE_DESCRIPTION} characters long"
            )
        self._check_blocked(chat)
        self._reply_target(chat, params)
        markup = self._markup(params)
        if markup is not None:
            buttons = [button for row in markup["inline_keyboard"] for button in row]
            if not buttons or buttons[0].get("pay") is not True:
                raise _bad("REPLY_MARKUP_BUY_EMPTY")
        invoice: JSON = {
            "title": title,
            "description": description,
            "start_parameter": str(params.get("start_parameter") or ""),
            "currency": currency,
            "total_amount": total,
        }
        message = self._bot_message(chat, params, {"invoice": invoice})
        message_id = int(message["message_id"])
        self._invoices[(chat.id, message_id)] = _Invoice(
            chat_id=chat.id,
            message_id=message_id,
            thread_id=_as_int(message.get("message_thread_id")),
            title=title,
            description=description,
            payload=payload,
            currency=currency,
            amount=total,
        )
        return message

    async def _answer_pre_checkout_query(self, params: JSON) -> bool:
        ok = _as_bool(params.get("ok", False))
        error_message = None if ok else _required(params, "error_message")
        query_id = str(params.get("pre_checkout_query_id") or "")
        attempt = self._precheckouts.get(query_id)
        if attempt is None:
            raise _bad(_QUERY_TOO_OLD)
        now = time.monotonic()
        if not attempt.done() and now >= attempt.deadline:
            self._expire_precheckout(attempt)
        accepted = not attempt.done()
        self._precheckout_answers.append(
            PrecheckoutAnswer(
                query_id=query_id,
                ok=ok,
                error_message=error_message,
                accepted=accepted,
                since_query=now - attempt.created_at,
                since_fetch=None if attempt.fetched_at is None else now - attempt.fetched_at,
            )
        )
        if not accepted:
            raise _bad(_QUERY_TOO_OLD)
        if ok:
            self._complete_payment(attempt)
        else:
            attempt._finish(
                "declined", PaymentResult(False, query_id, error_message=error_message)
            )
        return True

    def _complete_payment(self, attempt: PaymentAttempt) -> None:
        """The bot said yes: Telegram takes the Stars and tells the bot in a message."""
        invoice = self._invoices[(attempt.chat_id, attempt.invoice_message_id)]
        charge_id = self._charge_id()
        counter = self._provider_counters.setdefault(attempt.user_id, itertools.count(1))
        provider_charge_id = f"{attempt.user_id}_{next(counter)}"
        successful: JSON = {
            "currency": invoice.currency,
            "total_amount": attempt.amount,
            "invoice_payload": attempt.payload,
            "telegram_payment_charge_id": charge_id,
            "provider_payment_charge_id": provider_charge_id,
        }
        message, update_id = self._queue_user_message(
            attempt.chat_id,
            attempt.user_id,
            {"successful_payment": successful},
            None,
            invoice.thread_id,
        )
        payment = StarPayment(
            charge_id=charge_id,
            provider_charge_id=provider_charge_id,
            user_id=attempt.user_id,
            chat_id=attempt.chat_id,
            invoice_message_id=attempt.invoice_message_id,
            amount=attempt.amount,
            payload=attempt.payload,
            query_id=attempt.query_id,
            date=int(message["date"]),
            message_id=int(message["message_id"]),
            update_id=update_id,
            currency=invoice.currency,
        )
        self._payments[charge_id] = payment
        self._transactions.append(
            _StarTransaction(
                charge_id, payment.amount, payment.date, payment.user_id, payment.payload, True
            )
        )
        attempt._finish(
            "paid", PaymentResult(True, attempt.query_id, charge_id=charge_id, payment=payment)
        )

    async def _refund_star_payment(self, params: JSON) -> bool:
        user_id = _as_int(params.get("user_id"))
        if user_id is None or user_id <= 0:
            raise _bad("invalid user_id specified")
        charge_id = _required(params, "telegram_payment_charge_id")
        payment = self._payments.get(charge_id)
        if payment is None or payment.user_id != user_id:
            raise _bad("CHARGE_NOT_FOUND")
        if payment.refunded:
            raise _bad("CHARGE_ALREADY_REFUNDED")
        payment.refunded = True
        date = _now()
        self._transactions.append(
            _StarTransaction(charge_id, payment.amount, date, user_id, payment.payload, False)
        )
        # The service message is the bot's own (outgoing), yet the Bot API delivers it.
        chat = self._ensure_chat(user_id)
        refunded: JSON = {
            "currency": payment.currency,
            "total_amount": payment.amount,
            "invoice_payload": payment.payload,
            "telegram_payment_charge_id": charge_id,
            "provider_payment_charge_id": payment.provider_charge_id,
        }
        message: JSON = {
            "message_id": self._next_message_id(chat),
            "from": self._bot_user(),
            "chat": copy.deepcopy(chat.info),
            "date": date,
            "refunded_payment": refunded,
        }
        chat.messages[message["message_id"]] = message
        update_id = self.push_update({"message": message})
        self._refunds.append(
            StarRefund(
                charge_id=charge_id,
                user_id=user_id,
                amount=payment.amount,
                payload=payment.payload,
                date=date,
                message_id=int(message["message_id"]),
                update_id=update_id,
                currency=payment.currency,
            )
        )
        return True

    async def _get_star_transactions(self, params: JSON) -> JSON:
        # As the Bot API server reads them: offset >= 0, limit clamped to 1..100 (default 100).
        offset = max(_as_int(params.get("offset")) or 0, 0)
        limit = _as_int(params.get("limit"))
        limit = 100 if limit is None else min(max(limit, 1), 100)
        newest_first = self._transactions[::-1][offset : offset + limit]
        return {"transactions": [self._transaction_json(t) for t in newest_first]}

    def _transaction_json(self, transaction: _StarTransaction) -> JSON:
        partner: JSON = {
            "transaction_type": "invoice_payment",
            "type": "user",
            "user": copy.deepcopy(self._ensure_user(transaction.user_id)),
        }
        if transaction.payload:
            partner["invoice_payload"] = transaction.payload
        side = "source" if transaction.incoming else "receiver"
        return {
            "id": transaction.charge_id,
            "date": transaction.date,
            side: partner,
            "amount": transaction.amount,
        }


def _checked_prices(params: JSON) -> list[tuple[str, int]]:
    """``prices`` parsed as the Bot API server does (errors worded as it words them)."""
    raw = params.get("prices")
    if raw is None or raw == "":
        raise _bad('parameter "prices" is required')
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise _bad("can't parse prices JSON object") from exc
    if not isinstance(raw, list):
        raise _bad("expected an Array of labeled prices")
    prices: list[tuple[str, int]] = []
    for item in raw:
        problem = None
        if not isinstance(item, dict):
            problem = "LabeledPrice must be an Object"
        elif "label" not in item:
            problem = 'Can\'t find field "label"'
        elif item["label"] in ("", None):
            problem = "LabeledPrice label must be non-empty"
        elif "amount" not in item:
            problem = 'Can\'t find field "amount"'
        elif _as_int(item["amount"]) is None:
            problem = 'Field "amount" must be a Number'
        if problem is not None or not isinstance(item, dict):
            raise _bad(f"can't parse labeled price: {problem}")
        amount = _as_int(item["amount"])
        assert amount is not None
        prices.append((str(item["label"]), amount))
    if not prices:
        raise _bad("there must be at least one price")
    return prices


def _language_code(params: JSON) -> str:
    """A menu's or description's language: two lowercase letters, or "" for all others."""
    code = params.get("language_code")
    if code in (None, ""):
        return ""
    if not isinstance(code, str) or not _LANGUAGE_CODE_RE.match(code):
        raise _bad("LANGUAGE_CODE_INVALID")
    return code


def _required(params: JSON, name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise _bad(f'parameter "{name}" is required')
    return str(value)


def iter_updates(calls: Iterable[Call]) -> list[JSON]:
    """Every update the fake handed out in these getUpdates calls, in order."""
    updates: list[JSON] = []
    for call in calls:
        if call.method.lower() == "getupdates" and call.ok and isinstance(call.result, list):
            updates.extend(call.result)
    return updates
