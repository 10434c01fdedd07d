"""``python -m bench photos``: what ten 20 MB images sent at once cost the bot's memory.

The real bot (``python -m bot``) runs against the fakes as in the main benchmark. After
a warm-up image (Pillow and its plugins loaded, the photo folder made), ten users send
the same kind of image as a file at the same moment: a 12000 × 12000 JPEG (``--side``) of
close to 20 MB (the largest file Telegram hands a bot), each its own file. The bot downloads each
to disk, prepares it (bot/telegram/photos.py) and answers with a keyboard; then every
user presses Generate, so the prepared JPEGs are uploaded and the videos delivered too.

The bot's RSS is read from /proc every 10 ms in this process: before, its peak during
(and VmHWM, the kernel's own high-water mark), and after the bot has gone quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from tests.fakes.telegram import FakeTelegram

from .run import REPO, BenchConfig, bot_process, say

__all__ = ["PhotoRound", "main", "run_photo_round"]

#: The largest file Telegram hands a bot is 20 MiB; the images stay just under it.
MAX_FILE_BYTES = 20 * 1024 * 1024
_SIDE = 12000
_SAMPLE_EVERY = 0.01
_QUIET_SECONDS = 2.0
_USER_BASE = 30_000_000


def big_jpeg(side: int = _SIDE, limit: int = MAX_FILE_BYTES - 64 * 1024) -> bytes:
    """A ``side`` × ``side`` JPEG with texture all over (smoothed noise), as close under
    ``limit`` bytes as a JPEG quality step allows."""
    small = Image.merge("RGB", [Image.effect_noise((1200, 1200), s) for s in (40, 60, 80)])
    image = small.resize((side, side), Image.Resampling.BILINEAR)
    for quality in range(95, 20, -5):
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality)
        if out.tell() <= limit:
            return out.getvalue()
    raise RuntimeError("could not make a JPEG under the limit")


def _rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    fields: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = float(value.split()[0]) / 1024.0
    return fields.get("VmRSS", math.nan), fields.get("VmHWM", math.nan)


@dataclass
class PhotoRound:
    images: int
    side: int
    image_bytes: int
    rss_before_mb: float
    hwm_before_mb: float
    peak_sampled_mb: float
    hwm_after_mb: float
    rss_after_mb: float
    keyboards_s: float
    videos: int
    prepared_width: int

    @property
    def peak_rise_mb(self) -> float:
        return max(self.peak_sampled_mb, self.hwm_after_mb) - self.rss_before_mb

    def markdown(self) -> str:
        return "\n".join(
            [
                "| images | each | RSS before MB | peak RSS MB (rise) | RSS after MB"
                " | all keyboards s | videos |",
                "|--:|--:|--:|--:|--:|--:|--:|",
                f"| {self.images} | {self.image_bytes / 2**20:.1f} MiB,"
                f" {self.side}×{self.side} JPEG | {self.rss_before_mb:.1f}"
                f" | {max(self.peak_sampled_mb, self.hwm_after_mb):.1f}"
                f" (+{self.peak_rise_mb:.1f}) | {self.rss_after_mb:.1f}"
                f" | {self.keyboards_s:.1f} | {self.videos} |",
            ]
        )


class _Sampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, _rss_mb(self.pid)[0])
            await asyncio.sleep(_SAMPLE_EVERY)

    def __enter__(self) -> _Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def _keyboard(telegram: FakeTelegram, user: int) -> dict | None:
    for call in telegram.calls_of("sendMessage", chat_id=user):
        if call.ok and "reply_markup" in call.params:
            return dict(call.result)
    return None


def _generate_data(message: dict) -> str:
    for row in message["reply_markup"]["inline_keyboard"]:
        for button in row:
            if str(button.get("callback_data", "")).startswith("g:"):
                return str(button["callback_data"])
    raise RuntimeError("no Generate button")


async def _until(predicate, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _quiet(telegram: FakeTelegram) -> None:
    """Until the bot has made no call but getUpdates for a while."""
    while True:
        calls = [c for c in telegram.calls if c.method.lower() != "getupdates"]
        last = max((c.at for c in calls[-50:]), default=0.0)
        if time.monotonic() - last >= _QUIET_SECONDS:
            return
        await asyncio.sleep(0.1)


async def run_photo_round(images: int = 10, side: int = _SIDE) -> PhotoRound:
    say(f"making a {side} × {side} JPEG under 20 MiB ...")
    data = big_jpeg(side)
    say(f"image: {len(data) / 2**20:.1f} MiB")
    config = BenchConfig(bot_source=REPO)
    async with bot_process(
        config, queued_seconds=0.2, processing_range=(0.5, 0.5), label="photos"
    ) as bot:
        telegram = bot.telegram
        # Warm-up: one ordinary image file, so imports and the photo folder are counted
        # before the measurement, not in it.
        warm = _USER_BASE - 1
        telegram.private_chat(warm)
        telegram.send_document(warm, warm, mime_type="image/jpeg", file_name="warm.jpg")
        await _until(lambda: _keyboard(telegram, warm) is not None, 60, "the warm-up keyboard")
        await _quiet(telegram)
        rss_before, hwm_before = _rss_mb(bot.pid)
        users = [_USER_BASE + index for index in range(images)]
        with _Sampler(bot.pid) as sampler:
            started = time.monotonic()
            for user in users:
                telegram.private_chat(user)
                telegram.send_document(
                    user, user, mime_type="image/jpeg", file_name="big.jpg", data=data
                )
            await _until(
                lambda: all(_keyboard(telegram, user) for user in users), 300, "the keyboards"
            )
            keyboards_s = time.monotonic() - started
            say(f"{images} keyboards after {keyboards_s:.1f} s")
            await _quiet(telegram)
            rss_prepared = _rss_mb(bot.pid)[0]
            say(f"RSS once the keyboards went out: {rss_prepared:.1f} MB")
            for user in users:
                message = _keyboard(telegram, user)
                assert message is not None
                telegram.press_button(user, user, message["message_id"], _generate_data(message))
            await _until(
                lambda: all(telegram.calls_of("sendVideo", chat_id=user) for user in users),
                300,
                "the videos",
            )
            await _quiet(telegram)
        rss_after, hwm_after = _rss_mb(bot.pid)
        name = bot.segmind.submits[-1]["image_url"].rsplit("/", 1)[-1]
        with Image.open(io.BytesIO(bot.segmind.assets[name].data)) as uploaded:
            width = uploaded.width
        return PhotoRound(
            images=images,
            side=side,
            image_bytes=len(data),
            rss_before_mb=rss_before,
            hwm_before_mb=hwm_before,
            peak_sampled_mb=sampler.peak,
            hwm_after_mb=hwm_after,
            rss_after_mb=rss_after,
            keyboards_s=keyboards_s,
            videos=sum(1 for user in users if telegram.calls_of("sendVideo", chat_id=user)),
            prepared_width=width,
        )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench photos", description=__doc__)
    parser.add_argument("--images", type=int, default=10, help="images sent at once")
    parser.add_argument(
        "--side",
        type=int,
        default=_SIDE,
        help="pixels a side; 11000 is the JPEG worst case (decoded at 1/4, 2750 px)",
    )
    args = parser.parse_args(list(argv))
    result = asyncio.run(run_photo_round(args.images, args.side))
    print(result.markdown())
    print(
        f"\n- VmHWM before {result.hwm_before_mb:.1f} MB, after {result.hwm_after_mb:.1f} MB;"
        f" sampled peak RSS {result.peak_sampled_mb:.1f} MB; uploaded JPEGs"
        f" {result.prepared_width} px wide."
    )
    return 0
