"""One benchmark round: the fakes in this process, the real bot as a child process.

Users are played through FakeTelegram (each its own private chat): send a photo, wait
for the keyboard that replies to it, think, press Generate, wait for the video. Every
time below is ``time.monotonic()`` in this process — the fakes record theirs with the same
clock — so latencies compare timestamps taken on both sides of the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.segmind import TEST_API_KEY, FakeJob
from tests.fakes.telegram import SEND_METHODS, TEST_TOKEN, Call, FakeTelegram, UploadedFile

from .fakes import BenchSegmind
from .measure import ProcSample, max_in_window, peak_overlap, percentile, proc_sample

__all__ = [
    "REPO",
    "BenchConfig",
    "BotRound",
    "BaselineRound",
    "VideoCheck",
    "run_bot_round",
    "run_baseline_round",
    "run_video_check",
]

REPO = Path(__file__).resolve().parent.parent

#: Settings the bot reads; any of them in this shell's environment is dropped first.
_BOT_SETTINGS = (
    "TELEGRAM_BOT_TOKEN",
    "SEGMIND_API_KEY",
    "TELEGRAM_API_URL",
    "SEGMIND_API_URL",
    "SEGMIND_UPLOAD_URL",
    "SEGMIND_HISTORY_URL",
    "DATABASE_PATH",
    "POLL_INTERVAL_SECONDS",
    "IMAGE_URL_MODE",
    "ADMIN_IDS",
    "LOG_LEVEL",
    "JOB_DEADLINE_MINUTES",
    "ALLOWED_USER_IDS",
    "ALLOWED_CHAT_IDS",
    "MAX_ACTIVE_JOBS_PER_USER",
    "DAILY_JOBS_PER_USER",
)
#: Bot API methods the fake counts as messages (sends and edits; its flood-limit set).
MESSAGE_METHODS = SEND_METHODS
_WATCH_EVERY = 0.005
_TAIL_SECONDS = 1.5
_READY_TIMEOUT = 30.0
_STOP_TIMEOUT = 20.0
_MEASURED_PHOTO_BASE = 40_000
_WARMUP_PHOTO_BASE = 30_000
_CHECK_PHOTO_BASE = 20_000
_WARMUP_USER_BASE = 10_000_000
_CHECK_USER_BASE = 20_000_000


@dataclass(frozen=True)
class BenchConfig:
    scale: float = 1.0
    #: The real-world POLL_INTERVAL_SECONDS; the bot gets ``poll_interval * scale``.
    poll_interval: float = 2.0
    queued_seconds: float = 3.0
    processing_range: tuple[float, float] = (45.0, 55.0)
    warmup_jobs: int = 5
    think_seconds: float = 1.0
    #: Photos arrive this many a second (0: all at once), unless ``ramp_seconds`` is set.
    #: Each photo costs one message (its keyboard) and Telegram allows ~30 a second, so
    #: a faster stream of photos only measures Telegram's queue.
    arrival_rate: float = 25.0
    ramp_seconds: float = 0.0
    video_bytes: int = 1_000_000
    seed: int = 7
    keep_dirs: bool = False
    #: The folder holding the ``bot`` package to run (default: this checkout), e.g. a
    #: ``git archive <commit> bot | tar -x -C DIR`` export, to compare versions.
    bot_source: Path = REPO
    #: When set, the bot runs under bench.sampler and leaves ``bot-<label>.txt`` here.
    profile_dir: Path | None = None

    def ramp_for(self, users: int) -> float:
        """Seconds over which a round's ``users`` photos arrive."""
        if self.ramp_seconds or not self.arrival_rate:
            return self.ramp_seconds
        return users / self.arrival_rate

    @property
    def bot_interval(self) -> float:
        return self.poll_interval * self.scale

    @property
    def baseline_interval(self) -> float:
        return 1.0 * self.scale

    def longest_job(self) -> float:
        return (self.queued_seconds + self.processing_range[1]) * self.scale


_T0 = time.monotonic()


def say(text: str) -> None:
    """A progress line on stderr (the table goes to stdout)."""
    print(f"bench [{time.monotonic() - _T0:6.1f}s] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- users


@dataclass
class User:
    user_id: int
    photo_size: int
    photo_file_id: str | None = None
    photo_at: float = math.nan
    keyboard_at: float = math.nan
    keyboard_message_id: int | None = None
    generate_data: str | None = None
    press_at: float = math.nan
    video_at: float = math.nan
    video_size: int | None = None
    videos: int = 0
    #: When each video arrived and the buttons under it (their data names the job).
    video_calls: list[tuple[float, str]] = field(default_factory=list)
    outcome_text: str | None = None
    failure: str | None = None
    #: The id of the Generate press (a callback query), to find its answer.
    query_id: str | None = None
    keyboard_seen: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


def _callback_data(call: Call) -> list[str]:
    """The callback data of every button under the message a call sent, in order."""
    markup = call.params.get("reply_markup")
    rows = markup.get("inline_keyboard") or [] if isinstance(markup, dict) else []
    return [
        data
        for row in rows
        for button in row
        if isinstance(button, dict) and isinstance(data := button.get("callback_data"), str)
    ]


def _generate_button(call: Call) -> str | None:
    return next((data for data in _callback_data(call) if data.startswith("g:")), None)


class CallWatcher:
    """Routes the fake's recorded calls to the users they concern, as they arrive."""

    def __init__(self, telegram: FakeTelegram) -> None:
        self._telegram = telegram
        self._cursor = 0
        self.users: dict[int, User] = {}

    def scan(self) -> None:
        calls = self._telegram.calls
        while self._cursor < len(calls):
            call = calls[self._cursor]
            self._cursor += 1
            method = call.method.lower()
            alert = str(call.params.get("show_alert", "")).lower() in ("true", "1")
            if method == "answercallbackquery" and call.ok and alert:
                # An alert answering Generate: refused (a limit, "try again"); no job.
                query = str(call.params.get("callback_query_id"))
                pressed = next((u for u in self.users.values() if u.query_id == query), None)
                if pressed is not None and pressed.outcome_text is None:
                    pressed.outcome_text = str(call.params.get("text", ""))[:120]
                    pressed.finished.set()
                continue
            user = self.users.get(call.chat_id) if call.chat_id is not None else None
            if user is None or not call.ok:
                continue
            if method == "sendmessage" and user.keyboard_message_id is None:
                data = _generate_button(call)
                if data is not None:
                    user.keyboard_at = call.at
                    user.keyboard_message_id = int(call.result["message_id"])
                    user.generate_data = data
                    user.keyboard_seen.set()
                    continue
                if math.isnan(user.press_at):
                    # A text answer to the photo instead of the keyboard (a refusal, or
                    # "try again" from a ledger that could not take the update).
                    user.outcome_text = str(call.params.get("text", ""))[:120]
                    user.keyboard_seen.set()
                    user.finished.set()
                    continue
            if method == "sendvideo":
                user.videos += 1
                user.video_calls.append((call.at, " ".join(_callback_data(call))))
                if user.videos == 1:
                    user.video_at = call.at
                    video = call.params.get("video")
                    if isinstance(video, UploadedFile):
                        user.video_size = video.size
                user.finished.set()
            elif method == "sendmessage" and not math.isnan(user.press_at):
                # A text outcome instead of the video (a link, a refusal, a failure).
                user.outcome_text = str(call.params.get("text", ""))[:120]
                user.finished.set()

    async def run(self) -> None:
        while True:
            self.scan()
            await asyncio.sleep(_WATCH_EVERY)


async def _drive(
    telegram: FakeTelegram, user: User, *, delay: float, think: float, deadline: float
) -> None:
    """One user's whole visit; failures are recorded on the user, never raised."""
    if delay > 0:
        await asyncio.sleep(delay)
    uid = user.user_id
    user.photo_at = time.monotonic()
    photo = telegram.send_photo(uid, uid, size_bytes=user.photo_size)
    user.photo_file_id = str(photo["photo"][-1]["file_id"])
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            await user.keyboard_seen.wait()
            if user.outcome_text is not None:
                return  # answered with text instead of the keyboard: nothing to press
            await asyncio.sleep(think)
            message_id, data = user.keyboard_message_id, user.generate_data
            if message_id is None or data is None:
                raise RuntimeError("keyboard seen without its Generate button")
            user.press_at = time.monotonic()
            user.query_id = telegram.press_button(uid, uid, message_id, data)
            await user.finished.wait()
    except TimeoutError:
        stage = "keyboard" if user.keyboard_message_id is None else "video"
        user.failure = f"timed out waiting for the {stage} (photo {photo['message_id']})"


async def play_users(
    telegram: FakeTelegram,
    watcher: CallWatcher,
    users: Sequence[User],
    *,
    think: float,
    ramp: float,
    within: float,
) -> None:
    for user in users:
        watcher.users[user.user_id] = user
    deadline = time.monotonic() + within
    step = ramp / len(users) if users else 0.0
    await asyncio.gather(
        *(
            _drive(telegram, user, delay=index * step, think=think, deadline=deadline)
            for index, user in enumerate(users)
        )
    )


# --------------------------------------------------------------------------- the bot process


@dataclass
class BotProcess:
    telegram: FakeTelegram
    segmind: BenchSegmind
    process: asyncio.subprocess.Process
    folder: Path
    log_path: Path
    watcher: CallWatcher

    @property
    def pid(self) -> int:
        return self.process.pid

    def sample(self) -> ProcSample:
        return proc_sample(self.pid)

    def log_problems(self) -> list[str]:
        """Lines of the bot's log at ERROR or with a traceback (LOG_LEVEL=WARNING)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if "ERROR" in line or "Traceback" in line]

    def log_warnings(self) -> dict[str, int]:
        """WARNING lines of the bot's log, counted by message (ids and numbers masked)."""
        counts: dict[str, int] = {}
        for line in self.log_path.read_text(errors="replace").splitlines():
            if "WARNING" not in line:
                continue
            message = line.split("WARNING", 1)[1]
            message = re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?", "#", message).strip(" :-")[:160]
            counts[message] = counts.get(message, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))


def bot_environment(
    telegram: FakeTelegram,
    segmind: BenchSegmind,
    database: Path,
    interval: float,
    source: Path = REPO,
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _BOT_SETTINGS}
    env.update(
        {
            "TELEGRAM_BOT_TOKEN": TEST_TOKEN,
            "SEGMIND_API_KEY": TEST_API_KEY,
            "TELEGRAM_API_URL": telegram.url,
            "SEGMIND_API_URL": segmind.url,
            "SEGMIND_UPLOAD_URL": segmind.upload_url,
            "SEGMIND_HISTORY_URL": segmind.history_url,
            "DATABASE_PATH": str(database),
            "POLL_INTERVAL_SECONDS": f"{interval:g}",
            "MAX_ACTIVE_JOBS_PER_USER": "100000",
            "DAILY_JOBS_PER_USER": "0",
            "LOG_LEVEL": os.environ.get("BENCH_BOT_LOG_LEVEL", "WARNING"),
            # The bot package from ``source`` first; bench.sampler from this checkout.
            "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(source), str(REPO)])),
        }
    )
    return env


def bot_module(send_log: Path | None = None) -> list[str]:
    """``-m bot``, or the bot under ``bench.sendlog`` writing its requests to Segmind."""
    if send_log is None:
        return ["-m", "bot"]
    return ["-m", "bench.sendlog", str(send_log), "-m", "bot"]


async def _stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


@contextlib.asynccontextmanager
async def bot_process(
    config: BenchConfig,
    *,
    queued_seconds: float,
    processing_range: tuple[float, float],
    label: str,
    send_log: Path | None = None,
) -> AsyncIterator[BotProcess]:
    """Both fakes started here, the bot started against them; all stopped on exit.

    ``send_log``: the bot writes each request to Segmind there as it leaves
    (``bench/sendlog.py``)."""
    folder = Path(tempfile.mkdtemp(prefix=f"warmth-bench-{label}-"))
    telegram = FakeTelegram(keep_uploads_up_to=0)
    segmind = BenchSegmind(
        queued_seconds=queued_seconds,
        processing_range=processing_range,
        rng=random.Random(config.seed),
        video_size=config.video_bytes,
    )
    await telegram.start()
    await segmind.start()
    watcher = CallWatcher(telegram)
    watch_task = asyncio.create_task(watcher.run(), name="call-watcher")
    log_path = folder / "bot.log"
    env = bot_environment(
        telegram,
        segmind,
        folder / "data" / "bot.sqlite3",
        config.bot_interval,
        config.bot_source,
    )
    process: asyncio.subprocess.Process | None = None
    try:
        with log_path.open("wb") as log_file:
            profile: list[str] = []
            if config.profile_dir is not None:
                config.profile_dir.mkdir(parents=True, exist_ok=True)
                target = config.profile_dir.resolve() / f"bot-{label}.txt"
                profile = ["-m", "bench.sampler", str(target)]
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *profile,
                *bot_module(send_log),
                cwd=folder,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )
        running = BotProcess(telegram, segmind, process, folder, log_path, watcher)
        await _wait_ready(running)
        say(f"{label}: bot started (pid {process.pid})")
        yield running
    finally:
        if process is not None:
            await _stop_process(process)
            say(f"{label}: bot stopped (exit {process.returncode})")
        watch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch_task
        await telegram.stop()
        await segmind.stop()
        if not config.keep_dirs:
            shutil.rmtree(folder, ignore_errors=True)


async def _wait_ready(bot: BotProcess) -> None:
    """Until the bot starts polling (deleteWebhook comes after post_init resumed the ledger).

    Its first getUpdates is a long poll, recorded by the fake only when it returns.
    """
    deadline = time.monotonic() + _READY_TIMEOUT
    while not bot.telegram.calls_of("deleteWebhook"):
        if bot.process.returncode is not None or time.monotonic() > deadline:
            tail = bot.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the bot did not start (exit {bot.process.returncode}):\n{tail}")
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- results


@dataclass
class BotRound:
    users: int
    warmup_jobs: int
    seconds: float
    peak_active: int
    delivered: int
    duplicates: int
    failures: list[str]
    photo_to_keyboard_ms: list[float]
    generate_to_submit_ms: list[float]
    completed_to_video_s: list[float]
    polls: list[int]
    result_fetches: list[int]
    segmind_requests: int
    segmind_rate_mean: float
    segmind_rate_max: int
    cpu_seconds: float
    rss_start_mb: float
    peak_rss_mb: float
    telegram_calls_max: int
    telegram_messages_max: int
    chat_messages_max: int
    chat_calls_max: int
    telegram_chat_bound_max: int
    telegram_errors: int
    telegram_methods: dict[str, int]
    log_problems: list[str]
    log_warnings: dict[str, int]
    bench_cpu_seconds: float
    #: Where the time goes: stage name -> seconds per user, from the press of Generate
    #: ("generate.*") or from the moment the job became COMPLETED ("completed.*").
    stages: dict[str, list[float]] = field(default_factory=dict)
    keyboards_span_s: float = math.nan

    @property
    def lost(self) -> int:
        return self.users - self.delivered

    def summary(self) -> dict[str, Any]:
        def p(values: Sequence[float], q: float) -> float:
            return round(percentile(values, q), 3)

        return {
            "users": self.users,
            "warmup_jobs": self.warmup_jobs,
            "seconds": round(self.seconds, 1),
            "peak_active": self.peak_active,
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "failures": self.failures[:10],
            "photo_to_keyboard_ms": {
                "p50": p(self.photo_to_keyboard_ms, 50),
                "p95": p(self.photo_to_keyboard_ms, 95),
                "max": p(self.photo_to_keyboard_ms, 100),
            },
            "generate_to_submit_ms": {
                "p50": p(self.generate_to_submit_ms, 50),
                "p95": p(self.generate_to_submit_ms, 95),
                "max": p(self.generate_to_submit_ms, 100),
            },
            "completed_to_video_s": {
                "p50": p(self.completed_to_video_s, 50),
                "p95": p(self.completed_to_video_s, 95),
                "max": p(self.completed_to_video_s, 100),
            },
            "polls_mean": round(statistics.fmean(self.polls), 2) if self.polls else None,
            "polls_max": max(self.polls, default=0),
            "result_fetches_mean": (
                round(statistics.fmean(self.result_fetches), 2) if self.result_fetches else None
            ),
            "segmind_requests": self.segmind_requests,
            "segmind_rate_mean": round(self.segmind_rate_mean, 1),
            "segmind_rate_max": self.segmind_rate_max,
            "cpu_seconds": round(self.cpu_seconds, 2),
            "cpu_per_job": round(self.cpu_seconds / max(1, self.users), 4),
            "rss_start_mb": round(self.rss_start_mb, 1),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "telegram_calls_max": self.telegram_calls_max,
            "telegram_messages_max": self.telegram_messages_max,
            "chat_messages_max": self.chat_messages_max,
            "chat_calls_max": self.chat_calls_max,
            "telegram_chat_bound_max": self.telegram_chat_bound_max,
            "telegram_errors": self.telegram_errors,
            "telegram_methods": self.telegram_methods,
            "log_problems": self.log_problems[:10],
            "log_warnings": dict(list(self.log_warnings.items())[:15]),
            "keyboards_span_s": round(self.keyboards_span_s, 2),
            "stages_p50_p95_s": {
                name: [p(values, 50), p(values, 95), len(values)]
                for name, values in self.stages.items()
            },
            "bench_process_cpu_seconds": round(self.bench_cpu_seconds, 1),
        }


def _job_owners(segmind: BenchSegmind, database: Path) -> dict[int, FakeJob]:
    """Each user's Segmind job, through the bot's ledger (user id → request id). The
    re-hosted image no longer tells: the bot prepares every photo into a new JPEG."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT user_id, request_id FROM jobs WHERE request_id IS NOT NULL")
        by_request = {str(request_id): int(user_id) for user_id, request_id in rows}
    return {
        by_request[job.request_id]: job
        for job in segmind.jobs.values()
        if job.request_id in by_request
    }


def _telegram_rates(calls: Sequence[Call]) -> tuple[int, int, int, int, int]:
    """Max calls in any 1 s window: all, messages, chat-bound; per chat: messages, all."""
    calls = [call for call in calls if call.method.lower() != "getupdates"]
    messages = [call for call in calls if call.method.lower() in MESSAGE_METHODS]
    per_chat_messages: dict[int, list[float]] = {}
    per_chat_calls: dict[int, list[float]] = {}
    for call in calls:
        if call.chat_id is None:
            continue
        per_chat_calls.setdefault(call.chat_id, []).append(call.at)
        if call.method.lower() in MESSAGE_METHODS:
            per_chat_messages.setdefault(call.chat_id, []).append(call.at)
    return (
        max_in_window(call.at for call in calls),
        max_in_window(call.at for call in messages),
        max((max_in_window(times) for times in per_chat_messages.values()), default=0),
        max((max_in_window(times) for times in per_chat_calls.values()), default=0),
        max_in_window(call.at for call in calls if "chat_id" in call.params),
    )


async def _quiet(telegram: FakeTelegram, *, for_seconds: float = 2.0, limit: float = 60.0) -> None:
    """Until the bot has made no Bot API call but getUpdates for ``for_seconds`` (its
    trailing status clean-ups are counted too), or ``limit`` seconds have passed."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        calls = [call for call in telegram.calls if call.method.lower() != "getupdates"]
        last = max((call.at for call in calls[-200:]), default=0.0)
        if time.monotonic() - last >= for_seconds:
            return
        await asyncio.sleep(0.1)


def _first_after(times: Sequence[float], start: float) -> float | None:
    later = [at for at in times if at >= start]
    return min(later) if later else None


def _stages(
    users: Sequence[User],
    owners: dict[int, FakeJob],
    calls: Sequence[Call],
    requests: Sequence[tuple[float, str, str, int]],
) -> dict[str, list[float]]:
    """Split Generate→submit and COMPLETED→sendVideo into the steps the bot takes.

    Telegram times are request arrivals at the fake; Segmind times are when the fake
    finished answering (its requests_log).
    """
    by_chat: dict[tuple[int | None, str], list[float]] = {}
    by_file: dict[str, float] = {}
    for call in calls:
        by_chat.setdefault((call.chat_id, call.method.lower()), []).append(call.at)
        if call.method.lower() == "getfile":
            by_file.setdefault(str(call.params.get("file_id")), call.at)
    by_path: dict[str, list[float]] = {}
    for at, _method, path, _status in requests:
        by_path.setdefault(path, []).append(at)
    stages: dict[str, list[float]] = {}

    def add(name: str, start: float, end: float | None) -> None:
        if end is not None and not math.isnan(start):
            stages.setdefault(name, []).append(end - start)

    for user in users:
        uid, press = user.user_id, user.press_at
        add(
            "generate.answerCallbackQuery",
            press,
            _first_after(by_chat.get((uid, "answercallbackquery"), []), press),
        )
        add(
            "generate.status_edit",
            press,
            _first_after(by_chat.get((uid, "editmessagetext"), []), press),
        )
        add("generate.getFile", press, by_file.get(user.photo_file_id or ""))
        job = owners.get(uid)
        if job is None:
            continue
        add("generate.submit", press, job.submitted_at)
        done = job.finished_at
        rid = job.request_id
        add(
            "completed.status_poll_saw_it",
            done,
            _first_after(by_path.get(f"/v2/requests/{rid}/status", []), done),
        )
        add(
            "completed.result_get",
            done,
            _first_after(by_path.get(f"/v2/requests/{rid}", []), done),
        )
        add(
            "completed.video_downloaded",
            done,
            _first_after(by_path.get(f"/outputs/{rid}.mp4", []), done),
        )
        add(
            "completed.sendChatAction",
            done,
            _first_after(by_chat.get((uid, "sendchataction"), []), done),
        )
        add("completed.sendVideo", done, None if math.isnan(user.video_at) else user.video_at)
    return stages


def _users(count: int, user_base: int, photo_base: int) -> list[User]:
    return [User(user_base + index, photo_base + index) for index in range(count)]


def _round_timeout(config: BenchConfig, users: int) -> float:
    return 120.0 + 0.3 * users + 3 * config.longest_job()


async def run_bot_round(config: BenchConfig, users: int) -> BotRound:
    """Warm the ledger up, then drive ``users`` users at once; measure that round."""
    low, high = config.processing_range
    async with bot_process(
        config,
        queued_seconds=config.queued_seconds * config.scale,
        processing_range=(low * config.scale, high * config.scale),
        label=f"n{users}",
    ) as bot:
        telegram, segmind = bot.telegram, bot.segmind
        # Warm-up: the bot learns job times from its ledger (3+ completed jobs of the
        # same quality and length); these jobs give it that history.
        warm = _users(config.warmup_jobs, _WARMUP_USER_BASE, _WARMUP_PHOTO_BASE)
        await play_users(
            telegram,
            bot.watcher,
            warm,
            think=config.think_seconds,
            ramp=0.0,
            within=_round_timeout(config, len(warm)),
        )
        warm_failures = [
            f"warm-up {user.user_id}: {user.failure}" for user in warm if user.failure
        ]
        if warm_failures or any(user.videos == 0 for user in warm):
            raise RuntimeError(f"warm-up failed: {warm_failures or 'no video'}")
        say(f"n{users}: warm-up of {len(warm)} jobs done")
        await asyncio.sleep(_TAIL_SECONDS)

        measured = _users(users, 1, _MEASURED_PHOTO_BASE)
        calls_before = len(telegram.calls)
        log_before = len(segmind.requests_log)
        before = bot.sample()
        bench_before = proc_sample()
        started = time.monotonic()
        await play_users(
            telegram,
            bot.watcher,
            measured,
            think=config.think_seconds,
            ramp=config.ramp_for(users),
            within=_round_timeout(config, users),
        )
        await _quiet(telegram)
        ended = time.monotonic()
        say(f"n{users}: measured round done in {ended - started:.1f}s")
        after = bot.sample()
        bench_cpu = proc_sample().cpu_seconds - bench_before.cpu_seconds
        bot.watcher.scan()

        owners = _job_owners(segmind, bot.folder / "data" / "bot.sqlite3")
        jobs = [owners[user.user_id] for user in measured if user.user_id in owners]
        photo_ms = [
            (u.keyboard_at - u.photo_at) * 1000 for u in measured if not math.isnan(u.keyboard_at)
        ]
        submit_ms = [
            (owners[u.user_id].submitted_at - u.press_at) * 1000
            for u in measured
            if u.user_id in owners
        ]
        to_video = [
            u.video_at - owners[u.user_id].finished_at
            for u in measured
            if u.user_id in owners and not math.isnan(u.video_at)
        ]
        active = [
            (owners[u.user_id].submitted_at, u.video_at)
            for u in measured
            if u.user_id in owners and not math.isnan(u.video_at)
        ]
        requests = [entry[0] for entry in segmind.requests_log[log_before:]]
        span = (max(requests) - min(requests)) if len(requests) > 1 else 0.0
        calls = telegram.calls[calls_before:]
        rates = _telegram_rates(calls)
        methods: dict[str, int] = {}
        for call in calls:
            methods[call.method] = methods.get(call.method, 0) + 1
        keyboards = [u.keyboard_at for u in measured if not math.isnan(u.keyboard_at)]
        failures = [f"{u.user_id}: {u.failure}" for u in measured if u.failure]
        failures += [f"{u.user_id}: got {u.outcome_text!r}" for u in measured if u.outcome_text]
        return BotRound(
            users=users,
            warmup_jobs=len(warm),
            seconds=ended - started,
            peak_active=peak_overlap(active),
            delivered=sum(1 for u in measured if u.videos > 0),
            duplicates=sum(u.videos - 1 for u in measured if u.videos > 1),
            failures=failures,
            photo_to_keyboard_ms=photo_ms,
            generate_to_submit_ms=submit_ms,
            completed_to_video_s=to_video,
            polls=[job.status_polls for job in jobs],
            result_fetches=[job.result_fetches for job in jobs],
            segmind_requests=len(requests),
            segmind_rate_mean=len(requests) / span if span > 0 else math.nan,
            segmind_rate_max=max_in_window(requests),
            cpu_seconds=after.cpu_seconds - before.cpu_seconds,
            rss_start_mb=before.rss_mb,
            peak_rss_mb=after.peak_rss_mb,
            telegram_calls_max=rates[0],
            telegram_messages_max=rates[1],
            chat_messages_max=rates[2],
            chat_calls_max=rates[3],
            telegram_chat_bound_max=rates[4],
            telegram_errors=sum(1 for call in calls if not call.ok),
            telegram_methods=dict(sorted(methods.items())),
            log_problems=bot.log_problems(),
            log_warnings=bot.log_warnings(),
            stages=_stages(measured, owners, calls, segmind.requests_log[log_before:]),
            keyboards_span_s=(max(keyboards) - min(keyboards) if len(keyboards) > 1 else math.nan),
            bench_cpu_seconds=bench_cpu,
        )


# --------------------------------------------------------------------------- 45 MB video


@dataclass
class VideoCheck:
    video_bytes: int
    delivered_bytes: int | None
    rss_before_mb: float
    peak_before_mb: float
    rss_after_mb: float
    peak_after_mb: float

    @property
    def peak_rise_mb(self) -> float:
        return self.peak_after_mb - self.peak_before_mb

    def summary(self) -> dict[str, Any]:
        return {
            "video_bytes": self.video_bytes,
            "delivered_bytes": self.delivered_bytes,
            "rss_before_mb": round(self.rss_before_mb, 1),
            "peak_before_mb": round(self.peak_before_mb, 1),
            "rss_after_mb": round(self.rss_after_mb, 1),
            "peak_after_mb": round(self.peak_after_mb, 1),
            "peak_rise_mb": round(self.peak_rise_mb, 1),
        }


async def run_video_check(config: BenchConfig, size: int = 45 * 1024 * 1024) -> VideoCheck:
    """One ordinary delivery, then one ``size``-byte video: how far peak RSS rises.

    Job times are short here (0.2 s queued, 1 s processing): this is about memory.
    """
    async with bot_process(
        config, queued_seconds=0.2, processing_range=(1.0, 1.0), label="video"
    ) as bot:
        small, large = _users(2, _CHECK_USER_BASE, _CHECK_PHOTO_BASE)
        timeout = _round_timeout(config, 1)
        await play_users(bot.telegram, bot.watcher, [small], think=0.0, ramp=0.0, within=timeout)
        if small.videos == 0:
            raise RuntimeError(f"video check: first video not delivered ({small.failure})")
        await asyncio.sleep(_TAIL_SECONDS)
        before = bot.sample()
        bot.segmind.video_size = size
        await play_users(bot.telegram, bot.watcher, [large], think=0.0, ramp=0.0, within=timeout)
        await asyncio.sleep(_TAIL_SECONDS)
        after = bot.sample()
        bot.watcher.scan()
        if large.videos == 0:
            raise RuntimeError(
                f"video check: large video not delivered ({large.failure or large.outcome_text})"
            )
        return VideoCheck(
            video_bytes=size,
            delivered_bytes=large.video_size,
            rss_before_mb=before.rss_mb,
            peak_before_mb=before.peak_rss_mb,
            rss_after_mb=after.rss_mb,
            peak_after_mb=after.peak_rss_mb,
        )


# --------------------------------------------------------------------------- baseline


@dataclass
class BaselineRound:
    jobs: int
    completed: int
    errors: int
    polls: list[int]
    result_fetches: list[int]
    completed_to_result_s: list[float]
    segmind_requests: int
    segmind_rate_mean: float
    segmind_rate_max: int
    cpu_seconds: float
    peak_rss_mb: float
    peak_active: int
    raw: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "completed": self.completed,
            "errors": self.errors,
            "polls_mean": round(statistics.fmean(self.polls), 2) if self.polls else None,
            "polls_max": max(self.polls, default=0),
            "completed_to_result_s": {
                "p50": round(percentile(self.completed_to_result_s, 50), 3),
                "p95": round(percentile(self.completed_to_result_s, 95), 3),
            },
            "segmind_requests": self.segmind_requests,
            "segmind_rate_mean": round(self.segmind_rate_mean, 1),
            "segmind_rate_max": self.segmind_rate_max,
            "cpu_seconds": round(self.cpu_seconds, 2),
            "cpu_per_job": round(self.cpu_seconds / max(1, self.jobs), 4),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "peak_active": self.peak_active,
            "raw": self.raw,
        }


async def run_baseline_round(config: BenchConfig, jobs: int) -> BaselineRound:
    """The SDK-style loop (bench/baseline.py) as its own process, against a fresh fake."""
    low, high = config.processing_range
    segmind = BenchSegmind(
        queued_seconds=config.queued_seconds * config.scale,
        processing_range=(low * config.scale, high * config.scale),
        rng=random.Random(config.seed),
        video_size=config.video_bytes,
    )
    await segmind.start()
    folder = Path(tempfile.mkdtemp(prefix="warmth-bench-baseline-"))
    try:
        env = {key: value for key, value in os.environ.items() if key not in _BOT_SETTINGS}
        env["PYTHONPATH"] = str(REPO)
        timeout = _round_timeout(config, jobs)
        with (folder / "baseline.log").open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.baseline",
                "--api-url",
                segmind.url,
                "--api-key",
                TEST_API_KEY,
                "--image-url",
                # A photo hosted elsewhere, as an SDK user passes one (the fake fetches
                # nothing). Not under /assets/: the fake refuses an upload it never made.
                f"{segmind.url}/hosted/bench.jpg",
                "--jobs",
                str(jobs),
                "--interval",
                f"{config.baseline_interval:g}",
                "--timeout",
                f"{timeout:g}",
                cwd=folder,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
            )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout + 60)
        except TimeoutError:
            await _stop_process(process)
            raise
        if process.returncode != 0:
            tail = (folder / "baseline.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"baseline exited {process.returncode}:\n{tail}")
        raw: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        fake_jobs = list(segmind.jobs.values())
        results: dict[str, float] = {}
        for at, method, path, _status in segmind.requests_log:
            if method == "GET" and path.startswith("/v2/requests/") and "/status" not in path:
                results.setdefault(path.rsplit("/", 1)[-1], at)
        to_result = [
            results[job.request_id] - job.finished_at
            for job in fake_jobs
            if job.request_id in results
        ]
        active = [
            (job.submitted_at, results[job.request_id])
            for job in fake_jobs
            if job.request_id in results
        ]
        requests = [entry[0] for entry in segmind.requests_log]
        span = (max(requests) - min(requests)) if len(requests) > 1 else 0.0
        return BaselineRound(
            jobs=jobs,
            completed=int(raw["completed"]),
            errors=int(raw["errors"]),
            polls=[job.status_polls for job in fake_jobs],
            result_fetches=[job.result_fetches for job in fake_jobs],
            completed_to_result_s=to_result,
            segmind_requests=len(requests),
            segmind_rate_mean=len(requests) / span if span > 0 else math.nan,
            segmind_rate_max=max_in_window(requests),
            cpu_seconds=float(raw["cpu_seconds"]),
            peak_rss_mb=float(raw["peak_rss_mb"]),
            peak_active=peak_overlap(active),
            raw=raw,
        )
    finally:
        await segmind.stop()
        if not config.keep_dirs:
            shutil.rmtree(folder, ignore_errors=True)
