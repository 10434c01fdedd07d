"""Telegram handlers: parse the update, call the ledger or tracker, render the answer.

Every handler is idempotent: Telegram re-delivers updates the bot had not confirmed
when it stopped, so each one is keyed on stable ids stored in the ledger. A short flood
wait on a reply is waited out by the rate limiter (:mod:`bot.telegram.pacing`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from telegram import (
    Bot,
    CallbackQuery,
    InlineKeyboardMarkup,
    LabeledPrice,
    Message,
    MessageEntity,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatType
from telegram.error import BadRequest, Conflict, TelegramError
from telegram.ext import ContextTypes

from ..core.errors import LedgerError, LedgerWriteFailed
from ..core.jobs import Job, JobState, NewJob
from ..core.limits import DAY_SECONDS, StartOutcome, StartResult, utc_day_start
from ..core.options import VideoOptions, choose, with_next_style
from ..core.payments import (
    CURRENCY,
    NewPayment,
    PaymentOutcome,
    PreCheckout,
    RefundState,
    invoice_payload,
)
from ..core.stats import summarize
from ..i18n import texts
from .keyboards import Action, Press, awaiting_payment_keyboard, options_keyboard, parse
from .runtime import Runtime

__all__ = ["Handlers", "ImageRef", "find_image", "MAX_IMAGE_BYTES", "COMMAND"]

log = logging.getLogger(__name__)

#: Telegram hands bots files up to 20 MB.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
COMMAND = "warmth"

Context = ContextTypes.DEFAULT_TYPE


@dataclass(frozen=True)
class ImageRef:
    message: Message
    file_id: str
    file_unique_id: str
    file_size: int | None
    mime_type: str


class NotAnImage(Exception):
    """The message carries a file, but not an image."""


def find_image(message: Message) -> ImageRef | None:
    """The largest photo, or an image sent as a file; None when there is neither.

    Raises :class:`NotAnImage` for a document that is not an image.
    """
    if message.photo:
        largest = message.photo[-1]
        return ImageRef(
            message, largest.file_id, largest.file_unique_id, largest.file_size, "image/jpeg"
        )
    document = message.document
    if document is not None:
        mime = (document.mime_type or "").lower()
        if not mime.startswith("image/"):
            raise NotAnImage(mime)
        return ImageRef(
            message, document.file_id, document.file_unique_id, document.file_size, mime
        )
    return None


def _is_group(message: Message) -> bool:
    return message.chat.type in (ChatType.GROUP, ChatType.SUPERGROUP)


def _thread_id(message: Message) -> int | None:
    """The forum topic to stay in (only topic messages carry a usable thread id)."""
    return message.message_thread_id if message.is_topic_message else None


def _asks_for_warmth(message: Message, bot_username: str) -> bool:
    """True when the text or caption starts with /warmth or /warmth@<this bot>."""
    entities = message.entities or message.caption_entities
    content = message.text or message.caption or ""
    for entity in entities:
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            command = content[: entity.length].lstrip("/")
            name, _, target = command.partition("@")
            return name.lower() == COMMAND and (
                not target or target.lower() == bot_username.lower()
            )
    return False


class Handlers:
    """Bound to the runtime's services; each method is a PTB callback."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    # -- access rules ----------------------------------------------------------------

    def _user_allowed(self, user_id: int) -> bool:
        allowed = self.rt.settings.allowed_user_ids
        return not allowed or user_id in allowed

    def _chat_allowed(self, chat_id: int, chat_type: str) -> bool:
        allowed = self.rt.settings.allowed_chat_ids
        return chat_type == ChatType.PRIVATE or not allowed or chat_id in allowed

    # -- commands --------------------------------------------------------------------

    async def start(self, update: Update, context: Context) -> None:
        """/start and /help: one short message on what to do."""
        message = update.effective_message
        if message is None:
            return
        text = texts.GROUP_HELP if _is_group(message) else texts.START
        await self._reply(message, text)

    async def admin(self, update: Update, context: Context) -> None:
        """/stats and /jobs for operators; anyone else gets silence, as for no command."""
        message = update.effective_message
        user = update.effective_user
        if message is None or user is None or user.id not in self.rt.settings.admin_ids:
            return
        command = (message.text or "").split()[0].lstrip("/").split("@")[0].lower()
        if command == "stats":
            now = time.time()
            jobs = await self.rt.ledger.started_since(now - 7 * DAY_SECONDS)
            summary = summarize(jobs, now, await self.rt.ledger.count_active())
            stars = [
                texts.stars_line(label, *await self.rt.ledger.stars_since(now - seconds))
                for label, seconds in (("24 h", DAY_SECONDS), ("7 days", 7 * DAY_SECONDS))
            ]
            await self._reply(message, texts.stats(summary, stars))
        else:
            await self._reply(message, texts.jobs_list(await self.rt.ledger.recent(10)))

    async def paysupport(self, update: Update, context: Context) -> None:
        """/paysupport (Telegram requires it): the operator's words and the user's payments."""
        message = update.effective_message
        user = update.effective_user
        if message is None or user is None:
            return
        payments = await self.rt.ledger.payments_of(user.id, 10)
        await self._reply(message, texts.paysupport(self.rt.settings.paysupport_text, payments))

    async def terms(self, update: Update, context: Context) -> None:
        """/terms: what is sold, the prices, the refund rule."""
        message = update.effective_message
        if message is None:
            return
        settings = self.rt.settings
        text = texts.terms(settings.price_stars.describe(), settings.free_videos_per_user)
        await self._reply(message, text)

    async def refund(self, update: Update, context: Context) -> None:
        """/refund <charge id>, operators only: one payment back, once."""
        message = update.effective_message
        user = update.effective_user
        if message is None or user is None or user.id not in self.rt.settings.admin_ids:
            return
        words = (message.text or "").split()
        if len(words) != 2:
            await self._reply(message, texts.refund_command("usage", ""))
            return
        charge_id = words[1]
        before = await self.rt.ledger.payment(charge_id)
        if before is None:
            await self._reply(message, texts.refund_command("unknown", charge_id))
            return
        if before.refund is not RefundState.NONE:
            await self._reply(message, texts.refund_command(before.refund.value, charge_id))
            return
        await self.rt.ledger.request_refund(charge_id)
        log.info("payment %s: refund asked by operator %s", charge_id, user.id)
        self.rt.refunds.poke()
        await self._reply(message, texts.refund_command("queued", charge_id))

    # -- payments --------------------------------------------------------------------

    async def pre_checkout(self, update: Update, context: Context) -> None:
        """Answered at once (Telegram allows 10 s): ok only for a job awaiting exactly
        this payment from its asker, within the user's limits."""
        query = update.pre_checkout_query
        if query is None:
            return
        verdict = PreCheckout.UNKNOWN
        if query.currency == CURRENCY:
            verdict = await self.rt.ledger.check_payment(
                query.invoice_payload, query.from_user.id, query.total_amount, self.rt.limits
            )
        if verdict is PreCheckout.OK:
            await query.answer(ok=True)
            return
        log.info("pre-checkout refused for user %s: %s", query.from_user.id, verdict.value)
        await query.answer(ok=False, error_message=texts.precheckout_refusal(verdict))

    async def successful_payment(self, update: Update, context: Context) -> None:
        """Stars taken: recorded once, in the transaction that starts the job."""
        message = update.effective_message
        user = update.effective_user
        if message is None or user is None or message.successful_payment is None:
            return
        paid = message.successful_payment
        new = NewPayment(
            charge_id=paid.telegram_payment_charge_id,
            provider_charge_id=paid.provider_payment_charge_id or "",
            user_id=user.id,
            chat_id=message.chat_id,
            payload=paid.invoice_payload,
            amount=paid.total_amount,
            currency=paid.currency,
        )
        try:
            outcome, payment, job = await self.rt.ledger.record_payment(new)
        except LedgerWriteFailed:
            # The Stars are taken and the user cannot pay "again": hold it, record it
            # (start the job, or owe it back) as soon as the ledger takes writes.
            self.rt.hold_payment(new)
            await self._reply(message, texts.PAYMENT_HELD)
            return
        if outcome is PaymentOutcome.REFUND_DUE:
            self.rt.refunds.poke()
        if job is None or outcome is not PaymentOutcome.STARTED:
            return
        self.rt.tracker.track(job.id)
        if job.keyboard_message_id is not None:
            with contextlib.suppress(TelegramError):
                await context.bot.edit_message_text(
                    texts.PAYMENT_RECEIVED, chat_id=job.chat_id, message_id=job.keyboard_message_id
                )

    async def _send_invoice(self, job: Job, bot: Bot) -> None:
        message = await bot.send_invoice(
            job.chat_id,
            texts.INVOICE_TITLE,
            texts.invoice_description(job.options),
            invoice_payload(job.id, job.invoice_no),
            CURRENCY,
            [LabeledPrice(texts.INVOICE_PRICE_LABEL, job.price_stars)],
            message_thread_id=job.thread_id,
            reply_parameters=ReplyParameters(
                job.photo_message_id, allow_sending_without_reply=True
            ),
        )
        await self.rt.ledger.set_invoice_message(job.id, message.message_id)

    # -- photos ----------------------------------------------------------------------

    async def private_message(self, update: Update, context: Context) -> None:
        """Anything sent in a private chat: a photo gets the keyboard, the rest a hint."""
        message = update.effective_message
        user = update.effective_user
        if message is None or user is None:
            return
        try:
            image = find_image(message)
        except NotAnImage:
            await self._reply(message, texts.NOT_AN_IMAGE_FILE)
            return
        if image is None:
            await self._reply(message, texts.NOT_A_PHOTO)
            return
        await self._offer(image, trigger=message, user_id=user.id)

    async def group_command(self, update: Update, context: Context) -> None:
        """/warmth in a group: as a photo's caption, or replying to a photo."""
        message = update.effective_message
        user = update.effective_user
        if message is None or user is None:
            return
        if not _asks_for_warmth(message, context.bot.username):
            return
        if not self._chat_allowed(message.chat_id, message.chat.type):
            await self._reply(message, texts.ANSWER_CHAT_NOT_ALLOWED)
            return
        try:
            image = find_image(message)
            if image is None and message.reply_to_message is not None:
                image = find_image(message.reply_to_message)
        except NotAnImage:
            await self._reply(message, texts.NOT_AN_IMAGE_FILE)
            return
        if image is None:
            await self._reply(message, texts.GROUP_NEEDS_PHOTO)
            return
        await self._offer(image, trigger=message, user_id=user.id)

    async def _offer(self, image: ImageRef, *, trigger: Message, user_id: int) -> None:
        """Record a draft for the photo (once) and reply to the photo with the keyboard."""
        if not self._user_allowed(user_id):
            await self._reply(trigger, texts.not_allowed_user())
            return
        if image.file_size is not None and image.file_size > MAX_IMAGE_BYTES:
            await self._reply(trigger, texts.IMAGE_TOO_LARGE)
            return
        photo = image.message
        job, created = await self.rt.ledger.create_draft(
            NewJob(
                chat_id=trigger.chat_id,
                user_id=user_id,
                chat_type=trigger.chat.type,
                trigger_message_id=trigger.message_id,
                photo_message_id=photo.message_id,
                thread_id=_thread_id(trigger),
                file_id=image.file_id,
                file_unique_id=image.file_unique_id,
                file_size=image.file_size,
                mime_type=image.mime_type,
            ),
            VideoOptions(),
        )
        if not created and (
            job.keyboard_message_id is not None or job.state is not JobState.DRAFT
        ):
            log.info("job %s: photo re-delivered, keyboard already shown", job.short_id)
            return
        sent = await photo.reply_text(
            texts.keyboard_caption(job.options),
            reply_markup=options_keyboard(
                job.id, job.options, await self._shown_price(job.user_id, job.options)
            ),
            reply_parameters=ReplyParameters(photo.message_id, allow_sending_without_reply=True),
            message_thread_id=_thread_id(trigger),
            do_quote=False,
        )
        await self.rt.ledger.set_keyboard_message(job.id, sent.message_id)

    # -- buttons ---------------------------------------------------------------------

    async def button(self, update: Update, context: Context) -> None:
        """Every inline button: options, Generate, Try again. Always answered."""
        query = update.callback_query
        if query is None:
            return
        press = parse(query.data)
        message = query.message
        if press is None or not isinstance(message, Message):
            await self._answer(query, texts.ANSWER_INVALID)
            return
        job = await self.rt.ledger.get(press.job_id)
        if job is None or job.chat_id != message.chat_id:
            await self._answer(query, texts.ANSWER_STALE)
            return
        if query.from_user.id != job.user_id:
            await self._answer(query, texts.ANSWER_NOT_YOURS, alert=True)
            return
        if not self._user_allowed(query.from_user.id):
            await self._answer(query, texts.ANSWER_NOT_ALLOWED, alert=True)
            return
        if press.action is Action.GENERATE:
            await self._generate(query, job, message, context.bot)
        elif press.action is Action.CHANGE:
            await self._reopen(query, job, message, context.bot)
        elif press.action is Action.RETRY:
            await self._retry(query, job, message, context.bot)
        else:
            await self._change_option(query, job, press, message)

    async def _change_option(
        self, query: CallbackQuery, job: Job, press: Press, message: Message
    ) -> None:
        if job.state is not JobState.DRAFT:
            await self._answer(query, texts.ANSWER_ALREADY_STARTED)
            return
        note = None
        if press.action is Action.STYLE:
            options = with_next_style(job.options)
        else:
            options, adjustment = choose(
                job.options,
                quality=press.value if press.action is Action.QUALITY else None,
                duration=int(press.value or 0) if press.action is Action.DURATION else None,
            )
            note = texts.adjustment_note(adjustment)
        updated = await self.rt.ledger.update_options(job.id, options)
        if updated is None:
            await self._answer(query, texts.ANSWER_ALREADY_STARTED)
            return
        await self._answer(query, note)
        await self._edit(
            message,
            texts.keyboard_caption(updated.options),
            options_keyboard(
                updated.id,
                updated.options,
                await self._shown_price(updated.user_id, updated.options),
            ),
        )

    def _price(self, options: VideoOptions) -> int:
        return self.rt.settings.price_stars.price(options)

    async def _shown_price(self, user_id: int, options: VideoOptions) -> int:
        """The price on the Generate button: none while the user has free videos left."""
        price = self._price(options)
        free = self.rt.settings.free_videos_per_user
        if price and free and await self.rt.ledger.free_videos_used(user_id) < free:
            return 0
        return price

    async def _generate(self, query: CallbackQuery, job: Job, message: Message, bot: Bot) -> None:
        result = await self.rt.ledger.start(
            job.id,
            query.from_user.id,
            self.rt.limits,
            price=self._price(job.options),
            free_videos=self.rt.settings.free_videos_per_user,
        )
        await self._after_start(query, result, message, bot)

    async def _retry(self, query: CallbackQuery, job: Job, message: Message, bot: Bot) -> None:
        result = await self.rt.ledger.start_retry(
            job.id,
            query.from_user.id,
            self.rt.limits,
            status_message_id=message.message_id,
            price=self._price(job.options),
            free_videos=self.rt.settings.free_videos_per_user,
        )
        await self._after_start(query, result, message, bot)

    async def _reopen(self, query: CallbackQuery, job: Job, message: Message, bot: Bot) -> None:
        """ "Change options" under an unpaid invoice: the options keyboard again."""
        draft = await self.rt.ledger.reopen_draft(job.id, query.from_user.id)
        if draft is None:
            await self._answer(query, texts.ANSWER_ALREADY_STARTED)
            return
        await self._answer(query, texts.ANSWER_OPTIONS_AGAIN)
        await self._edit(
            message,
            texts.keyboard_caption(draft.options),
            options_keyboard(
                draft.id, draft.options, await self._shown_price(draft.user_id, draft.options)
            ),
        )
        if draft.invoice_message_id is not None:
            # Void already; removing it spares the user a button that would be refused.
            with contextlib.suppress(TelegramError):
                await bot.delete_message(draft.chat_id, draft.invoice_message_id)

    async def _invoice(self, query: CallbackQuery, job: Job, message: Message, bot: Bot) -> None:
        """Send the job's invoice first; only then swap the keyboard for "Change options",
        so a failed send leaves Generate there to press again."""
        try:
            await self._send_invoice(job, bot)
        except TelegramError as exc:
            log.warning("job %s: the invoice could not be sent: %s", job.short_id, exc)
            await self._answer(query, texts.ANSWER_INVOICE_FAILED, alert=True)
            return
        log.info("job %s: invoice %d for %d Stars", job.short_id, job.invoice_no, job.price_stars)
        await self._answer(query, texts.ANSWER_INVOICE_SENT)
        await self._edit(
            message,
            texts.awaiting_payment(job.options, job.price_stars),
            awaiting_payment_keyboard(job.id),
        )

    async def _after_start(
        self, query: CallbackQuery, result: StartResult, message: Message, bot: Bot
    ) -> None:
        outcome = result.outcome
        if outcome is StartOutcome.INVOICE and result.job is not None:
            await self._invoice(query, result.job, message, bot)
        elif outcome is StartOutcome.AWAITING_PAYMENT and result.job is not None:
            if result.job.invoice_message_id is None:
                # Its invoice never went out (a crash or a failed send after Generate).
                await self._invoice(query, result.job, message, bot)
            else:
                await self._answer(query, texts.ANSWER_AWAITING_PAYMENT)
        elif outcome is StartOutcome.STARTED and result.job is not None:
            await self._answer(query, texts.ANSWER_STARTED)
            log.info("job %s: started by user %s", result.job.short_id, result.job.user_id)
            self.rt.tracker.track(result.job.id)
        elif outcome is StartOutcome.ALREADY_STARTED:
            await self._answer(query, texts.ANSWER_ALREADY_STARTED)
        elif outcome is StartOutcome.TOO_MANY_ACTIVE:
            await self._answer(
                query, texts.too_many_active(self.rt.limits.max_active_per_user), alert=True
            )
        elif outcome is StartOutcome.DAILY_LIMIT:
            now = time.time()
            resets_in = utc_day_start(now) + 86_400 - now
            await self._answer(
                query, texts.daily_limit(self.rt.limits.daily_per_user, resets_in), alert=True
            )
        elif outcome is StartOutcome.NOT_OWNER:
            await self._answer(query, texts.ANSWER_NOT_YOURS, alert=True)
        else:
            await self._answer(query, texts.ANSWER_STALE)

    # -- rendering helpers -----------------------------------------------------------

    async def _reply(self, message: Message, text: str) -> None:
        await message.reply_text(
            text,
            reply_parameters=ReplyParameters(message.message_id, allow_sending_without_reply=True),
            message_thread_id=_thread_id(message),
            do_quote=False,
        )

    @staticmethod
    async def _answer(query: CallbackQuery, text: str | None, *, alert: bool = False) -> None:
        """Answer a callback; a late answer ("query is too old") is not worth an error."""
        try:
            await query.answer(text, show_alert=alert)
        except BadRequest as exc:
            log.info("callback answer refused: %s", exc.message)

    @staticmethod
    async def _edit(message: Message, text: str, markup: InlineKeyboardMarkup) -> None:
        with contextlib.suppress(BadRequest):  # "message is not modified" on a double tap
            await message.edit_text(text, reply_markup=markup)

    async def error(self, update: object, context: Context) -> None:
        """Log every unhandled error with its traceback (the formatter redacts secrets)."""
        error = context.error
        if update is None and isinstance(error, Conflict) and self.rt.conflict_watch is not None:
            self.rt.conflict_watch.conflict()  # getUpdates: another process polls the token
            return
        if isinstance(error, LedgerError) and isinstance(update, Update):
            await self._ledger_failed(update, error)
            return
        if isinstance(error, TelegramError):
            log.warning("telegram error while handling an update: %s", error)
        else:
            log.error("unhandled error while handling an update", exc_info=error)

    async def _ledger_failed(self, update: Update, error: Exception) -> None:
        """The ledger could not take this update (disk full, read-only): the user hears
        "try again in a minute", operators get one alert, and nothing half-done remains
        (a failed write changed nothing)."""
        log.warning("update %s not recorded: the ledger %s", update.update_id, error)
        self.rt.ledger_failed()
        try:
            if update.callback_query is not None:
                await self._answer(update.callback_query, texts.LEDGER_BUSY, alert=True)
            elif update.pre_checkout_query is not None:
                await update.pre_checkout_query.answer(ok=False, error_message=texts.LEDGER_BUSY)
            elif update.effective_message is not None:
                await self._reply(update.effective_message, texts.LEDGER_BUSY)
        except TelegramError as exc:
            log.warning("could not tell the user the ledger is failing: %s", exc)
