"""Every word a user or operator reads. Plain text (no parse mode), short, with a next step.

No text here ever carries an HTTP status, a provider's error or a stack trace.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from ..core.alerts import AlertKind
from ..core.jobs import Job, JobState, Reason
from ..core.options import Adjustment, VideoOptions
from ..core.stats import Stats

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
NOT_AN_IMAGE_FILE = "That file isn't an image. Please send a photo, or a JPEG/PNG image as a file."
IMAGE_TOO_LARGE = (
    "That image is too large (over 20 MB). Send it as a photo instead, or as a file under 20 MB."
)
GROUP_NEEDS_PHOTO = "Send /warmth as the caption of a photo, or as a reply to a photo."
KEYBOARD_PROMPT = "Choose the quality and length, then press Generate."

COMMAND_START = "How to use the bot"
COMMAND_HELP = "What to send"
COMMAND_WARMTH = "Make a video (caption of a photo, or reply to one)"

GENERATE_LABEL = "🎬 Generate"
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

PROGRESS_QUEUED = "⏳ Starting your video — it usually takes about a minute."
PROGRESS_PROCESSING = "🎬 Generating your video — usually about a minute."
PROGRESS_GROUP = "🎬 Generating the video — usually about a minute."

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


def stats(summary: Stats) -> str:
    return "\n".join(
        [
            "📊 Jobs",
            f"Last 24 h: {_counts(summary.today)}",
            f"Last 7 days: {_counts(summary.week)}",
            f"Generate → video: median {_seconds(summary.median_seconds)}, "
            f"p95 {_seconds(summary.p95_seconds)}",
            f"Ended without a video (7 days): {_counts(summary.failures)}",
            f"Active now: {summary.active}",
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
