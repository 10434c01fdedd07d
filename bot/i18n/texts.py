"""Every word a user or operator reads. Plain text (no parse mode), short, with a next step.

No text here ever carries an HTTP status, a provider's error or a stack trace.
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

#: The language a text is rendered in when nobody chose one (a language tag: en, pt_BR…).
FALLBACK_LANGUAGE = "en"


def _(lang: str, message: str) -> str:
    """The translation of ``message`` into ``lang`` (extracted by Babel as keyword ``_:2``).

    Until the gettext catalogues land this returns the English message unchanged.
    """
    return message


def _n(lang: str, singular: str, plural: str, count: int) -> str:
    """The plural form of a message for ``count`` (Babel keyword ``_n:2,3``)."""
    return singular if count == 1 else plural


START = (
    "Send me a photo of one or more people and I'll turn it into a short video of "
    'Jesus embracing them ("Warmth of Jesus").\n\n'
    "Then pick the quality and length and press Generate. A video takes about a minute."
)
GROUP_HELP = (
    "In a group, send a photo with the caption /warmth, or reply /warmth to a photo. "
    "Only the person who asked can use the buttons."
)
NOT_A_PHOTO = "Please send a photo (or an image file) and I'll make the video from it."
NOT_AN_IMAGE_FILE = (
    "That file isn't an image. Please send a photo, or an image (JPEG, PNG, WEBP…) as a file."
)
IMAGE_TOO_LARGE = (
    "That image is too large (over 20 MB). Send it as a photo instead, or as a file under 20 MB."
)
GROUP_NEEDS_PHOTO = "Send /warmth as the caption of a photo, or as a reply to a photo."
KEYBOARD_PROMPT = "Choose the quality and length, then press Generate."

COMMAND_START = "How to use the bot"
COMMAND_HELP = "What to send"
COMMAND_WARMTH = "Make a video (caption of a photo, or reply to one)"

GENERATE_LABEL = "🎬 Generate"
CHANGE_OPTIONS_LABEL = "⚙️ Change options"
RETRY_LABEL = "🔁 Try again"
STYLE_LABEL_PREFIX = "🎨 Style: "
CHOSEN_MARK = "✅ "

# Callback answers (≤ 200 characters, shown as a toast).
ANSWER_STARTED = "Starting your video…"
ANSWER_ALREADY_STARTED = "Already on it — your video is on its way."
ANSWER_NOT_YOURS = "Only the person who asked for this video can use these buttons."
ANSWER_STALE = "This button has expired. Please send the photo again."
ANSWER_INVALID = "That button doesn't work any more. Please send the photo again."
ANSWER_NOT_ALLOWED = "Sorry, this bot is private."
ANSWER_CHAT_NOT_ALLOWED = "Sorry, this bot isn't enabled in this group."
ANSWER_INVOICE_SENT = "Invoice sent: pay it to start your video."
ANSWER_INVOICE_FAILED = "Sorry, I couldn't send the invoice just now. Please press Generate again."
ANSWER_AWAITING_PAYMENT = "Your invoice is waiting: pay it to start, or change the options."
ANSWER_OPTIONS_AGAIN = "Choose again; the earlier invoice no longer pays for this video."

COMMAND_PAYSUPPORT = "Help with a payment"
COMMAND_TERMS = "Terms: what you pay for, refunds"

# Telegram Stars invoices: title ≤ 32 characters, description ≤ 255.
INVOICE_TITLE = "Warmth of Jesus video"
INVOICE_PRICE_LABEL = "Video"
PAYMENT_RECEIVED = "⭐ Payment received. Starting your video…"
PAYMENT_HELD = (
    "⭐ Payment received. I can't save it this very moment; your video starts as soon as I "
    "can (or the Stars come back). No need to pay again."
)

VIDEO_CAPTION = "✨ Warmth of Jesus"

_STYLE_NAMES: dict[str | None, str] = {
    None: "none",
    "anime": "anime",
    "3d_animation": "3D",
    "clay": "clay",
    "comic": "comic",
    "cyberpunk": "cyberpunk",
}

_OUTCOMES: dict[Reason, str] = {
    Reason.CONTENT: (
        "Sorry, this photo couldn't be turned into a video (it may have been blocked by the "
        "service's content rules). Please try another photo."
    ),
    Reason.BAD_INPUT: (
        "Sorry, the video service couldn't use this photo. Please try another photo."
    ),
    Reason.SERVICE_UNAVAILABLE: (
        "Sorry, the video service is unavailable right now. The bot's operator has been "
        "told; please try again later."
    ),
    Reason.BUSY: (
        "The video service is busy right now, so your video wasn't started. "
        "Please press Try again in a minute."
    ),
    Reason.PHOTO_TOO_BIG: IMAGE_TOO_LARGE,
    Reason.PHOTO_UNAVAILABLE: (
        "I couldn't download this photo from Telegram. Please send it again."
    ),
    Reason.CONNECTION_LOST: (
        "The connection broke while your video was being started, so I can't tell whether "
        "it started. Press Try again to start it again."
    ),
    Reason.DEADLINE: (
        "Sorry, this video is taking far longer than usual, so I've stopped waiting for it. "
        "Please send the photo again."
    ),
    Reason.RESULT_EXPIRED: (
        "Sorry, this video has expired before I could send it. Please send the photo again."
    ),
}


def generate_label(price: int) -> str:
    """The Generate button, with the price when videos are paid for."""
    return f"{GENERATE_LABEL} · ⭐ {price}" if price > 0 else GENERATE_LABEL


def invoice_description(options: VideoOptions) -> str:
    return (
        f"A {duration_label(options.duration)}, {options.quality} video of Jesus embracing "
        f"the people in your photo (style {style_name(options.style)}). If it can't be "
        "made, your Stars are refunded automatically."
    )


def awaiting_payment(options: VideoOptions, price: int) -> str:
    return (
        f"Pay ⭐ {price} with the invoice below to start your video "
        f"({options.quality}, {duration_label(options.duration)}, style "
        f"{style_name(options.style)}). To change the options first, press Change options."
    )


_PRECHECKOUT: dict[PreCheckout, str] = {
    PreCheckout.UNKNOWN: "This invoice is no longer valid. Please send the photo again.",
    PreCheckout.STALE: "The options changed since this invoice: please pay the newest one.",
    PreCheckout.ALREADY_PAID: "This video is already paid for.",
    PreCheckout.WRONG_AMOUNT: "The price changed: please press Generate again.",
    PreCheckout.NOT_YOURS: "Only the person who asked for this video can pay for it.",
    PreCheckout.TOO_MANY_ACTIVE: "You have too many videos being made. Pay once one arrives.",
    PreCheckout.DAILY_LIMIT: "You've reached today's limit of videos. Please try tomorrow.",
}


def precheckout_refusal(verdict: PreCheckout) -> str:
    """Why a payment is refused, shown by Telegram in the payment form (short)."""
    return _PRECHECKOUT[verdict]


_REFUND_REASONS: dict[RefundReason, str] = {
    RefundReason.JOB_ENDED: "your video couldn't be made",
    RefundReason.ALREADY_PAID: "this video was already paid for",
    RefundReason.NOT_PAYABLE: "that invoice no longer paid for a video",
    RefundReason.OPERATOR: "refunded by the bot's operator",
}


def refunded(payment: Payment) -> str:
    reason = _REFUND_REASONS.get(payment.refund_reason or RefundReason.OPERATOR, "")
    return f"⭐ {payment.amount} refunded: {reason}. The Stars are back in your balance."


_REFUND_STATES = {
    RefundState.NONE: "paid",
    RefundState.DUE: "refund on its way",
    RefundState.DONE: "refunded",
}


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def paysupport(support_text: str, payments: Sequence[Payment]) -> str:
    """/paysupport: the operator's words, then the user's own payments."""
    if not payments:
        return f"{support_text}\n\nYou have no payments with this bot yet."
    lines = [support_text, "", "Your latest payments:"]
    for payment in payments:
        when = payment.refunded_at if payment.refund is RefundState.DONE else payment.paid_at
        lines.append(
            f"⭐ {payment.amount} · {_utc(payment.paid_at)} · "
            f"{_REFUND_STATES[payment.refund]}"
            + (f" {_utc(when)}" if payment.refund is RefundState.DONE and when else "")
            + f"\n   charge id: {payment.charge_id}"
        )
    return "\n".join(lines)


def terms(prices: Sequence[tuple[str, int, int]], free_videos: int) -> str:
    """/terms: what is sold, at what price, and the refund rule."""
    if not prices or all(stars == 0 for _, _, stars in prices):
        price_text = "Videos are free."
    else:
        listed = "; ".join(
            f"{quality} {duration_label(duration)}: ⭐ {stars}"
            for quality, duration, stars in prices
        )
        price_text = f"Prices per video: {listed}."
        if free_videos > 0:
            price_text += f" Your first {free_videos} video(s) are free."
    return (
        "What you buy: one short video made from your photo by Segmind's \"Warmth of "
        'Jesus" effect, delivered in this chat.\n'
        f"{price_text}\n"
        "Refunds: if a paid video can't be made or delivered, the full price is refunded "
        "in Stars automatically. For anything else about a payment, use /paysupport."
    )


def refund_command(result: str, charge_id: str) -> str:
    """The operator's /refund answer."""
    return {
        "usage": "Usage: /refund <telegram_payment_charge_id>",
        "unknown": f"No payment with charge id {charge_id}.",
        "queued": f"Refund of {charge_id} is on its way.",
        "due": f"A refund of {charge_id} is already on its way.",
        "done": f"{charge_id} was refunded already.",
    }[result]


def style_name(style: str | None) -> str:
    return _STYLE_NAMES.get(style, style or "none")


def duration_label(seconds: int) -> str:
    return f"{seconds} s"


def adjustment_note(adjustment: Adjustment) -> str | None:
    """The toast that explains an option the bot changed on its own."""
    if adjustment is Adjustment.DURATION_SHORTENED:
        return "1080p is available only for 5 s videos, so the length is now 5 s."
    if adjustment is Adjustment.QUALITY_LOWERED:
        return "8 s videos go up to 720p, so the quality is now 720p."
    return None


def keyboard_caption(options: VideoOptions) -> str:
    return (
        f"{KEYBOARD_PROMPT}\n\nNow: {options.quality}, {duration_label(options.duration)}, "
        f"style {style_name(options.style)}."
    )


def outcome(job: Job) -> str:
    """What the user reads when a job ended without a video."""
    if job.state is JobState.TIMED_OUT:
        return _OUTCOMES[Reason.DEADLINE]
    if job.state is JobState.EXPIRED:
        return _OUTCOMES[Reason.RESULT_EXPIRED]
    if job.state is JobState.FAILED:
        return _OUTCOMES[Reason.CONTENT]
    if job.state is JobState.UNCERTAIN:
        return _OUTCOMES[Reason.CONNECTION_LOST]
    return _OUTCOMES.get(job.reason or Reason.BUSY, _OUTCOMES[Reason.BUSY])


def video_link(url: str, expires_at: float) -> str:
    minutes = max(1, int((expires_at - time.time()) // 60))
    return (
        "Your video is ready, but it's too large to send here. Download it from this link "
        f"(it works for about {minutes} more minutes):\n{url}"
    )


def too_many_active(limit: int) -> str:
    return (
        f"You already have {limit} video(s) being made. Please wait for one to arrive, "
        "then press Generate again."
    )


def daily_limit(limit: int, resets_in_seconds: float) -> str:
    hours, rest = divmod(int(max(0, resets_in_seconds)), 3600)
    minutes = rest // 60
    return (
        f"You've reached today's limit of {limit} videos. It resets at midnight UTC "
        f"(in {hours} h {minutes} min)."
    )


def not_allowed_user() -> str:
    return "Sorry, this bot is private and can't make videos for you."


#: A photo, button or payment the ledger could not record (disk full, read-only).
LEDGER_BUSY = "The bot can't save your request right now. Please try again in a minute."


# -- operators --------------------------------------------------------------------

_ALERTS: dict[AlertKind, str] = {
    AlertKind.KEY_REJECTED: "⚠️ Segmind rejected the API key (401/403). New jobs are refused until "
    "SEGMIND_API_KEY is fixed.",
    AlertKind.OUT_OF_CREDITS: "⚠️ Segmind says the account is out of credits (406). New jobs are "
    "refused until credits are added.",
    AlertKind.SEGMIND_DOWN: "⚠️ Segmind has been failing (server errors or timeouts) for several "
    "minutes. Jobs keep retrying until their deadline.",
    AlertKind.TELEGRAM_REFUSING: "⚠️ Telegram is limiting the bot (flood control for 30 s or "
    "more). Deliveries wait and go out when it lifts.",
    AlertKind.UNKNOWN_CHARGE: "⚠️ Telegram lists Stars payments this bot's ledger doesn't "
    "have. Their charge ids are in the log; check them with /refund if they need a refund.",
    AlertKind.REFUND_STUCK: "⚠️ A Stars refund has been due for over an hour (or Telegram "
    "refuses it). Charge ids are in the log; users wait for their Stars.",
    AlertKind.SUBMIT_LOST: "⚠️ A job's submit to Segmind got no answer and Segmind's request "
    f"history didn't list it within {HISTORY_LOOKUP_SECONDS / 60:g} minutes. The job is "
    "marked uncertain and its user offered Try again; Segmind may still have charged for "
    "it. The job ids and seeds are "
    "in the log: look them up in Segmind's console.",
    AlertKind.LEDGER_FAILING: "⚠️ The bot can't use its ledger (DATABASE_PATH): the disk is "
    "full, the file is read-only, or it was deleted or replaced (then the bot stops). Users "
    "are asked to try again in a minute. The log says which.",
}


def alert(kind: AlertKind, *, resolved: bool = False) -> str:
    """An operator alert, or the line saying it is over."""
    if resolved:
        return f"✅ Resolved: {kind.value.replace('_', ' ')}."
    return _ALERTS[kind]


def _counts(counter: Mapping[str, int]) -> str:
    if not counter:
        return "none"
    total = sum(counter.values())
    parts = ", ".join(f"{state} {count}" for state, count in sorted(counter.items()))
    return f"{total} ({parts})"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} s"


def stars_line(label: str, taken: int, refunded: int) -> str:
    return f"Stars {label}: ⭐ {taken} taken, ⭐ {refunded} refunded, ⭐ {taken - refunded} net"


def stats(summary: Stats, stars: Sequence[str] = ()) -> str:
    return "\n".join(
        [
            "📊 Jobs",
            f"Last 24 h: {_counts(summary.today)}",
            f"Last 7 days: {_counts(summary.week)}",
            f"Generate → video: median {_seconds(summary.median_seconds)}, "
            f"p95 {_seconds(summary.p95_seconds)}",
            f"Ended without a video (7 days): {_counts(summary.failures)}",
            f"Active now: {summary.active}",
            *stars,
        ]
    )


def jobs_list(jobs: Sequence[Job]) -> str:
    if not jobs:
        return "No jobs yet."
    lines = ["Last jobs (newest first):"]
    for job in jobs:
        started = time.strftime("%m-%d %H:%M", time.gmtime(job.generate_at or job.created_at))
        reason = f" ({job.reason.value})" if job.reason else ""
        lines.append(
            f"{job.short_id} {started} user {job.user_id} {job.options.quality}/"
            f"{job.options.duration}s {job.state.value}{reason}"
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
        words += " · " + style_name(options.style)
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
    return _(lang, "{date} UTC").format(date=time.strftime("%d %b %H:%M", time.gmtime(timestamp)))


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
