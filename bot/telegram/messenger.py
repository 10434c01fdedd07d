"""The tracker's :class:`~bot.core.ports.Messenger`, on python-telegram-bot.

Every text is in the job's language (its asker's, stored with it); operator alerts and a
refund without a job are in ``language`` (``DEFAULT_LANGUAGE``).

Telegram's answers become the things the tracker acts on: ``ChatUnreachable`` (403:
never retried), ``SendFailed`` (a flood wait too long for the rate limiter to wait out,
network), ``PhotoUnavailable``, ``VideoRefused``. Short flood waits never reach here:
:mod:`bot.telegram.pacing` waits them out for every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from telegram import (
    File,
    InlineKeyboardMarkup,
    InputFile,
    Message,
    ReplyParameters,
    TransactionPartnerUser,
)
from telegram.constants import ChatAction
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import ExtBot

from ..core.alerts import AlertKind
from ..core.errors import (
    AlreadyRefunded,
    ChatUnreachable,
    PhotoUnavailable,
    PhotoUnusable,
    RefundRefused,
    SendFailed,
    VideoRefused,
)
from ..core.jobs import Job, offers_retry
from ..core.payments import Payment
from ..core.ports import BeforeSend, PhotoFile, StarCharge
from ..core.progress import Progress, Status
from ..i18n import texts
from ..images import ImageRefused
from ..mp4 import VideoInfo, read_video_info
from .keyboards import after_video_keyboard, retry_keyboard
from .pacing import ChatPacer, Priority, checked_before_sending, retry_after_seconds
from .photos import Photos

__all__ = ["TelegramMessenger", "is_reply_missing", "is_chat_gone"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Telegram's upload limit for bots through the public Bot API.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
#: A status edit waits this long for its turn at most: it waits behind keyboards and
#: videos, and the job's next poll waits for it.
STATUS_EDIT_PATIENCE = 5.0
#: The status message's summary, once the video is there, waits longer: it goes once,
#: holds up nothing (the job is recorded delivered) and would otherwise leave a stale
#: "making your video" above the video.
SUMMARY_PATIENCE = 30.0
_UPLOAD_WRITE_TIMEOUT = 300.0
#: getStarTransactions pages (Telegram's maximum) and how many are read at most.
_PAGE = 100
_MAX_TRANSACTIONS = 10_000


def is_reply_missing(error: BadRequest) -> bool:
    text = error.message.lower()
    return "repl" in text and "not found" in text


def is_chat_gone(error: TelegramError) -> bool:
    if isinstance(error, Forbidden):
        return True
    text = str(error).lower()
    return isinstance(error, BadRequest) and (
        "chat not found" in text or "have no rights to send" in text or "not enough rights" in text
    )


def _is_not_modified(error: BadRequest) -> bool:
    return "not modified" in error.message.lower()


def _video_shape(job: Job, path: Path) -> VideoInfo | None:
    """The video's size and length for sendVideo, from the MP4's header; None when it
    cannot be read (the video goes all the same, without them)."""
    info = read_video_info(path)
    if info is None:
        log.info("job %s: video header unreadable, sent without its size", job.short_id)
        return None
    log.info(
        "job %s: video %dx%d, %d s, %s",
        job.short_id,
        info.width,
        info.height,
        info.duration,
        "with sound" if info.has_audio else "no sound track",
    )
    return info


class TelegramMessenger:
    max_upload_bytes = MAX_UPLOAD_BYTES

    def __init__(
        self,
        bot: ExtBot[Priority],
        admin_ids: frozenset[int],
        pacer: ChatPacer | None = None,
        *,
        photos: Photos | None = None,
        on_unauthorized: Callable[[], None] | None = None,
        language: str = texts.FALLBACK_LANGUAGE,
    ) -> None:
        self._bot = bot
        self._photos = photos
        self._admin_ids = admin_ids
        #: The operators' language, and the one of a message not about a job.
        self._language = language
        self._pacer = pacer or ChatPacer()
        #: Told when a call is refused as unauthorised: the token may have been revoked.
        self._on_unauthorized = on_unauthorized
        #: Last text shown per job: edit only when it changes (flood limits).
        self._shown: dict[int, str] = {}

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        """One Bot API call, its failures turned into the errors the tracker acts on."""
        try:
            return await make()
        except RetryAfter as exc:
            # The rate limiter waited out what was short; this one is long.
            raise SendFailed("flood control", retry_after=retry_after_seconds(exc)) from exc
        except BadRequest as exc:
            if is_chat_gone(exc):
                raise ChatUnreachable(exc.message) from exc
            raise
        except Forbidden as exc:
            raise ChatUnreachable(exc.message) from exc
        except InvalidToken as exc:
            # Revoked token? The token watch checks and stops the bot; the job waits.
            if self._on_unauthorized is not None:
                self._on_unauthorized()
            raise SendFailed("unauthorized") from exc
        except NetworkError as exc:  # TimedOut included
            raise SendFailed(f"network: {type(exc).__name__}") from exc

    async def _reply(
        self, job: Job, send: Callable[[ReplyParameters | None], Awaitable[Message]]
    ) -> Message:
        """Send replying to the job's photo; without the reply if the photo was deleted.
        The rate limiter keeps it to the chat's pace (deliveries go first there)."""
        reply = ReplyParameters(message_id=job.photo_message_id, allow_sending_without_reply=True)
        try:
            return await self._call(lambda: send(reply))
        except BadRequest as exc:
            if not is_reply_missing(exc):
                raise
            return await self._call(lambda: send(None))

    # -- photo -----------------------------------------------------------------------

    async def _get_file(self, job: Job) -> File:
        try:
            telegram_file = await self._call(lambda: self._bot.get_file(job.file_id))
        except BadRequest as exc:
            too_big = "too big" in exc.message.lower()
            raise PhotoUnavailable(exc.message, too_big=too_big) from exc
        if not telegram_file.file_path:
            raise PhotoUnavailable("no file path")
        return telegram_file

    async def fetch_photo(self, job: Job) -> PhotoFile:
        """Prepared once per photo (:mod:`bot.telegram.photos`): retries read it back."""
        if self._photos is None:  # a messenger built for alerts or refunds only
            raise PhotoUnavailable("no photo store")
        try:
            image = await self._photos.prepared(job.file_id, job.file_unique_id)
        except ImageRefused as exc:
            raise PhotoUnusable(str(exc)) from exc
        return PhotoFile(image.data, image.mime_type)

    async def photo_link(self, job: Job) -> str:
        return str((await self._get_file(job)).file_path)

    # -- status message --------------------------------------------------------------

    async def show_progress(self, job: Job, status: Status) -> bool:
        """Edit the status message (the one that showed the keyboard) to ``status``.

        Only when its text changes, and only in the chat's free slot: a status edit never
        waits for one, except the final summary, which waits for the slot the video just
        took (at most ``SUMMARY_PATIENCE``). A message that is gone, or already says this,
        is fine as it is.
        """
        message_id = job.keyboard_message_id
        if message_id is None:
            return True
        text = texts.progress(job.language, status, job.options)
        final = status.progress is Progress.DONE
        if self._shown.get(job.id) == text:
            return True
        patience = SUMMARY_PATIENCE if final else STATUS_EDIT_PATIENCE
        if final:
            self._shown.pop(job.id, None)
            if not await self._pacer.patient(job.chat_id, patience):
                return False
        elif not self._pacer.optional(job.chat_id):
            return False
        try:
            async with asyncio.timeout(patience):
                await self._call(
                    lambda: self._bot.edit_message_text(
                        text,
                        chat_id=job.chat_id,
                        message_id=message_id,
                        rate_limit_args=Priority.LOW,
                    )
                )
        except TimeoutError:
            return False  # the budget went to videos and keyboards; the next step retries
        except BadRequest as exc:
            # "message is not modified" (a restart forgot what it showed) or "message to
            # edit not found" (the user deleted it): either way nothing is left to do.
            if not _is_not_modified(exc):
                log.info("job %s: status edit refused: %s", job.short_id, exc.message)
        if not final:
            self._shown[job.id] = text
        return True

    async def _delete(self, chat_id: int, message_id: int) -> None:
        with contextlib.suppress(TelegramError, SendFailed, ChatUnreachable):
            await self._call(
                lambda: self._bot.delete_message(chat_id, message_id, rate_limit_args=Priority.LOW)
            )

    # -- outcomes --------------------------------------------------------------------

    async def send_video(self, job: Job, path: Path, *, before_send: BeforeSend = None) -> str:
        # "sending video…" while it uploads; a 403 here ends the job before the upload.
        # Cosmetic, so skipped unless the rate limiter would let it (LOW) go at once:
        # waiting for a slot behind every other video, or while keyboards and videos keep
        # the places LOW leaves free busy, would hold this one up (benchmark, N = 1000).
        if self._pacer.idle():
            await self._chat_action(job)
        # Its size and length let clients lay it out before it downloads.
        shape = _video_shape(job, path)
        with path.open("rb") as handle:

            async def send(reply: ReplyParameters | None) -> Message:
                handle.seek(0)  # a retry re-reads the file from the start
                return await self._bot.send_video(
                    job.chat_id,
                    # read_file_handle=False streams the file instead of reading it whole.
                    InputFile(handle, filename="warmth-of-jesus.mp4", read_file_handle=False),
                    caption=texts.video_caption(job.language),
                    supports_streaming=True,
                    width=shape.width if shape else None,
                    height=shape.height if shape else None,
                    duration=shape.duration if shape and shape.duration else None,
                    reply_markup=after_video_keyboard(
                        job.language, job.id, share=self.can_share()
                    ),
                    reply_parameters=reply,
                    message_thread_id=job.thread_id,
                    write_timeout=_UPLOAD_WRITE_TIMEOUT,
                    read_timeout=60.0,
                    rate_limit_args=Priority.DELIVERY,
                )

            try:
                with checked_before_sending(before_send):
                    message = await self._reply(job, send)
            except BadRequest as exc:
                raise VideoRefused(exc.message) from exc
        if message.video is not None:
            return message.video.file_id
        return message.document.file_id if message.document else ""

    async def _send_text(
        self, job: Job, text: str, markup: InlineKeyboardMarkup | None = None
    ) -> None:
        """A job's outcome, replying to its photo, in its topic: it goes before keyboards."""
        await self._reply(
            job,
            lambda reply: self._bot.send_message(
                job.chat_id,
                text,
                reply_parameters=reply,
                message_thread_id=job.thread_id,
                reply_markup=markup,
                rate_limit_args=Priority.DELIVERY,
            ),
        )

    async def _chat_action(self, job: Job) -> None:
        with contextlib.suppress(TelegramError, SendFailed):
            await self._call(
                lambda: self._bot.send_chat_action(
                    job.chat_id,
                    ChatAction.UPLOAD_VIDEO,
                    message_thread_id=job.thread_id,
                    rate_limit_args=Priority.LOW,
                )
            )

    async def send_video_link(
        self, job: Job, url: str, expires_at: float, *, before_send: BeforeSend = None
    ) -> None:
        # No Share: inline results need a Telegram file id, and a link has none.
        markup = after_video_keyboard(job.language, job.id, share=False)
        with checked_before_sending(before_send):
            await self._send_text(job, texts.video_link(job.language, url, expires_at), markup)

    def can_share(self) -> bool:
        """Whether the bot has inline mode (BotFather /setinline), as getMe said at start:
        without it a Share button would open nothing."""
        try:
            return bool(self._bot.supports_inline_queries)
        except RuntimeError:  # getMe not called yet (the bot is not initialised)
            return False

    async def send_outcome(self, job: Job) -> None:
        markup = retry_keyboard(job.language, job.id) if offers_retry(job) else None
        await self._send_text(job, texts.outcome(job.language, job), markup)
        self._shown.pop(job.id, None)
        if job.keyboard_message_id is not None:
            await self._delete(job.chat_id, job.keyboard_message_id)

    async def refund_stars(self, user_id: int, charge_id: str) -> None:
        try:
            await self._call(lambda: self._bot.refund_star_payment(user_id, charge_id))
        except BadRequest as exc:
            if "CHARGE_ALREADY_REFUNDED" in exc.message.upper():
                raise AlreadyRefunded(exc.message) from exc
            raise RefundRefused(exc.message) from exc
        except ChatUnreachable as exc:
            # A refund needs no chat; Telegram refusing it is for the operators.
            raise RefundRefused(str(exc)) from exc

    async def tell_refund(self, payment: Payment, job: Job | None) -> None:
        """In the job's chat and topic, replying to its photo; else the payer's chat."""
        text = texts.refunded(job.language if job is not None else self._language, payment)
        try:
            if job is not None:
                await self._send_text(job, text)
                return
            await self._call(
                lambda: self._bot.send_message(
                    payment.user_id, text, rate_limit_args=Priority.DELIVERY
                )
            )
        except BadRequest as exc:
            # The Stars are back whatever this message does; a refused one is not retried.
            log.warning("refund %s: notice refused: %s", payment.charge_id, exc.message)

    async def star_payments(self, since: float) -> list[StarCharge]:
        """Incoming Stars payments since ``since``, page by page (newest first)."""
        found: list[StarCharge] = []
        offset = 0
        while offset < _MAX_TRANSACTIONS:
            page = await self._call(
                partial(self._bot.get_star_transactions, offset=offset, limit=_PAGE)
            )
            for transaction in page.transactions:
                date = transaction.date.timestamp()
                source = transaction.source
                if date < since:
                    return found
                if isinstance(source, TransactionPartnerUser) and source.invoice_payload:
                    found.append(
                        StarCharge(transaction.id, source.user.id, transaction.amount, date)
                    )
            if len(page.transactions) < _PAGE:
                break
            offset += _PAGE
        return found

    async def alert_operators(self, kind: AlertKind, resolved: bool) -> None:
        """Best effort: a private message to every operator (the alerts' sender)."""
        text = texts.alert(self._language, kind, resolved=resolved)
        for admin_id in sorted(self._admin_ids):
            try:
                await self._call(partial(self._bot.send_message, admin_id, text))
            except (TelegramError, SendFailed, ChatUnreachable) as exc:
                log.warning("could not alert operator %s: %s", admin_id, type(exc).__name__)
