"""Issue 12: the ledger's file system really fills up under a running ``python -m bot``.

The ledger lives on a small file system this test mounts (a tmpfs; a loop-mounted ext4
image if tmpfs cannot be mounted; both need root, which tests here have) and fills with
a file until the kernel answers ENOSPC. SQLite then fails to grow its WAL: "database or
disk is full", as on a real server. The mount is undone in the fixture's finalizer.

- A submit answered while the disk is full: its request id is logged at once and kept;
  written when space returns (or, after a SIGKILL, found in Segmind's request history).
- A payment Telegram confirms while the disk is full is held, and written to the side
  file (the ledger's folder is full: the temp folder takes it); SIGKILLed before the
  ledger recovers, the next start records it from there and the video is made.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.i18n import texts
from tests.conftest import bot_env, ledger, wait_until
from tests.processes import BotProcess
from tests.test_payments import invoice_for, paid, payment_rows
from tests.test_private_flow import button_data, send_photo_get_keyboard

USER = 1901
DISK_SIZE = "8m"


def _mount(folder: Path, image: Path) -> str:
    """A small empty file system at ``folder``; which kind (tmpfs, else ext4 on a loop)."""
    tmpfs = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if tmpfs.returncode == 0:
        return "tmpfs"
    subprocess.run(["truncate", "-s", DISK_SIZE.upper(), str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    loop = subprocess.run(
        ["mount", "-o", "loop", str(image), str(folder)], capture_output=True, text=True
    )
    if loop.returncode == 0:
        return "ext4 on a loop device"
    pytest.fail(
        "cannot mount a small file system for the full-disk test (root is needed): "
        f"tmpfs: {tmpfs.stderr.strip()}; loop: {loop.stderr.strip()}"
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on its own small file system, unmounted (lazily, so a process still
    holding a file there cannot keep it mounted) when the test ends."""
    folder = tmp_path / "disk"
    folder.mkdir()
    _mount(folder, tmp_path / "disk.img")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


def fill(folder: Path) -> Path:
    """Write a file until the file system says it is full; return it (delete to free)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
        with pytest.raises(OSError, match="No space left") as full:
            os.write(fd, b"\0")
        assert full.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def free(filler: Path) -> None:
    filler.unlink()


def stderr_of(process: BotProcess) -> str:
    return process.stderr.decode(errors="replace")


async def stop_when_delivered(process: BotProcess, telegram, database: Path) -> dict:
    """The job delivered and its user told, every update confirmed: SIGTERM, exit 0."""

    def done() -> dict | None:
        rows = [row for row in ledger(database) if row["user_id"] == USER]
        ready = rows and all(r["state"] == "delivered" and r["notified_at"] for r in rows)
        return rows[0] if ready and not telegram.pending_updates() else None

    row = await wait_until(done, timeout=30, what="the job delivered")
    process.signal(signal.SIGTERM)
    assert await process.wait() == 0
    return row


async def press_generate(telegram) -> dict:
    telegram.private_chat(USER)
    _, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    return keyboard


@pytest.mark.parametrize("then", ["space returns", "sigkill, then space returns"])
async def test_a_submit_answered_while_the_disk_is_full_still_makes_one_video(
    telegram, segmind, spawn, small_disk, tmp_path, then
):
    database = small_disk / "bot.sqlite3"
    env = bot_env(telegram, segmind, database, POLL_INTERVAL_SECONDS="0.1", TMPDIR=tmp_path)
    segmind.hold_submit_answers()  # accepted and charged; the answer waits
    process = await spawn(env)
    keyboard = await press_generate(telegram)
    telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, "Generate"))
    await wait_until(lambda: len(segmind.jobs) == 1, what="the submit accepted")
    (request_id,) = segmind.jobs

    filler = fill(small_disk)
    segmind.release_submit_answers()  # the answer arrives: the ledger cannot take it
    await wait_until(
        lambda: (
            f"accepted it as {request_id} but the ledger could not record that"
            in stderr_of(process)
        ),
        what="the request id logged at once",
    )
    assert "disk is full" in stderr_of(process)
    assert process.process is not None
    assert process.process.returncode is None  # up, not crashed
    (job,) = ledger(database)
    assert (job["state"], job["request_id"]) == ("submitting", None)

    if then.startswith("sigkill"):
        process.signal(signal.SIGKILL)
        await process.wait()
        free(filler)
        process = await spawn(env)  # finds it in the request history
    else:
        free(filler)  # the next step writes what it kept in memory
    (video,) = await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=30)
    assert video.ok
    row = await stop_when_delivered(process, telegram, database)
    assert row["request_id"] == request_id
    assert len(segmind.submits) == 1
    assert len(telegram.calls_of("sendVideo", chat_id=USER)) == 1
    assert "Traceback" not in stderr_of(process)


async def test_a_payment_held_on_a_full_disk_survives_sigkill_and_makes_its_video(
    telegram, segmind, spawn, small_disk, tmp_path
):
    database = small_disk / "bot.sqlite3"
    spare = tmp_path / "spare"
    spare.mkdir()
    env = bot_env(
        telegram,
        segmind,
        database,
        POLL_INTERVAL_SECONDS="0.1",
        PRICE_STARS="50",
        TMPDIR=spare,
    )
    process = await spawn(env)
    keyboard = await press_generate(telegram)
    invoice = await invoice_for(telegram, keyboard, USER, USER)

    filler = fill(small_disk)
    result = await paid(telegram.pay_invoice(USER, invoice.result))
    await telegram.wait_for_call(
        "sendMessage", chat_id=USER, where=lambda c: c.params["text"] == texts.payment_held("en")
    )
    # Beside the ledger there is no room: the temp folder holds it.
    assert not list(small_disk.glob("*.held-payments"))
    (side,) = spare.glob("*.held-payments")
    assert result.charge_id in side.read_text()
    # Telegram has the update confirmed: it will not send this payment again.
    await wait_until(lambda: telegram.pending_updates() == 0, what="the payment confirmed")
    process.signal(signal.SIGKILL)
    await process.wait()
    assert payment_rows(database) == []
    assert segmind.submits == []

    free(filler)
    process = await spawn(env)
    (video,) = await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=30)
    assert video.ok
    row = await stop_when_delivered(process, telegram, database)
    (payment,) = payment_rows(database)
    assert (payment["charge_id"], payment["job_id"], payment["refund"]) == (
        result.charge_id,
        row["id"],
        "none",
    )
    assert len(segmind.submits) == 1
    assert telegram.refunds == []
    assert not side.exists()  # recorded: the side file is gone
    assert "recording 1 payment(s) held by an earlier run" in stderr_of(process)
