"""The restart round: N jobs in flight, the bot restarted (SIGTERM, then a new process).

A restarted bot resumes every unfinished job from its ledger. Polled at once, a thousand
jobs would be a thousand status requests in the first second; the bot spreads them, and
paces every request to Segmind's API for the jobs it resumed
(``bot.core.tracker.SEGMIND_API_PER_SECOND``: at most ``API_REQUESTS_PER_SECOND`` leave
in any second and ``SEGMIND_API_IN_FLIGHT`` are on their way at once). This round
measures requests in any one second after the restart both where they arrive
(FakeSegmind's log, stamped when its loop, shared with a thousand simulated users, gets
to them) and where they leave the bot (``bench/sendlog.py``, the bot's own monotonic
clock), and whether every user still gets exactly one video.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .measure import max_in_window, percentile
from .run import (
    _MEASURED_PHOTO_BASE,
    _WARMUP_PHOTO_BASE,
    _WARMUP_USER_BASE,
    BenchConfig,
    _job_owners,
    _round_timeout,
    _stop_process,
    _users,
    bot_environment,
    bot_module,
    bot_process,
    play_users,
    say,
)
from .sendlog import read as read_send_log

__all__ = ["RestartRound", "run_restart_round"]


@dataclass
class RestartRound:
    jobs: int
    #: Jobs accepted by Segmind and not yet delivered when SIGTERM was sent.
    in_flight: int
    #: SIGTERM sent → the old process gone; → the new one polling Telegram.
    stop_seconds: float
    start_seconds: float
    #: Status requests (GET …/status) in any 1 s window: after the restart, and before it.
    status_max_after: int
    status_max_before: int
    #: Every request to FakeSegmind in any 1 s window after the restart.
    requests_max_after: int
    #: Requests to Segmind's API (status, result, history): not uploads or downloads.
    api_max_after: int
    #: The same two where they left the bot, by its own clock (``bench/sendlog.py``).
    status_max_after_sent: int
    api_max_after_sent: int
    status_polls_mean: float
    delivered: int
    duplicates: int
    submits: int
    completed_to_video_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    #: Status requests in each whole second after the SIGTERM (0 = the first), to tell a
    #: steady rate from one bunched moment (a stalled event loop here or in the bot).
    status_per_second: list[int] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.jobs - self.delivered

    def summary(self) -> dict[str, Any]:
        video = self.completed_to_video_s
        return {
            "jobs": self.jobs,
            "in_flight_at_restart": self.in_flight,
            "stop_seconds": round(self.stop_seconds, 2),
            "start_seconds": round(self.start_seconds, 2),
            "status_max_per_s_after_restart": self.status_max_after,
            "status_max_per_s_before_restart": self.status_max_before,
            "requests_max_per_s_after_restart": self.requests_max_after,
            "api_requests_max_per_s_after_restart": self.api_max_after,
            "status_max_per_s_after_restart_as_sent": self.status_max_after_sent,
            "api_requests_max_per_s_after_restart_as_sent": self.api_max_after_sent,
            "status_polls_mean": round(self.status_polls_mean, 2),
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "submits": self.submits,
            "completed_to_video_s": {
                "p50": round(percentile(video, 50), 3) if video else None,
                "p95": round(percentile(video, 95), 3) if video else None,
            },
            "failures": self.failures[:10],
            "status_per_second_after_restart": self.status_per_second,
        }

    def markdown(self) -> str:
        video = self.completed_to_video_s
        pair = f"{percentile(video, 50):.2f} / {percentile(video, 95):.2f}" if video else "—"
        return "\n".join(
            [
                "| restart round | jobs | in flight at SIGTERM | stop / start s"
                " | status req/s max: after / before | API req/s max after"
                " | as sent by the bot: status / API req/s max after"
                " | all Segmind req/s max after"
                " | status polls/job | COMPLETED→sendVideo s p50 / p95 | delivered | lost"
                " | duplicates | submits |",
                "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
                f"| bot | {self.jobs} | {self.in_flight} | {self.stop_seconds:.2f} /"
                f" {self.start_seconds:.2f} | {self.status_max_after} /"
                f" {self.status_max_before} | {self.api_max_after} |"
                f" {self.status_max_after_sent} / {self.api_max_after_sent} |"
                f" {self.requests_max_after} |"
                f" {self.status_polls_mean:.1f} | {pair} | {self.delivered} | {self.lost}"
                f" | {self.duplicates} | {self.submits} |",
            ]
        )


async def run_restart_round(config: BenchConfig, jobs: int) -> RestartRound:
    """Warm up, let ``jobs`` users press Generate, restart the bot once every job is
    accepted by Segmind (none can be done yet), and follow every job to its video."""
    low, high = config.processing_range
    send_log = Path(tempfile.mkdtemp(prefix="warmth-bench-sends-")) / "sent.tsv"
    try:
        return await _restart_round(config, jobs, send_log, (low, high))
    finally:
        shutil.rmtree(send_log.parent, ignore_errors=True)


def _kind(method: str, path: str) -> str:
    """A request's kind, alike for both logs: status, result, video, … or its path."""
    kind = "result" if path.count("/") == 3 and "/requests/" in path else path
    kind = "status" if path.endswith("/status") else kind
    kind = "video" if path.startswith("/outputs/") else kind
    return f"{method} {kind}"


def _is_api(path: str) -> bool:
    """Segmind's API: not the video downloads nor the uploaded images."""
    return not path.startswith(("/outputs/", "/assets/"))


def _by_kind(entries: list[tuple[float, str, str]], since: float) -> str:
    kinds: dict[str, list[float]] = {}
    for t, method, path in entries:
        if t >= since:
            kinds.setdefault(_kind(method, path), []).append(t)
    return ", ".join(f"{k} {max_in_window(v)} (all {len(v)})" for k, v in sorted(kinds.items()))


async def _restart_round(
    config: BenchConfig, jobs: int, send_log: Path, processing_range: tuple[float, float]
) -> RestartRound:
    low, high = processing_range
    async with bot_process(
        config,
        queued_seconds=config.queued_seconds * config.scale,
        processing_range=(low * config.scale, high * config.scale),
        label=f"restart{jobs}",
        send_log=send_log,
    ) as bot:
        telegram, segmind = bot.telegram, bot.segmind
        warm = _users(config.warmup_jobs, _WARMUP_USER_BASE, _WARMUP_PHOTO_BASE)
        await play_users(
            telegram, bot.watcher, warm, think=config.think_seconds, ramp=0.0, within=300.0
        )
        if any(user.videos == 0 for user in warm):
            raise RuntimeError("warm-up failed: no video")
        say(f"restart{jobs}: warm-up of {len(warm)} jobs done")

        measured = _users(jobs, 1, _MEASURED_PHOTO_BASE)
        accepted_before = len(segmind.jobs)
        users_task = asyncio.create_task(
            play_users(
                telegram,
                bot.watcher,
                measured,
                think=config.think_seconds,
                ramp=config.ramp_for(jobs),
                within=_round_timeout(config, jobs) + 120.0,
            )
        )
        # Every job accepted by Segmind: all of them are in flight.
        while len(segmind.jobs) - accepted_before < jobs:
            if users_task.done():
                break
            await asyncio.sleep(0.05)
        in_flight = sum(1 for user in measured if user.videos == 0)
        restart_at = time.monotonic()
        say(f"restart{jobs}: {in_flight} jobs in flight; SIGTERM")
        await _stop_process(bot.process)
        stopped_at = time.monotonic()
        say(f"restart{jobs}: the first process exited with {bot.process.returncode}")
        env = bot_environment(
            telegram,
            segmind,
            bot.folder / "data" / "bot.sqlite3",
            config.bot_interval,
            config.bot_source,
        )
        with bot.log_path.open("ab") as log_file:
            bot.process = await asyncio.create_subprocess_exec(
                sys.executable,
                *bot_module(send_log),
                cwd=bot.folder,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )
        try:
            # A second deleteWebhook marks the new process polling.
            webhooks = len(telegram.calls_of("deleteWebhook"))
            while len(telegram.calls_of("deleteWebhook")) == webhooks:
                if bot.process.returncode is not None:
                    tail = bot.log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the restarted bot did not start:\n{tail}")
                await asyncio.sleep(0.05)
            started_at = time.monotonic()
            say(f"restart{jobs}: new bot polling (pid {bot.process.pid})")
            await users_task
        finally:
            await _stop_process(bot.process)
        say(f"restart{jobs}: round done")
        arrived = [(t, method, path) for t, method, path, _ in segmind.requests_log]
        sent = read_send_log(send_log)
        say(
            f"restart{jobs}: busiest second after the restart, by kind, at the fake: "
            + _by_kind(arrived, restart_at)
        )
        say(f"restart{jobs}: the same as the bot sent them: " + _by_kind(sent, restart_at))
        for user in measured:
            if user.videos > 1:
                sends = ", ".join(
                    f"{at - restart_at:+.2f}s [{data}]" for at, data in user.video_calls
                )
                say(f"restart{jobs}: user {user.user_id} got {user.videos} videos: {sends}")

        owners = _job_owners(segmind, bot.folder / "data" / "bot.sqlite3")
        log = segmind.requests_log
        status = [t for t, method, path, _ in log if method == "GET" and path.endswith("/status")]
        to_video = [
            user.video_at - owners[user.user_id].finished_at
            for user in measured
            if user.user_id in owners and not math.isnan(user.video_at)
        ]
        polls = [owners[u.user_id].status_polls for u in measured if u.user_id in owners]
        after = [t - restart_at for t in status if t >= restart_at]
        per_second = [0] * (int(max(after)) + 1 if after else 0)
        for offset in after:
            per_second[int(offset)] += 1
        return RestartRound(
            jobs=jobs,
            in_flight=in_flight,
            stop_seconds=stopped_at - restart_at,
            start_seconds=started_at - stopped_at,
            status_max_after=max_in_window([t for t in status if t >= restart_at]),
            status_max_before=max_in_window([t for t in status if t < restart_at]),
            requests_max_after=max_in_window([t for t, *_ in log if t >= restart_at]),
            api_max_after=max_in_window(
                [t for t, _method, path, _ in log if t >= restart_at and _is_api(path)]
            ),
            status_max_after_sent=max_in_window(
                [t for t, method, path in sent if t >= restart_at and path.endswith("/status")]
            ),
            api_max_after_sent=max_in_window(
                [t for t, _method, path in sent if t >= restart_at and _is_api(path)]
            ),
            status_polls_mean=statistics.fmean(polls) if polls else math.nan,
            delivered=sum(1 for user in measured if user.videos > 0),
            duplicates=sum(user.videos - 1 for user in measured if user.videos > 1),
            submits=len(segmind.jobs) - accepted_before,
            completed_to_video_s=to_video,
            failures=[f"{u.user_id}: {u.failure}" for u in measured if u.failure],
            status_per_second=per_second,
        )
