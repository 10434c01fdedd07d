"""Telegram handlers: parse the update, call the ledger or tracker, render the answer.

Every handler is idempotent: Telegram re-delivers updates the bot had not confirmed
when it stopped, so each one is keyed on stable ids stored in the ledger. A short flood
wait on a reply is waited out by the rate limiter (:mod:`bot.telegram.pacing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass

from telegram import (
    Bot,
    CallbackQuery,
    InlineKeyboardMarkup,
    InlineQueryResultCachedVideo,
    InlineQueryResultsButton,
    LabeledPrice,
    Message,
    MessageEntity,
    ReplyParameters,
    Update,
    User,
)
from telegram.constants import ChatType
from telegram.error import BadRequest, Conflict, TelegramError
from telegram.ext import ContextTypes

from ..core.errors import (
    ChatUnreachable,
    LedgerError,
    LedgerWriteFailed,
    PhotoUnavailable,
    SendFailed,
)
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
from ..core.ports import HistoryPage
from ..core.stats import summarize
from ..core.users import UserPreferences
from ..i18n import texts
from ..i18n.catalogues import user_language
from ..images import MIN_SHORT_SIDE, ImageRefused, Refusal, draft_box
from ..settings import DEFAULT_PAYSUPPORT_TEXT
from .keyboards import (
    HISTORY_ACTIONS,
    Action,
    Press,
    after_video_keyboard,
    awaiting_payment_keyboard,
    history_keyboard,
    language_keyboard,
    options_keyboard,
    parse,
    parse_language,
    parse_share_query,
)
from .reactions import Reactions
from .runtime import Runtime

__all__ = ["Handlers", "ImageRef", "find_image", "MAX_IMAGE_BYTES", "COMMAND"]

log = logging.getLogger(__name__)

#: Telegram hands bots files up to 20 MB.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
COMMAND = "warmth"
#: Jobs on one /history page.
HISTORY_PAGE = 10
#: Videos offered in answer to an inline query (Telegram allows 50 results).
INLINE_RESULTS = 20
#: Seconds Telegram may cache an inline answer: short, so a new video shows up soon.
INLINE_CACHE_SECONDS = 10
#: Where the "make one" button under empty inline results leads (/start <this>).
INLINE_START_PARAMETER = "share"

Context = ContextTypes.DEFAULT_TYPE


@dataclass(frozen=True)
class ImageRef:
    message: Message
    file_id: str
    file_unique_id: str
    file_size: int | None
    mime_type: str
    #: Known for photos (Telegram made them); an image sent as a file must be opened.
    width: int | None = None
    height: int | None = None


class NotAnImage(Exception):
    """The message carries a file, but not an image."""


def find_image(message: Message) -> ImageRef | None:
    """The largest photo, or an image sent as a file; None when there is neither.

    Raises :class:`NotAnImage` for a document that is not an image.
    """
    if message.photo:
        largest = message.photo[-1]
        return ImageRef(
            message,
            largest.file_id,
            largest.file_unique_id,
            largest.file_size,
            "image/jpeg",
            largest.width,
            largest.height,
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


def _can_share(bot: Bot) -> bool:
    """Whether the bot has inline mode (getMe at start): Share opens nothing without it."""
    try:
        return bool(bot.supports_inline_queries)
    except RuntimeError:  # not initialised
        return False


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
        #: Drafts whose keyboard is being sent now: a second press that comes while the
        #: first one waits for the chat's turn must not send another.
        self._keyboards_on_the_way: set[int] = set()
        self._reactions = Reactions(backlog=lambda: runtime.limiter.backlog)

    # -- access rules ----------------------------------------------------------------

    def _user_allowed(self, user_id: int) -> bool:
        allowed = self.rt.settings.allowed_user_ids
        return not allowed or user_id in allowed

    def _chat_allowed(self, chat_id: int, chat_type: str) -> bool:
        allowed = self.rt.settings.allowed_chat_ids
        return chat_type == ChatType.PRIVATE or not allowed or chat_id in allowed

    # -- languages -------------------------------------------------------------------

    @property
    def _operator_language(self) -> str:
        """Operators read /stats, /jobs and /refund in DEFAULT_LANGUAGE, as their alerts."""
        return self.rt.settings.default_language

    async def _user(self, user: User | None) -> tuple[str, UserPreferences]:
        """The language to speak with this user, and what the ledger remembers of them."""
        default = self.rt.settings.default_language
        if user is None:
            return default, UserPreferences()
        preferences = await self.rt.ledger.user_preferences(user.id)
        return user_language(preferences.language, user.language_code, default), preferences

    async def _language(self, user: User | None) -> str:
        return (await self._user(user))[0]

    def _telegram_language(self, user: User | None) -> str:
        """Without the ledger (it may be what is failing): Telegram's language only."""
        code = user.language_code if user is not None else None
        return user_language(None, code, self.rt.settings.default_language)

    # -- commands --------------------------------------------------------------------

    async def start(self, update: Update, context: Context) -> None:
        """/start and /help: one short message on what to do."""
        message = update.effective_message
        if message is None:
            return
        lang = await self._language(update.effective_user)
        text = texts.group_help(lang) if _is_group(message) else texts.start(lang)
        await self._reply(message, text)

    async def language(self, update: Update, context: Context) -> None:
        """/language: one button per language, each in its own name."""
        message = update.effective_message
        if message is None:
            return
        lang = await self._language(update.effective_user)
        await message.reply_text(
            texts.language_prompt(lang),
            reply_markup=language_keyboard(lang),
            reply_parameters=ReplyParameters(message.message_id, allow_sending_without_reply=True),
            message_thread_id=_thread_id(message),
            do_quote=False,
        )

    async def language_button(self, update: Update, context: Context) -> None:
        """A /language button: the presser's own language is remembered (in a group too)."""
        query = update.callback_query
        if query is None:
            return
        chosen = parse_language(query.data)
        if chosen is None:
            lang = await self._language(query.from_user)
            await self._answer(query, texts.answer_unknown_language(lang), alert=True)
            return
        await self.rt.ledger.set_language(query.from_user.id, chosen)
        log.info("user %s speaks %s from now on", query.from_user.id, chosen)
        await self._answer(query, None)
        if isinstance(query.message, Message):
            await self._edit(
                query.message, texts.language_chosen(chosen), language_keyboard(chosen)
            )

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
            lang = self._operator_language
            stars = [
                texts.stars_line(
                    lang,
                    texts.period_label(lang, days),
                    *await self.rt.ledger.stars_since(now - days * DAY_SECONDS),
                )
                for days in (1, 7)
            ]
            await self._reply(message, texts.stats(lang, summary, stars))
        else:
            jobs = await self.rt.ledger.recent(10)
            await self._reply(message, texts.jobs_list(self._operator_language, jobs))

    async def paysupport(self, update: Update, context: Context) -> None:
        """/paysupport (Telegram requires it): the operator's words and the user's payments."""
        message = update.effective_message
        user = update.effective_user
        if message is None or user is None:
            return
        payments = await self.rt.ledger.payments_of(user.id, 10)
        support: str | None = self.rt.settings.paysupport_text
        if support == DEFAULT_PAYSUPPORT_TEXT:
            support = None  # the default is said in the user's language
        lang = await self._language(user)
        await self._reply(message, texts.paysupport(lang, support, payments))

    async def terms(self, update: Update, context: Context) -> None:
        """/terms: what is sold, the prices, the refund rule."""
        message = update.effective_message
        if message is None:
            return
        settings = self.rt.settings
        lang = await self._language(update.effective_user)
        text = texts.terms(lang, settings.price_stars.describe(), settings.free_videos_per_user)
        await self._reply(message, text)

    async def refund(self, update: Update, context: Context) -> None:
        """/refund <charge id>, operators only: one payment back, once."""
        message = update.effective_message
        user = update.effective_user
        if message is None or user is None or user.id not in self.rt.settings.admin_ids:
            return
        words = (message.text or "").split()
        if len(words) != 2:
            await self._reply(message, texts.refund_command(self._operator_language, "usage", ""))
            return
        charge_id = words[1]
        before = await self.rt.ledger.payment(charge_id)
        if before is None:
            await self._refund_unrecorded(message, charge_id)
            return
        if before.refund is not RefundState.NONE:
            text = texts.refund_command(self._operator_language, before.refund.value, charge_id)
            await self._reply(message, text)
            return
        await self.rt.ledger.request_refund(charge_id)
        log.info("payment %s: refund asked by operator %s", charge_id, user.id)
        self.rt.refunds.poke()
        await self._reply(
            message, texts.refund_command(self._operator_language, "queued", charge_id)
        )

    async def _refund_unrecorded(self, message: Message, charge_id: str) -> None:
        """A charge the ledger lacks (lost to a crash or a full disk): Telegram's list
        says who paid it, and it is recorded as owed back to them."""
        lang = self._operator_language
        try:
            charge = await self.rt.charge_at_telegram(charge_id)
        except (SendFailed, ChatUnreachable):
            await self._reply(message, texts.refund_lookup_failed(lang, charge_id))
            return
        if charge is None or not await self.rt.refund_unrecorded(charge):
            await self._reply(message, texts.refund_command(lang, "unknown", charge_id))
            return
        log.warning("payment %s: not in the ledger; refund asked by an operator", charge_id)
        await self._reply(message, texts.refund_unrecorded(lang, charge_id, charge.user_id))

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
        lang = await self._language(query.from_user)
        await query.answer(ok=False, error_message=texts.precheckout_refusal(lang, verdict))

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
            await self._reply(message, texts.payment_held(self._telegram_language(user)))
            return
        if outcome is PaymentOutcome.REFUND_DUE:
            self.rt.refunds.poke()
        if job is None or outcome is not PaymentOutcome.STARTED:
            return
        self.rt.tracker.track(job.id)
        if job.keyboard_message_id is not None:
            with contextlib.suppress(TelegramError):
                await context.bot.edit_message_text(
                    texts.payment_received(job.language),
                    chat_id=job.chat_id,
                    message_id=job.keyboard_message_id,
                )

    async def _send_invoice(self, job: Job, bot: Bot) -> None:
        message = await bot.send_invoice(
            job.chat_id,
            texts.invoice_title(job.language),
            texts.invoice_description(job.language, job.options),
            invoice_payload(job.id, job.invoice_no),
            CURRENCY,
            [LabeledPrice(texts.invoice_price_label(job.language), job.price_stars)],
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
        lang, preferences = await self._user(user)
        try:
            image = find_image(message)
        except NotAnImage:
            await self._reply(message, texts.not_an_image_file(lang))
            return
        if image is None:
            await self._reply(message, texts.not_a_photo(lang))
            return
        await self._offer(image, trigger=message, user_id=user.id, lang=lang, last=preferences)

    async def group_command(self, update: Update, context: Context) -> None:
        """/warmth in a group: as a photo's caption, or replying to a photo."""
        message = update.effective_message
        user = update.effective_user
        if message is None or user is None:
            return
        if not _asks_for_warmth(message, context.bot.username):
            return
        lang, preferences = await self._user(user)
        if not self._chat_allowed(message.chat_id, message.chat.type):
            await self._reply(message, texts.answer_chat_not_allowed(lang))
            return
        try:
            image = find_image(message)
            if image is None and message.reply_to_message is not None:
                image = find_image(message.reply_to_message)
        except NotAnImage:
            await self._reply(message, texts.not_an_image_file(lang))
            return
        if image is None:
            await self._reply(message, texts.group_needs_photo(lang))
            return
        await self._offer(image, trigger=message, user_id=user.id, lang=lang, last=preferences)

    async def _offer(
        self,
        image: ImageRef,
        *,
        trigger: Message,
        user_id: int,
        lang: str,
        last: UserPreferences,
    ) -> None:
        """Record a draft for the photo (once), in the asker's language and with their
        last options, and reply to the photo with the keyboard."""
        if not self._user_allowed(user_id):
            await self._reply(trigger, texts.not_allowed_user(lang))
            return
        if image.file_size is not None and image.file_size > MAX_IMAGE_BYTES:
            await self._reply(trigger, texts.image_too_large(lang))
            return
        refusal = await self._unusable(image, lang)
        if refusal is not None:
            log.info("photo in chat %s refused: %s", trigger.chat_id, refusal)
            await self._reply(trigger, refusal)
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
                language=lang,
            ),
            last.next_options(),
        )
        if not created and (
            job.keyboard_message_id is not None or job.state is not JobState.DRAFT
        ):
            log.info("job %s: photo re-delivered, keyboard already shown", job.short_id)
            return
        sent = await photo.reply_text(
            texts.keyboard_caption(job.language, job.options),
            reply_markup=options_keyboard(
                job.language,
                job.id,
                job.options,
                await self._shown_price(job.user_id, job.options),
            ),
            reply_parameters=ReplyParameters(photo.message_id, allow_sending_without_reply=True),
            message_thread_id=_thread_id(trigger),
            do_quote=False,
        )
        await self.rt.ledger.set_keyboard_message(job.id, sent.message_id)
        # 👀 on the photo once the keyboard is out: never before it, never an error.
        await self._reactions.seen(photo.get_bot(), photo.chat_id, photo.message_id)

    async def _unusable(self, image: ImageRef, lang: str) -> str | None:
        """Why no video can be made from this image, or None: checked before the keyboard,
        so nothing is ever invoiced or submitted for it.

        A photo's size is in the update (Telegram made it, so it decodes). An image sent
        as a file is downloaded and prepared now; the job reuses what was prepared.
        """
        if image.width is not None and image.height is not None:
            too_small = min(draft_box(image.width, image.height)) < MIN_SHORT_SIDE
            return texts.image_too_small(lang) if too_small else None
        try:
            await self.rt.photos.prepared(image.file_id, image.file_unique_id)
        except ImageRefused as exc:
            return {
                Refusal.TOO_SMALL: texts.image_too_small,
                Refusal.TOO_LARGE: texts.image_too_many_pixels,
                Refusal.UNREADABLE: texts.image_unreadable,
            }[exc.refusal](lang)
        except PhotoUnavailable as exc:
            return (
                texts.image_too_large(lang) if exc.too_big else texts.photo_download_failed(lang)
            )
        except SendFailed:
            return texts.photo_download_failed(lang)
        return None

    # -- buttons ---------------------------------------------------------------------

    async def button(self, update: Update, context: Context) -> None:
        """Every inline button: options, Generate, Try again. Always answered."""
        query = update.callback_query
        if query is None:
            return
        press = parse(query.data)
        message = query.message
        if press is None or not isinstance(message, Message):
            await self._answer(query, texts.answer_invalid(await self._language(query.from_user)))
            return
        if press.action in HISTORY_ACTIONS:
            await self._history_press(query, press, message, context.bot)
            return
        # Answers speak to the presser. Their language and the job are read together: the
        # answer waits for one trip to the ledger, not two in turn (under load each trip
        # waits behind the ledger's other work and the event loop's, docs/benchmarks.md).
        lang, job = await asyncio.gather(
            self._language(query.from_user), self.rt.ledger.get(press.job_id)
        )
        if job is None or job.chat_id != message.chat_id:
            await self._answer(query, texts.answer_stale(lang))
            return
        if query.from_user.id != job.user_id:
            await self._answer(query, texts.answer_not_yours(lang), alert=True)
            return
        if not self._user_allowed(query.from_user.id):
            await self._answer(query, texts.answer_not_allowed(lang), alert=True)
            return
        if press.action is Action.GENERATE:
            await self._generate(query, job, message, context.bot, lang)
        elif press.action is Action.CHANGE:
            await self._reopen(query, job, message, context.bot, lang)
        elif press.action is Action.RETRY:
            await self._retry(query, job, message, context.bot, lang)
        elif press.action is Action.AGAIN:
            await self._again(query, job, message, context.bot, lang)
        elif press.action is Action.OPTIONS:
            await self._options(query, job, message, context.bot, lang)
        else:
            await self._change_option(query, job, press, message, lang)

    async def _change_option(
        self, query: CallbackQuery, job: Job, press: Press, message: Message, lang: str
    ) -> None:
        if job.state is not JobState.DRAFT:
            await self._answer(query, texts.answer_already_started(lang))
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
            note = texts.adjustment_note(lang, adjustment)
        updated = await self.rt.ledger.update_options(job.id, options)
        if updated is None:
            await self._answer(query, texts.answer_already_started(lang))
            return
        await self._answer(query, note)
        # The defaults of this user's next keyboard.
        await self.rt.ledger.remember_options(updated.user_id, updated.options)
        await self._edit(
            message,
            texts.keyboard_caption(updated.language, updated.options),
            options_keyboard(
                updated.language,
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

    async def _generate(
        self, query: CallbackQuery, job: Job, message: Message, bot: Bot, lang: str
    ) -> None:
        result = await self.rt.ledger.start(
            job.id,
            query.from_user.id,
            self.rt.limits,
            price=self._price(job.options),
            free_videos=self.rt.settings.free_videos_per_user,
        )
        await self._after_start(query, result, message, bot, lang)

    async def _retry(
        self, query: CallbackQuery, job: Job, message: Message, bot: Bot, lang: str
    ) -> None:
        result = await self.rt.ledger.start_retry(
            job.id,
            query.from_user.id,
            self.rt.limits,
            status_message_id=message.message_id,
            price=self._price(job.options),
            free_videos=self.rt.settings.free_videos_per_user,
        )
        await self._after_start(query, result, message, bot, lang)

    async def _reopen(
        self, query: CallbackQuery, job: Job, message: Message, bot: Bot, lang: str
    ) -> None:
        """ "Change options" under an unpaid invoice: the options keyboard again."""
        draft = await self.rt.ledger.reopen_draft(job.id, query.from_user.id)
        if draft is None:
            await self._answer(query, texts.answer_already_started(lang))
            return
        await self._answer(query, texts.answer_options_again(lang))
        await self._edit(
            message,
            texts.keyboard_caption(draft.language, draft.options),
            options_keyboard(
                draft.language,
                draft.id,
                draft.options,
                await self._shown_price(draft.user_id, draft.options),
            ),
        )
        if draft.invoice_message_id is not None:
            # Void already; removing it spares the user a button that would be refused.
            with contextlib.suppress(TelegramError):
                await bot.delete_message(draft.chat_id, draft.invoice_message_id)

    async def _invoice(
        self, query: CallbackQuery, job: Job, message: Message, bot: Bot, lang: str
    ) -> None:
        """Send the job's invoice first; only then swap the keyboard for "Change options",
        so a failed send leaves Generate there to press again."""
        if not await self._invoice_out(query, job, bot, lang, texts.answer_invoice_failed(lang)):
            return
        await self._edit(
            message,
            texts.awaiting_payment(job.language, job.options, job.price_stars),
            awaiting_payment_keyboard(job.language, job.id),
        )

    async def _after_start(
        self, query: CallbackQuery, result: StartResult, message: Message, bot: Bot, lang: str
    ) -> None:
        outcome = result.outcome
        if outcome is StartOutcome.INVOICE and result.job is not None:
            await self._invoice(query, result.job, message, bot, lang)
        elif outcome is StartOutcome.AWAITING_PAYMENT and result.job is not None:
            if result.job.invoice_message_id is None:
                # Its invoice never went out (a crash or a failed send after Generate).
                await self._invoice(query, result.job, message, bot, lang)
            else:
                await self._answer(query, texts.answer_awaiting_payment(lang))
        elif outcome is StartOutcome.STARTED and result.job is not None:
            await self._answer(query, texts.answer_started(lang))
            log.info("job %s: started by user %s", result.job.short_id, result.job.user_id)
            self.rt.tracker.track(result.job.id)
        elif outcome is StartOutcome.ALREADY_STARTED:
            await self._answer(query, texts.answer_already_started(lang))
        elif outcome is StartOutcome.TOO_MANY_ACTIVE:
            await self._answer(
                query, texts.too_many_active(lang, self.rt.limits.max_active_per_user), alert=True
            )
        elif outcome is StartOutcome.DAILY_LIMIT:
            now = time.time()
            resets_in = utc_day_start(now) + 86_400 - now
            await self._answer(
                query,
                texts.daily_limit(lang, self.rt.limits.daily_per_user, resets_in),
                alert=True,
            )
        elif outcome is StartOutcome.NOT_OWNER:
            await self._answer(query, texts.answer_not_yours(lang), alert=True)
        else:
            await self._answer(query, texts.answer_stale(lang))

    # -- after the video: Again and Options ------------------------------------------

    async def _again(
        self, query: CallbackQuery, job: Job, message: Message, bot: Bot, lang: str
    ) -> None:
        """One new job from a delivered one (same photo and options, a new seed), paid
        like any other; a second press or a re-delivered update finds the first's job.
        Answers speak the presser's ``lang``; messages in the chat the job's language."""
        result = await self.rt.ledger.start_again(
            job.id,
            query.from_user.id,
            self.rt.limits,
            price=self._price(job.options),
            free_videos=self.rt.settings.free_videos_per_user,
        )
        new, outcome = result.job, result.outcome
        if outcome is StartOutcome.NOT_FOUND:
            await self._answer(query, texts.answer_again_gone(lang))
        elif new is None or new.retry_of != job.id:
            await self._after_start(query, result, message, bot, lang)  # limits, not owner
        elif outcome is StartOutcome.STARTED:
            await self._answer(query, texts.answer_again_started(lang))
            log.info("job %s: Again of %s by user %s", new.short_id, job.short_id, new.user_id)
            try:
                await self._status_message(
                    bot, new, texts.again_status(new.language, new.options), None
                )
            finally:
                self.rt.tracker.track(new.id)
        elif outcome is StartOutcome.INVOICE or (
            outcome is StartOutcome.AWAITING_PAYMENT and new.invoice_message_id is None
        ):
            await self._again_invoice(query, new, bot, lang)
        elif outcome is StartOutcome.AWAITING_PAYMENT:
            await self._answer(query, texts.answer_awaiting_payment(lang))
        else:
            await self._answer(query, texts.answer_again_before(lang))

    async def _invoice_out(
        self, query: CallbackQuery, job: Job, bot: Bot, lang: str, failed: str
    ) -> bool:
        """Send the job's invoice and answer the press: "sent", or ``failed`` (False)."""
        try:
            await self._send_invoice(job, bot)
        except TelegramError as exc:
            log.warning("job %s: the invoice could not be sent: %s", job.short_id, exc)
            await self._answer(query, failed, alert=True)
            return False
        log.info("job %s: invoice %d for %d Stars", job.short_id, job.invoice_no, job.price_stars)
        await self._answer(query, texts.answer_invoice_sent(lang))
        return True

    async def _again_invoice(self, query: CallbackQuery, job: Job, bot: Bot, lang: str) -> None:
        """The Again job's invoice, then (once it is out) its status message with
        "Change options"; a failed send leaves Again to press once more."""
        failed = texts.answer_again_invoice_failed(lang)
        if not await self._invoice_out(query, job, bot, lang, failed):
            return
        if job.keyboard_message_id is None:
            await self._status_message(
                bot,
                job,
                texts.awaiting_payment(job.language, job.options, job.price_stars),
                awaiting_payment_keyboard(job.language, job.id),
            )

    async def _status_message(
        self, bot: Bot, job: Job, text: str, markup: InlineKeyboardMarkup | None
    ) -> None:
        """A message replying to the job's photo that the tracker then keeps up to date
        (as the keyboard of a Generate job is); best effort."""
        try:
            sent = await bot.send_message(
                job.chat_id,
                text,
                reply_markup=markup,
                reply_parameters=ReplyParameters(
                    job.photo_message_id, allow_sending_without_reply=True
                ),
                message_thread_id=job.thread_id,
            )
        except TelegramError as exc:
            log.info("job %s: no status message (%s)", job.short_id, exc)
            return
        await self.rt.ledger.set_keyboard_message(job.id, sent.message_id)

    async def _options(
        self, query: CallbackQuery, job: Job, message: Message, bot: Bot, lang: str
    ) -> None:
        """A fresh options keyboard for the video's photo, replying to the photo: one
        draft per video message (it is the draft's asking message), so a double press or
        a re-delivered update shows one keyboard. The draft keeps the job's language."""
        if job.state is not JobState.DELIVERED:
            await self._answer(query, texts.answer_again_gone(lang))
            return
        draft, created = await self.rt.ledger.create_draft(
            NewJob(
                chat_id=job.chat_id,
                user_id=job.user_id,
                chat_type=job.chat_type,
                trigger_message_id=message.message_id,
                photo_message_id=job.photo_message_id,
                thread_id=job.thread_id,
                file_id=job.file_id,
                file_unique_id=job.file_unique_id,
                file_size=job.file_size,
                mime_type=job.mime_type,
                language=job.language,
            ),
            dataclasses.replace(job.options, seed=None),
        )
        if not created and draft.state is not JobState.DRAFT:
            await self._answer(query, texts.answer_options_used(lang))
            return
        if not created and (
            draft.keyboard_message_id is not None or draft.id in self._keyboards_on_the_way
        ):
            # Shown already, or on its way (a double press): one keyboard.
            await self._answer(query, texts.answer_options_shown(lang))
            return
        # Marked on its way before anything is awaited: a second press whose ledger read
        # comes back meanwhile must find it so.
        self._keyboards_on_the_way.add(draft.id)
        try:
            await self._answer(query, texts.answer_options_shown(lang))
            sent = await bot.send_message(
                draft.chat_id,
                texts.keyboard_caption(draft.language, draft.options),
                reply_markup=options_keyboard(
                    draft.language,
                    draft.id,
                    draft.options,
                    await self._shown_price(draft.user_id, draft.options),
                ),
                reply_parameters=ReplyParameters(
                    draft.photo_message_id, allow_sending_without_reply=True
                ),
                message_thread_id=draft.thread_id,
            )
            await self.rt.ledger.set_keyboard_message(draft.id, sent.message_id)
        finally:
            self._keyboards_on_the_way.discard(draft.id)

    # -- /history ----------------------------------------------------------------------

    async def history(self, update: Update, context: Context) -> None:
        """/history: the user's last jobs, newest first. In a group only those made in
        that group: the list is read by everyone there, and the user's private chat may
        not be open to the bot (it cannot write first)."""
        message = update.effective_message
        user = update.effective_user
        if message is None or user is None:
            return
        in_group = _is_group(message)
        page = await self.rt.ledger.history(
            user.id, HISTORY_PAGE, chat_id=message.chat_id if in_group else None
        )
        text, markup = self._history_view(page, in_group, await self._language(user))
        await message.reply_text(
            text,
            reply_markup=markup,
            reply_parameters=ReplyParameters(message.message_id, allow_sending_without_reply=True),
            message_thread_id=_thread_id(message),
            do_quote=False,
        )

    @staticmethod
    def _history_view(
        page: HistoryPage, in_group: bool, lang: str
    ) -> tuple[str, InlineKeyboardMarkup | None]:
        text = texts.history(lang, page.jobs, time.time(), in_group=in_group)
        resendable = [
            (number, job.id)
            for number, job in enumerate(page.jobs, start=1)
            if job.state is JobState.DELIVERED and job.video_file_id
        ]
        markup = history_keyboard(
            lang,
            resendable,
            older_than=page.jobs[-1].id if page.has_older else None,
            newer_than=page.jobs[0].id if page.has_newer else None,
        )
        return text, markup

    async def _history_press(
        self, query: CallbackQuery, press: Press, message: Message, bot: Bot
    ) -> None:
        """A /history button: send a video again (free: by its file id, no job, no
        Segmind call), or turn the page. Only the user whose history it is may press."""
        lang = await self._language(query.from_user)
        in_group = _is_group(message)
        job = await self.rt.ledger.get(press.job_id)
        if job is None or (in_group and job.chat_id != message.chat_id):
            await self._answer(query, texts.answer_history_gone(lang))
            return
        if job.user_id != query.from_user.id:
            await self._answer(query, texts.answer_not_yours(lang), alert=True)
            return
        if press.action is Action.RESEND:
            await self._resend(query, job, message, bot, lang)
            return
        page = await self.rt.ledger.history(
            job.user_id,
            HISTORY_PAGE,
            before_id=job.id if press.action is Action.OLDER else None,
            after_id=job.id if press.action is Action.NEWER else None,
            chat_id=message.chat_id if in_group else None,
        )
        if not page.jobs:
            await self._answer(query, texts.answer_history_gone(lang))
            return
        await self._answer(query, None)
        text, markup = self._history_view(page, in_group, lang)
        with contextlib.suppress(BadRequest):  # "message is not modified" on a double tap
            await message.edit_text(text, reply_markup=markup)

    async def _resend(
        self, query: CallbackQuery, job: Job, message: Message, bot: Bot, lang: str
    ) -> None:
        if job.state is not JobState.DELIVERED or not job.video_file_id:
            await self._answer(query, texts.answer_resend_gone(lang))
            return
        try:
            await bot.send_video(
                message.chat_id,
                job.video_file_id,
                caption=texts.video_caption(lang),
                supports_streaming=True,
                message_thread_id=_thread_id(message),
                # Again and Options act in the job's own chat (they reply to its photo).
                reply_markup=after_video_keyboard(
                    lang, job.id, share=_can_share(bot), again=job.chat_id == message.chat_id
                ),
            )
        except BadRequest as exc:
            log.info("job %s: video not sent again: %s", job.short_id, exc.message)
            await self._answer(query, texts.answer_resend_gone(lang))
            return
        await self._answer(query, texts.answer_resent(lang))

    # -- sharing: inline queries -------------------------------------------------------

    async def inline_query(self, update: Update, context: Context) -> None:
        """@bot in any chat (the Share button opens it): the asker's OWN delivered videos
        by file id, the one a Share button names first; none: a button to make one."""
        query = update.inline_query
        if query is None:
            return
        lang = await self._language(query.from_user)
        videos = await self.rt.ledger.delivered_videos(query.from_user.id, INLINE_RESULTS)
        wanted = parse_share_query(query.query)
        videos.sort(key=lambda job: job.id != wanted)  # stable: newest first otherwise
        now = time.time()
        results = [
            InlineQueryResultCachedVideo(
                id=f"v{job.id}",
                video_file_id=job.video_file_id or "",
                title=texts.share_title(lang, job.options),
                description=texts.share_description(lang, job.generate_at or job.created_at, now),
                caption=texts.video_caption(lang),
            )
            for job in videos
        ]
        button = None
        if not results:
            button = InlineQueryResultsButton(
                text=texts.share_none(lang), start_parameter=INLINE_START_PARAMETER
            )
        try:
            await query.answer(
                results, cache_time=INLINE_CACHE_SECONDS, is_personal=True, button=button
            )
        except BadRequest as exc:  # e.g. "query is too old": the user typed on
            log.info("inline query not answered: %s", exc.message)

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
        busy = texts.ledger_busy(self._telegram_language(update.effective_user))
        try:
            if update.callback_query is not None:
                await self._answer(update.callback_query, busy, alert=True)
            elif update.pre_checkout_query is not None:
                await update.pre_checkout_query.answer(ok=False, error_message=busy)
            elif update.effective_message is not None:
                await self._reply(update.effective_message, busy)
        except TelegramError as exc:
            log.warning("could not tell the user the ledger is failing: %s", exc)
