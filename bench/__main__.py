"""``python -m bench``: the bot under N concurrent users, beside the naive baseline.

For each N it starts the fake Telegram and Segmind servers in this process, runs the
real bot (``python -m bot``) as a child process against them, warms its ledger up with a
few jobs, then drives N users through photo → keyboard → Generate → video (their photos
arriving 25 a second, so all N jobs are in flight together) and prints one markdown
table. See docs/benchmarks.md for what each column means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .measure import percentile
from .restart import RestartRound, run_restart_round
from .run import (
    REPO,
    BaselineRound,
    BenchConfig,
    BotRound,
    VideoCheck,
    run_baseline_round,
    run_bot_round,
    run_video_check,
    say,
)

HEADER = (
    "| run | N | peak active | photo→keyboard ms p50 / p95 | Generate→submit ms p50 / p95"
    " | COMPLETED→sendVideo s p50 / p95 | status polls/job mean / max"
    " | Segmind req/s mean / max | CPU s/job | peak RSS MB"
    " | TG calls/s max: all / msgs | per chat max/s: msgs / all | lost |"
)
ALIGN = "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
_DASH = "—"


def _pair(values: Sequence[float], fmt: str) -> str:
    if not values:
        return _DASH
    return f"{percentile(values, 50):{fmt}} / {percentile(values, 95):{fmt}}"


def _mean_max(values: Sequence[int]) -> str:
    if not values:
        return _DASH
    return f"{sum(values) / len(values):.1f} / {max(values)}"


def _rate(mean: float, peak: int) -> str:
    return f"{_DASH if math.isnan(mean) else f'{mean:.1f}'} / {peak}"


def bot_row(result: BotRound) -> str:
    cells = [
        "bot",
        str(result.users),
        str(result.peak_active),
        _pair(result.photo_to_keyboard_ms, ".0f"),
        _pair(result.generate_to_submit_ms, ".0f"),
        _pair(result.completed_to_video_s, ".2f"),
        _mean_max(result.polls),
        _rate(result.segmind_rate_mean, result.segmind_rate_max),
        f"{result.cpu_seconds / max(1, result.users):.3f}",
        f"{result.peak_rss_mb:.1f}",
        f"{result.telegram_calls_max} / {result.telegram_messages_max}",
        f"{result.chat_messages_max} / {result.chat_calls_max}",
        str(result.lost),
    ]
    return "| " + " | ".join(cells) + " |"


def baseline_row(result: BaselineRound) -> str:
    cells = [
        "baseline (1 s loop)",
        str(result.jobs),
        str(result.peak_active),
        _DASH,
        _DASH,
        _pair(result.completed_to_result_s, ".2f") + " †",
        _mean_max(result.polls),
        _rate(result.segmind_rate_mean, result.segmind_rate_max),
        f"{result.cpu_seconds / max(1, result.jobs):.3f}",
        f"{result.peak_rss_mb:.1f}",
        _DASH,
        _DASH,
        str(result.jobs - result.completed),
    ]
    return "| " + " | ".join(cells) + " |"


@dataclass
class Report:
    config: BenchConfig
    command: str
    bot: list[BotRound]
    baseline: list[BaselineRound]
    video: VideoCheck | None
    restart: RestartRound | None = None

    def table(self) -> str:
        lines = [HEADER, ALIGN]
        baselines = {result.jobs: result for result in self.baseline}
        for result in self.bot:
            lines.append(bot_row(result))
            if result.users in baselines:
                lines.append(baseline_row(baselines[result.users]))
        return "\n".join(lines)

    def notes(self) -> str:
        c = self.config
        low, high = c.processing_range
        lines = [
            f"scale {c.scale:g}: Segmind jobs queued {c.queued_seconds * c.scale:g} s, processing"
            f" {low * c.scale:g}–{high * c.scale:g} s; POLL_INTERVAL_SECONDS"
            f" {c.bot_interval:g} ({c.poll_interval:g} × scale); baseline polls every"
            f" {c.baseline_interval:g} s (1 × scale).",
            f"Warm-up: {c.warmup_jobs} jobs per bot process before the measured round; users"
            f" press Generate {c.think_seconds:g} s after the keyboard; {_arrivals(c)};"
            f" videos are {c.video_bytes} bytes.",
            "† baseline: COMPLETED → its result GET (it delivers nothing).",
        ]
        if self.video is not None:
            v = self.video
            lines.append(
                f"{v.video_bytes / 2**20:.0f} MiB video: delivered {v.delivered_bytes} bytes;"
                f" bot peak RSS {v.peak_before_mb:.1f} → {v.peak_after_mb:.1f} MB"
                f" (+{v.peak_rise_mb:.1f} MB)."
            )
        for result in self.bot:
            steps = ", ".join(
                f"{name.split('.', 1)[1]} {_pair(values, '.2f')}"
                for name, values in result.stages.items()
                if name.startswith("completed.")
            )
            lines.append(f"N={result.users}, s after COMPLETED (p50 / p95): {steps}.")
            steps = ", ".join(
                f"{name.split('.', 1)[1]} {_pair(values, '.2f')}"
                for name, values in result.stages.items()
                if name.startswith("generate.")
            )
            lines.append(
                f"N={result.users}, s after Generate (p50 / p95): {steps}; all keyboards"
                f" went out within {result.keyboards_span_s:.2f} s."
            )
        for result in self.bot:
            if result.log_warnings:
                top = list(result.log_warnings.items())[:3]
                lines.append(
                    f"N={result.users}: {sum(result.log_warnings.values())} WARNING log"
                    f" line(s), most common: {top}"
                )
            if result.failures or result.log_problems or result.duplicates:
                lines.append(
                    f"N={result.users}: {len(result.failures)} failure(s)"
                    f" {result.failures[:3]}, {result.duplicates} duplicate video(s),"
                    f" {len(result.log_problems)} ERROR log line(s) {result.log_problems[:2]}"
                )
        return "\n".join(f"- {line}" for line in lines)

    def markdown(self) -> str:
        text = f"{self.table()}\n\n{self.notes()}\n" if self.bot else ""
        if self.restart is not None:
            text += f"\n{self.restart.markdown()}\n"
        return text

    def data(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": platform.python_version(),
            "config": {
                "scale": self.config.scale,
                "poll_interval": self.config.poll_interval,
                "bot_interval": self.config.bot_interval,
                "baseline_interval": self.config.baseline_interval,
                "queued_seconds": self.config.queued_seconds,
                "processing_range": list(self.config.processing_range),
                "warmup_jobs": self.config.warmup_jobs,
                "think_seconds": self.config.think_seconds,
                "arrival_rate": self.config.arrival_rate,
                "ramp_seconds": self.config.ramp_seconds,
                "video_bytes": self.config.video_bytes,
                "seed": self.config.seed,
                "bot_source": str(self.config.bot_source),
            },
            "bot": [result.summary() for result in self.bot],
            "baseline": [result.summary() for result in self.baseline],
            "video_check": self.video.summary() if self.video else None,
            "restart": self.restart.summary() if self.restart else None,
        }


def _arrivals(config: BenchConfig) -> str:
    if config.ramp_seconds:
        return f"photos arrive over {config.ramp_seconds:g} s"
    if config.arrival_rate:
        return f"photos arrive {config.arrival_rate:g} a second (N / {config.arrival_rate:g} s)"
    return "all photos arrive at once"


def _users(text: str) -> list[int]:
    if text.strip().lower() == "none":
        return []  # only the other rounds (e.g. --restart)
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from exc
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError("user counts must be positive")
    return values


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--users", type=_users, default=[10, 100, 1000], help="e.g. 10,100,1000, or none"
    )
    parser.add_argument(
        "--restart",
        type=int,
        default=0,
        metavar="N",
        help="also run the restart round: N jobs in flight, the bot restarted (0: off)",
    )
    parser.add_argument(
        "--scale",
        type=_positive,
        default=1.0,
        help="multiply job times (3 s queued, 45-55 s processing) and poll intervals",
    )
    parser.add_argument(
        "--poll-interval",
        type=_positive,
        default=2.0,
        help="real-world POLL_INTERVAL_SECONDS; the bot gets this × scale",
    )
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--video-check", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--warmup", type=int, default=5, help="warm-up jobs per bot process")
    parser.add_argument("--think", type=float, default=1.0, help="s from keyboard to Generate")
    parser.add_argument(
        "--rate", type=float, default=25.0, help="photos arriving per second (0: all at once)"
    )
    parser.add_argument(
        "--ramp", type=float, default=0.0, help="s over which photos arrive (instead of --rate)"
    )
    parser.add_argument("--video-kb", type=int, default=1000, help="size of each video, kB")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="also write the table and notes here")
    parser.add_argument("--json", type=Path, help="write every figure here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep temp dirs (bot logs)")
    parser.add_argument(
        "--profile", type=Path, help="sample the bot's stacks; write bot-*.txt here"
    )
    parser.add_argument(
        "--bot-src",
        type=Path,
        default=REPO,
        help="folder holding the bot package to run (default: this checkout)",
    )
    return parser.parse_args(argv)


async def main_async(args: argparse.Namespace, command: str) -> Report:
    config = BenchConfig(
        scale=args.scale,
        poll_interval=args.poll_interval,
        warmup_jobs=args.warmup,
        think_seconds=args.think,
        arrival_rate=args.rate,
        ramp_seconds=args.ramp,
        video_bytes=args.video_kb * 1000,
        seed=args.seed,
        keep_dirs=args.keep,
        bot_source=args.bot_src.resolve(),
        profile_dir=args.profile,
    )
    if not (config.bot_source / "bot" / "__main__.py").is_file():
        raise SystemExit(f"error: no bot package in {config.bot_source}")
    report = Report(config, command, [], [], None)
    for users in args.users:
        say(f"bot, {users} users ...")
        result = await run_bot_round(config, users)
        report.bot.append(result)
        say(bot_row(result))
        if args.baseline:
            say(f"baseline, {users} jobs ...")
            baseline = await run_baseline_round(config, users)
            report.baseline.append(baseline)
            say(baseline_row(baseline))
    if args.video_check:
        say("45 MiB video ...")
        report.video = await run_video_check(config)
        say(f"45 MiB video: {report.video.summary()}")
    if args.restart > 0:
        say(f"restart round, {args.restart} jobs ...")
        report.restart = await run_restart_round(config, args.restart)
        say(report.restart.markdown())
    return report


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["photos"]:
        # python -m bench photos: the memory of ten 20 MB images at once (bench/photos.py).
        from .photos import main as photos_main

        return photos_main(arguments[1:])
    if arguments[:1] == ["budget"]:
        # python -m bench budget: three processes sharing one Telegram budget (bench/budget.py).
        from .budget import main as budget_main

        return budget_main(arguments[1:])
    if arguments[:1] == ["scale"]:
        # python -m bench scale: three bot instances on one PostgreSQL (bench/scale.py).
        from .scale import main as scale_main

        return scale_main(arguments[1:])
    args = parse_args(arguments)
    command = " ".join(["python -m bench", *arguments])
    report = asyncio.run(main_async(args, command))
    text = report.markdown()
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    if args.json is not None:
        args.json.write_text(json.dumps(report.data(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
