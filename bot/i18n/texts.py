"""Every word a user or operator reads, as functions of a language tag (``en``, ``pt_BR``…).

Plain text (no parse mode), short, with a next step; no text here ever carries an HTTP
status, a provider's error or a stack trace. Each literal is wrapped in ``_(lang, …)`` or
``_n(lang, singular, plural, count)``: Babel extracts them (keywords ``_:2`` and
``_n:2,3``, ``make i18n``) into ``locale/bot.pot``, and :mod:`bot.i18n.catalogues` looks
them up in the language's catalogue when the text is built — never at import, so one
process speaks every language. Placeholders are ``str.format`` names (``{price}``), the
same in every language; a broken translation falls back to English.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from ..core.alerts import AlertKind
from ..core.jobs import Job, JobState, Reason
from ..core.options import Adjustment, VideoOptions
from ..core.payments import Payment, PreCheckout, RefundReason, RefundState
from ..core.progress import Progress, Status
from ..core.stats import Stats
from ..core.tracker import HISTORY_LOOKUP_SECONDS
from .catalogues import LANGUAGE_NAMES, catalogue

#: The language a text is rendered in when nobody chose one (a language tag: en, pt_BR…).
FALLBACK_LANGUAGE = "en"


def _(lang: str, message: str) -> str:
    """The translation of ``message`` into ``lang`` (extracted by Babel as keyword ``_:2``).

    English (the message itself) when ``lang`` has no catalogue or no valid translation.
    """
    return catalogue(lang).gettext(message)


def _n(lang: str, singular: str, plural: str, count: int) -> str:
    """The plural form of a message for ``count`` (Babel keyword ``_n:2,3``, ngettext)."""
    return catalogue(lang).ngettext(singular, plural, count)


# -- talking to users ---------------------------------------------------------------


def start(lang: str) -> str:
    return "\n\n".join(
        [
            _(
                lang,
                "Send me a photo of one or more people and I'll turn it into a short video of "
                'Jesus embracing them ("Warmth of Jesus").\n\n'
                "Then pick the quality and length and press Generate. A video takes about a "
                "minute.",
            ),
            language_hint(lang),
        ]
    )


def language_hint(lang: str) -> str:
    """Under /start and /help: how to change the language (in the current one)."""
    return _(lang, "🌐 /language changes the language I speak.")


def group_help(lang: str) -> str:
    return "\n\n".join(
        [
            _(
                lang,
                "In a group, send a photo with the caption /warmth, or reply /warmth to a "
                "photo. Only the person who asked can use the buttons.",
            ),
            language_hint(lang),
        ]
    )


def not_a_photo(lang: str) -> str:
    return _(lang, "Please send a photo (or an image file) and I'll make the video from it.")


def not_an_image_file(lang: str) -> str:
    return _(
        lang,
        "That file isn't an image. Please send a photo, or an image (JPEG, PNG, WEBP…) as a file.",
    )


def image_too_large(lang: str) -> str:
    return _(
        lang,
        "That image is too large (over 20 MB). Send it as a photo instead, or as a file under "
        "20 MB.",
    )


def group_needs_photo(lang: str) -> str:
    return _(lang, "Send /warmth as the caption of a photo, or as a reply to a photo.")


def keyboard_prompt(lang: str) -> str:
    return _(lang, "Choose the quality and length, then press Generate.")


def command_start(lang: str) -> str:
    return _(lang, "How to use the bot")


def command_help(lang: str) -> str:
    return _(lang, "What to send")


def command_warmth(lang: str) -> str:
    return _(lang, "Make a video (caption of a photo, or reply to one)")


def command_paysupport(lang: str) -> str:
    return _(lang, "Help with a payment")


def command_terms(lang: str) -> str:
    return _(lang, "Terms: what you pay for, refunds")


def command_language(lang: str) -> str:
    return _(lang, "Choose the language")


def bot_description(lang: str) -> str:
    """What an empty chat with the bot shows (Telegram allows 512 characters)."""
    return _(
        lang,
        "Send a photo of the people you love and I'll make a short video of Jesus embracing "
        'them, with Segmind\'s "Warmth of Jesus" effect. Pick the quality and length, press '
        "Generate, and the video arrives in about a minute.",
    )


def bot_short_description(lang: str) -> str:
    """The bot's profile line and share text (Telegram allows 120 characters)."""
    return _(lang, "Turn a photo into a short video of Jesus embracing the people in it.")


def generate_label(lang: str, price: int) -> str:
    """The Generate button, with the price when videos are paid for."""
    if price > 0:
        return _(lang, "🎬 Generate · ⭐ {price}").format(price=price)
    return _(lang, "🎬 Generate")


def change_options_label(lang: str) -> str:
    return _(lang, "⚙️ Change options")


def retry_label(lang: str) -> str:
    return _(lang, "🔁 Try again")


def style_label(lang: str, style: str | None) -> str:
    return _(lang, "🎨 Style: {style}").format(style=style_name(lang, style))


#: Put before the option that is chosen now.
CHOSEN_MARK = "✅ "


# Callback answers (≤ 200 characters, shown as a toast).


def answer_started(lang: str) -> str:
    return _(lang, "Starting your video…")


def answer_already_started(lang: str) -> str:
    return _(lang, "Already on it — your video is on its way.")


def answer_not_yours(lang: str) -> str:
    return _(lang, "Only the person who asked for this video can use these buttons.")


def answer_stale(lang: str) -> str:
    return _(lang, "This button has expired. Please send the photo again.")


def answer_invalid(lang: str) -> str:
    return _(lang, "That button doesn't work any more. Please send the photo again.")


def answer_not_allowed(lang: str) -> str:
    return _(lang, "Sorry, this bot is private.")


def answer_chat_not_allowed(lang: str) -> str:
    return _(lang, "Sorry, this bot isn't enabled in this group.")


def answer_invoice_sent(lang: str) -> str:
    return _(lang, "Invoice sent: pay it to start your video.")


def answer_invoice_failed(lang: str) -> str:
    return _(lang, "Sorry, I couldn't send the invoice just now. Please press Generate again.")


def answer_awaiting_payment(lang: str) -> str:
    return _(lang, "Your invoice is waiting: pay it to start, or change the options.")


def answer_options_again(lang: str) -> str:
    return _(lang, "Choose again; the earlier invoice no longer pays for this video.")


# Telegram Stars invoices: title ≤ 32 characters, description ≤ 255.


def invoice_title(lang: str) -> str:
    return _(lang, "Warmth of Jesus video")


def invoice_price_label(lang: str) -> str:
    return _(lang, "Video")


def invoice_description(lang: str, options: VideoOptions) -> str:
    return _(
        lang,
        "A {duration}, {quality} video of Jesus embracing the people in your photo (style "
        "{style}). If it can't be made, your Stars are refunded automatically.",
    ).format(
        duration=duration_label(options.duration),
        quality=options.quality,
        style=style_name(lang, options.style),
    )


def payment_received(lang: str) -> str:
    return _(lang, "⭐ Payment received. Starting your video…")


def payment_held(lang: str) -> str:
    return _(
        lang,
        "⭐ Payment received. I can't save it this very moment; your video starts as soon as "
        "I can (or the Stars come back). No need to pay again.",
    )


def video_caption(lang: str) -> str:
    return _(lang, "✨ Warmth of Jesus")


def style_name(lang: str, style: str | None) -> str:
    names = {
        None: _(lang, "none"),
        "anime": _(lang, "anime"),
        "3d_animation": _(lang, "3D"),
        "clay": _(lang, "clay"),
        "comic": _(lang, "comic"),
        "cyberpunk": _(lang, "cyberpunk"),
    }
    return names.get(style, style or names[None])


def duration_label(seconds: int) -> str:
    """``5 s``: the same in every language (the buttons' contract)."""
    return f"{seconds} s"


def _outcome_text(lang: str, reason: Reason) -> str:
    if reason is Reason.CONTENT:
        return _(
            lang,
            "Sorry, this photo couldn't be turned into a video (it may have been blocked by "
            "the service's content rules). Please try another photo.",
        )
    if reason is Reason.BAD_INPUT:
        return _(
            lang, "Sorry, the video service couldn't use this photo. Please try another photo."
        )
    if reason is Reason.SERVICE_UNAVAILABLE:
        return _(
            lang,
            "Sorry, the video service is unavailable right now. The bot's operator has been "
            "told; please try again later.",
        )
    if reason is Reason.PHOTO_TOO_BIG:
        return image_too_large(lang)
    if reason is Reason.PHOTO_UNAVAILABLE:
        return _(lang, "I couldn't download this photo from Telegram. Please send it again.")
    if reason is Reason.PHOTO_UNUSABLE:
        return photo_unusable(lang)
    if reason is Reason.CONNECTION_LOST:
        return _(
            lang,
            "The connection broke while your video was being started, so I can't tell "
            "whether it started. Press Try again to start it again.",
        )
    if reason is Reason.DEADLINE:
        return _(
            lang,
            "Sorry, this video is taking far longer than usual, so I've stopped waiting for "
            "it. Please send the photo again.",
        )
    if reason is Reason.RESULT_EXPIRED:
        return _(
            lang,
            "Sorry, this video has expired before I could send it. Please send the photo again.",
        )
    return _(
        lang,
        "The video service is busy right now, so your video wasn't started. Please press Try "
        "again in a minute.",
    )


def outcome(lang: str, job: Job) -> str:
    """What the user reads when a job ended without a video."""
    if job.state is JobState.TIMED_OUT:
        return _outcome_text(lang, Reason.DEADLINE)
    if job.state is JobState.EXPIRED:
        return _outcome_text(lang, Reason.RESULT_EXPIRED)
    if job.state is JobState.FAILED:
        return _outcome_text(lang, Reason.CONTENT)
    if job.state is JobState.UNCERTAIN:
        return _outcome_text(lang, Reason.CONNECTION_LOST)
    return _outcome_text(lang, job.reason or Reason.BUSY)


def awaiting_payment(lang: str, options: VideoOptions, price: int) -> str:
    return _(
        lang,
        "Pay ⭐ {price} with the invoice below to start your video ({quality}, {duration}, "
        "style {style}). To change the options first, press Change options.",
    ).format(
        price=price,
        quality=options.quality,
        duration=duration_label(options.duration),
        style=style_name(lang, options.style),
    )


def precheckout_refusal(lang: str, verdict: PreCheckout) -> str:
    """Why a payment is refused, shown by Telegram in the payment form (short)."""
    if verdict is PreCheckout.STALE:
        return _(lang, "The options changed since this invoice: please pay the newest one.")
    if verdict is PreCheckout.ALREADY_PAID:
        return _(lang, "This video is already paid for.")
    if verdict is PreCheckout.WRONG_AMOUNT:
        return _(lang, "The price changed: please press Generate again.")
    if verdict is PreCheckout.NOT_YOURS:
        return _(lang, "Only the person who asked for this video can pay for it.")
    if verdict is PreCheckout.TOO_MANY_ACTIVE:
        return _(lang, "You have too many videos being made. Pay once one arrives.")
    if verdict is PreCheckout.DAILY_LIMIT:
        return _(lang, "You've reached today's limit of videos. Please try tomorrow.")
    return _(lang, "This invoice is no longer valid. Please send the photo again.")


def refunded(lang: str, payment: Payment) -> str:
    reason = payment.refund_reason or RefundReason.OPERATOR
    if reason is RefundReason.JOB_ENDED:
        text = _(
            lang,
            "⭐ {amount} refunded: your video couldn't be made. The Stars are back "
            "in your balance.",
        )
    elif reason is RefundReason.ALREADY_PAID:
        text = _(
            lang,
            "⭐ {amount} refunded: this video was already paid for. The Stars are "
            "back in your balance.",
        )
    elif reason is RefundReason.NOT_PAYABLE:
        text = _(
            lang,
            "⭐ {amount} refunded: that invoice no longer paid for a video. The "
            "Stars are back in your balance.",
        )
    else:
        text = _(
            lang, "⭐ {amount} refunded by the bot's operator. The Stars are back in your balance."
        )
    return text.format(amount=payment.amount)


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def default_paysupport(lang: str) -> str:
    """``PAYSUPPORT_TEXT``'s default (the English text is the setting's default)."""
    return _(
        lang,
        "Questions about a payment? Write here and an operator will answer. "
        "Paid videos that can't be made are refunded automatically.",
    )


def _payment_state(lang: str, payment: Payment) -> str:
    if payment.refund is RefundState.DUE:
        return _(lang, "refund on its way")
    if payment.refund is RefundState.DONE:
        when = payment.refunded_at
        if when:
            return _(lang, "refunded {when}").format(when=_utc(when))
        return _(lang, "refunded")
    return _(lang, "paid")


def paysupport(lang: str, support_text: str | None, payments: Sequence[Payment]) -> str:
    """/paysupport: the operator's words (None: the default's), then the user's payments."""
    support = default_paysupport(lang) if support_text is None else support_text
    if not payments:
        return f"{support}\n\n" + _(lang, "You have no payments with this bot yet.")
    lines = [support, "", _(lang, "Your latest payments:")]
    for payment in payments:
        lines.append(
            f"⭐ {payment.amount} · {_utc(payment.paid_at)} · {_payment_state(lang, payment)}\n   "
            + _(lang, "charge id: {charge_id}").format(charge_id=payment.charge_id)
        )
    return "\n".join(lines)


def terms(lang: str, prices: Sequence[tuple[str, int, int]], free_videos: int) -> str:
    """/terms: what is sold, at what price, and the refund rule."""
    if not prices or all(stars == 0 for _quality, _duration, stars in prices):
        price_text = _(lang, "Videos are free.")
    else:
        listed = "; ".join(
            f"{quality} {duration_label(duration)}: ⭐ {stars}"
            for quality, duration, stars in prices
        )
        price_text = _(lang, "Prices per video: {listed}.").format(listed=listed)
        if free_videos > 0:
            price_text += " " + _n(
                lang,
                "You get {n} free video before prices apply.",
                "You get {n} free videos before prices apply.",
                free_videos,
            ).format(n=free_videos)
    return "\n".join(
        [
            _(
                lang,
                "What you buy: one short video made from your photo by Segmind's \"Warmth of "
                'Jesus" effect, delivered in this chat.',
            ),
            price_text,
            _(
                lang,
                "Refunds: if a paid video can't be made or delivered, the full price is "
                "refunded in Stars automatically. For anything else about a payment, use "
                "/paysupport.",
            ),
        ]
    )


def adjustment_note(lang: str, adjustment: Adjustment) -> str | None:
    """The toast that explains an option the bot changed on its own."""
    if adjustment is Adjustment.DURATION_SHORTENED:
        return _(lang, "1080p is available only for 5 s videos, so the length is now 5 s.")
    if adjustment is Adjustment.QUALITY_LOWERED:
        return _(lang, "8 s videos go up to 720p, so the quality is now 720p.")
    return None


def keyboard_caption(lang: str, options: VideoOptions) -> str:
    now = _(lang, "Now: {quality}, {duration}, style {style}.").format(
        quality=options.quality,
        duration=duration_label(options.duration),
        style=style_name(lang, options.style),
    )
    return f"{keyboard_prompt(lang)}\n\n{now}"


def video_link(lang: str, url: str, expires_at: float) -> str:
    minutes = max(1, int((expires_at - time.time()) // 60))
    return _n(
        lang,
        "Your video is ready, but it's too large to send here. Download it from this link "
        "(it works for about {n} more minute):\n{url}",
        "Your video is ready, but it's too large to send here. Download it from this link "
        "(it works for about {n} more minutes):\n{url}",
        minutes,
    ).format(n=minutes, url=url)


def too_many_active(lang: str, limit: int) -> str:
    return _n(
        lang,
        "You already have {n} video being made. Please wait for it to arrive, then press "
        "Generate again.",
        "You already have {n} videos being made. Please wait for one to arrive, then press "
        "Generate again.",
        limit,
    ).format(n=limit)


def daily_limit(lang: str, limit: int, resets_in_seconds: float) -> str:
    hours, rest = divmod(int(max(0, resets_in_seconds)), 3600)
    minutes = rest // 60
    return _n(
        lang,
        "You've reached today's limit of {n} video. It resets at midnight UTC (in {hours} h "
        "{minutes} min).",
        "You've reached today's limit of {n} videos. It resets at midnight UTC (in {hours} h "
        "{minutes} min).",
        limit,
    ).format(n=limit, hours=hours, minutes=minutes)


def not_allowed_user(lang: str) -> str:
    return _(lang, "Sorry, this bot is private and can't make videos for you.")


def ledger_busy(lang: str) -> str:
    """A photo, button or payment the ledger could not record (disk full, read-only)."""
    return _(lang, "The bot can't save your request right now. Please try again in a minute.")


# -- choosing the language ------------------------------------------------------------


def language_prompt(lang: str) -> str:
    return _(lang, "🌐 Choose the language I speak with you:")


def language_name(language: str) -> str:
    """A language in its own name (never translated: the reader looks for their own)."""
    return LANGUAGE_NAMES.get(language, language)


def language_chosen(lang: str) -> str:
    """Said in the newly chosen language."""
    return _(lang, "✅ Done! I'll speak English with you from now on.")


def answer_unknown_language(lang: str) -> str:
    return _(lang, "That language isn't available. Send /language to see the choices.")


# -- operators (in DEFAULT_LANGUAGE) --------------------------------------------------


def refund_command(lang: str, result: str, charge_id: str) -> str:
    """The operator's /refund answer."""
    if result == "usage":
        return _(lang, "Usage: /refund <telegram_payment_charge_id>")
    if result == "unknown":
        text = _(lang, "No payment with charge id {charge_id}.")
    elif result == "queued":
        text = _(lang, "Refund of {charge_id} is on its way.")
    elif result == "due":
        text = _(lang, "A refund of {charge_id} is already on its way.")
    else:
        text = _(lang, "{charge_id} was refunded already.")
    return text.format(charge_id=charge_id)


def _alert_text(lang: str, kind: AlertKind) -> str:
    if kind is AlertKind.KEY_REJECTED:
        return _(
            lang,
            "⚠️ Segmind rejected the API key (401/403). New jobs are refused until "
            "SEGMIND_API_KEY is fixed.",
        )
    if kind is AlertKind.OUT_OF_CREDITS:
        return _(
            lang,
            "⚠️ Segmind says the account is out of credits (406). New jobs are refused until "
            "credits are added.",
        )
    if kind is AlertKind.SEGMIND_DOWN:
        return _(
            lang,
            "⚠️ Segmind has been failing (server errors or timeouts) for several minutes. "
            "Jobs keep retrying until their deadline.",
        )
    if kind is AlertKind.TELEGRAM_REFUSING:
        return _(
            lang,
            "⚠️ Telegram is limiting the bot (flood control for 30 s or more). Deliveries "
            "wait and go out when it lifts.",
        )
    if kind is AlertKind.UNKNOWN_CHARGE:
        return _(
            lang,
            "⚠️ Telegram lists Stars payments this bot's ledger doesn't have. Their charge "
            "ids are in the log; check them with /refund if they need a refund.",
        )
    if kind is AlertKind.REFUND_STUCK:
        return _(
            lang,
            "⚠️ A Stars refund has been due for over an hour (or Telegram refuses it). "
            "Charge ids are in the log; users wait for their Stars.",
        )
    if kind is AlertKind.SUBMIT_LOST:
        return _(
            lang,
            "⚠️ A job's submit to Segmind got no answer and Segmind's request history didn't "
            "list it within {minutes} minutes. The job is marked uncertain and its user "
            "offered Try again; Segmind may still have charged for it. The job ids and seeds "
            "are in the log: look them up in Segmind's console.",
        ).format(minutes=f"{HISTORY_LOOKUP_SECONDS / 60:g}")
    return _(
        lang,
        "⚠️ The bot can't use its ledger (DATABASE_PATH): the disk is full, the file is "
        "read-only, or it was deleted or replaced (then the bot stops). Users are asked to "
        "try again in a minute. The log says which.",
    )


def alert(lang: str, kind: AlertKind, *, resolved: bool = False) -> str:
    """An operator alert, or the line saying it is over."""
    if resolved:
        return _(lang, "✅ Resolved: {what}.").format(what=kind.value.replace("_", " "))
    return _alert_text(lang, kind)


def _counts(lang: str, counter: Mapping[str, int]) -> str:
    if not counter:
        return _(lang, "none")
    total = sum(counter.values())
    parts = ", ".join(f"{state} {count}" for state, count in sorted(counter.items()))
    return f"{total} ({parts})"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} s"


def period_label(lang: str, days: int) -> str:
    """``24 h`` for one day, else ``N days``: the periods /stats reports."""
    if days == 1:
        return _(lang, "24 h")
    return _n(lang, "{n} day", "{n} days", days).format(n=days)


def stars_line(lang: str, label: str, taken: int, refunded: int) -> str:
    return _(
        lang, "Stars {period}: ⭐ {taken} taken, ⭐ {refunded} refunded, ⭐ {net} net"
    ).format(period=label, taken=taken, refunded=refunded, net=taken - refunded)


def stats(lang: str, summary: Stats, stars: Sequence[str] = ()) -> str:
    return "\n".join(
        [
            _(lang, "📊 Jobs"),
            _(lang, "Last 24 h: {counts}").format(counts=_counts(lang, summary.today)),
            _(lang, "Last 7 days: {counts}").format(counts=_counts(lang, summary.week)),
            _(lang, "Generate → video: median {median}, p95 {p95}").format(
                median=_seconds(summary.median_seconds), p95=_seconds(summary.p95_seconds)
            ),
            _(lang, "Ended without a video (7 days): {counts}").format(
                counts=_counts(lang, summary.failures)
            ),
            _(lang, "Active now: {active}").format(active=summary.active),
            *stars,
        ]
    )


def jobs_list(lang: str, jobs: Sequence[Job]) -> str:
    if not jobs:
        return _(lang, "No jobs yet.")
    lines = [_(lang, "Last jobs (newest first):")]
    for job in jobs:
        started = time.strftime("%m-%d %H:%M", time.gmtime(job.generate_at or job.created_at))
        reason = f" ({job.reason.value})" if job.reason else ""
        lines.append(
            _(lang, "{job} {started} user {user} {options} {state}").format(
                job=job.short_id,
                started=started,
                user=job.user_id,
                options=f"{job.options.quality}/{job.options.duration}s",
                state=f"{job.state.value}{reason}",
            )
        )
    return "\n".join(lines)


# -- after the video: Again, Options, /history, Share --


def command_history(lang: str) -> str:
    return _(lang, "Your recent videos")


def again_label(lang: str) -> str:
    return _(lang, "🔁 Again")


def options_label(lang: str) -> str:
    return _(lang, "⚙️ Options")


def share_label(lang: str) -> str:
    return _(lang, "📤 Share")


def older_label(lang: str) -> str:
    return _(lang, "« Older")


def newer_label(lang: str) -> str:
    return _(lang, "Newer »")


def resend_label(lang: str, number: int) -> str:
    """The /history button that sends the video of line ``number`` again."""
    return _(lang, "▶️ {number}").format(number=number)


def options_words(lang: str, options: VideoOptions) -> str:
    """Options in a few words: "540p · 5 s", with the style when there is one."""
    words = f"{options.quality} · {duration_label(options.duration)}"
    if options.style is not None:
        words += " · " + style_name(lang, options.style)
    return words


def again_status(lang: str, options: VideoOptions) -> str:
    """The status message of an "Again" job, replying to the photo (then edited)."""
    return _(lang, "🔁 Another video from this photo ({options}).").format(
        options=options_words(lang, options)
    )


def answer_again_started(lang: str) -> str:
    return _(lang, "Making another video from the same photo…")


def answer_again_before(lang: str) -> str:
    return _(
        lang,
        "You already asked for another video from this one. Press Again under the newest "
        "video for one more.",
    )


def answer_again_gone(lang: str) -> str:
    return _(lang, "This button has expired. Please send the photo again.")


def answer_again_invoice_failed(lang: str) -> str:
    return _(lang, "Sorry, I couldn't send the invoice just now. Please press Again once more.")


def answer_options_shown(lang: str) -> str:
    return _(lang, "Choose the options for this photo.")


def answer_options_used(lang: str) -> str:
    return _(
        lang,
        "You already made a video from this one with new options. Use the buttons under "
        "that video.",
    )


def answer_resent(lang: str) -> str:
    return _(lang, "Here it is again.")


def answer_resend_gone(lang: str) -> str:
    return _(
        lang,
        "That video can't be sent again from here. If you still have the photo, send it "
        "and I'll make a new one.",
    )


def answer_history_gone(lang: str) -> str:
    return _(lang, "This list is out of date. Send /history again.")


_HISTORY_MARKS: dict[JobState, str] = {
    JobState.DELIVERED: "✅",
    JobState.FAILED: "❌",
    JobState.EXPIRED: "❌",
    JobState.TIMED_OUT: "❌",
    JobState.REJECTED: "❌",
    JobState.UNCERTAIN: "❌",
    JobState.UNDELIVERABLE: "❌",
}


def history_state(lang: str, state: JobState) -> str:
    """A job's state in plain words (each literal marked, so Babel extracts it)."""
    making = _(lang, "being made")
    failed = _(lang, "couldn't be made")
    return {
        JobState.DRAFT: _(lang, "not started"),
        JobState.AWAITING_PAYMENT: _(lang, "waiting for payment"),
        JobState.PREPARING: making,
        JobState.SUBMITTING: making,
        JobState.QUEUED: making,
        JobState.PROCESSING: making,
        JobState.COMPLETED: _(lang, "being sent"),
        JobState.DELIVERED: _(lang, "sent"),
        JobState.FAILED: failed,
        JobState.EXPIRED: _(lang, "not sent in time"),
        JobState.TIMED_OUT: _(lang, "took too long"),
        JobState.REJECTED: failed,
        JobState.UNCERTAIN: _(lang, "lost on the way"),
        JobState.UNDELIVERABLE: _(lang, "couldn't be sent"),
    }[state]


def history_when(lang: str, timestamp: float, now: float) -> str:
    """When a job started, as people say it: "5 min ago", "3 h ago", else the UTC date."""
    seconds = max(0, int(now - timestamp))
    if seconds < 60:
        return _(lang, "just now")
    if seconds < 3600:
        minutes = seconds // 60
        return _n(lang, "{n} min ago", "{n} min ago", minutes).format(n=minutes)
    if seconds < 86_400:
        hours = seconds // 3600
        return _n(lang, "{n} hour ago", "{n} hours ago", hours).format(n=hours)
    # Numbers only: month names would stay English in every language.
    date = time.strftime("%Y-%m-%d %H:%M", time.gmtime(timestamp))
    return _(lang, "{date} UTC").format(date=date)


def history(lang: str, jobs: Sequence[Job], now: float, *, in_group: bool) -> str:
    """/history: one numbered line per job, newest first; the buttons match the numbers."""
    if not jobs:
        if in_group:
            return _(lang, "You haven't made any videos in this group yet.")
        return _(lang, "You haven't made any videos yet. Send me a photo to make your first.")
    if in_group:
        title = _(lang, "Your videos in this group (for all of them, send me /history privately):")
    else:
        title = _(lang, "Your videos, newest first:")
    lines = [title]
    for number, job in enumerate(jobs, start=1):
        mark = _HISTORY_MARKS.get(job.state, "⏳")
        when = history_when(lang, job.generate_at or job.created_at, now)
        lines.append(
            f"{number}. {mark} {history_state(lang, job.state)} · "
            f"{options_words(lang, job.options)} · {when}"
        )
    if any(job.state is JobState.DELIVERED and job.video_file_id for job in jobs):
        lines.append("")
        lines.append(_(lang, "Press a number to get that video again (free)."))
    return "\n".join(lines)


def share_title(lang: str, options: VideoOptions) -> str:
    """An inline result's title: what the video is."""
    return _(lang, "Warmth of Jesus · {options}").format(options=options_words(lang, options))


def share_description(lang: str, timestamp: float, now: float) -> str:
    return _(lang, "Made {when}").format(when=history_when(lang, timestamp, now))


def share_none(lang: str) -> str:
    """Above the empty inline results: opens the private chat to make a first video."""
    return _(lang, "No videos yet: make one from a photo")


# -- progress --


def _so_far(lang: str, seconds: int) -> str:
    """The status message's clock (already coarse: 10 s steps, then whole minutes)."""
    if seconds < 60:
        return _n(lang, "{n} s so far", "{n} s so far", seconds).format(n=seconds)
    minutes = seconds // 60
    return _n(lang, "{n} min so far", "{n} min so far", minutes).format(n=minutes)


def _usually(lang: str, seconds: int) -> str:
    if seconds < 90:
        return _n(lang, "usually about {n} s", "usually about {n} s", seconds).format(n=seconds)
    minutes = round(seconds / 60)
    return _n(lang, "usually about {n} min", "usually about {n} min", minutes).format(n=minutes)


def _took(lang: str, seconds: int) -> str:
    if seconds < 90:
        return _n(lang, "made in {n} s", "made in {n} s", seconds).format(n=seconds)
    minutes = round(seconds / 60)
    return _n(lang, "made in {n} min", "made in {n} min", minutes).format(n=minutes)


def progress(lang: str, status: Status, options: VideoOptions) -> str:
    """The job's status message, one line: what is happening, the time so far, what
    such a video usually takes; once the video is there, a summary of it."""
    if status.progress is Progress.DONE:
        ready = _(lang, "✅ Ready: {quality}, {duration}")
        parts = [ready.format(quality=options.quality, duration=duration_label(options.duration))]
        if status.elapsed is not None:
            parts.append(_took(lang, status.elapsed))
        return " · ".join(parts)
    if status.progress is Progress.SENDING:
        return _(lang, "📤 Sending your video…")
    if status.progress is Progress.QUEUED:
        parts = [_(lang, "⏳ Waiting for its turn")]
    else:
        parts = [_(lang, "🎬 Making your video")]
    if status.elapsed:
        parts.append(_so_far(lang, status.elapsed))
    if status.usual:
        parts.append(_usually(lang, status.usual))
    return " · ".join(parts)


# -- photos prepared on arrival --


def image_too_small(lang: str) -> str:
    return _(
        lang,
        "This image is too small to make a video from (its short side needs at least 128 "
        "pixels). Please send a bigger photo.",
    )


def image_unreadable(lang: str) -> str:
    return _(
        lang,
        "I can't open this file as a picture: it may be damaged, or a drawing or document "
        "(SVG, PDF). Please send a photo, or a JPEG, PNG, WEBP or HEIC image as a file.",
    )


def image_too_many_pixels(lang: str) -> str:
    return _(
        lang,
        "This image has too many pixels for me to open as a file. Please send it as a "
        "photo instead (Telegram makes it smaller), or a smaller image.",
    )


def photo_download_failed(lang: str) -> str:
    return _(lang, "I couldn't download this image from Telegram just now. Please send it again.")


def photo_unusable(lang: str) -> str:
    """A job whose photo turned out unusable when it was prepared (nothing was charged)."""
    return _(
        lang,
        "Sorry, I couldn't make a video from this image: it's damaged, too small, or not a "
        "photo. Please send another photo.",
    )


# -- refunds of charges the ledger lacks --


def refund_unrecorded(lang: str, charge_id: str, user_id: int | None) -> str:
    """/refund of a charge the ledger lacks but Telegram lists."""
    return _(
        lang,
        "{charge_id} was not in the ledger; Telegram lists it as paid by user {user_id}."
        " Its refund is on its way.",
    ).format(charge_id=charge_id, user_id=user_id)


def refund_lookup_failed(lang: str, charge_id: str) -> str:
    """/refund of a charge the ledger lacks, while Telegram's list cannot be read."""
    return _(
        lang,
        "{charge_id} is not in the ledger, and Telegram's list of payments cannot be read"
        " right now. Try again in a minute.",
    ).format(charge_id=charge_id)
