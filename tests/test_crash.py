"""The real ``python -m bot`` process: start-up errors, `check`, SIGTERM and SIGKILL.

The bot runs as a child process against the fakes served by this test's event loop; it is
stopped at the worst moments and started again, and every update it had seen is
re-delivered, as Telegram does after a crash.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from bot.core.alerts import AlertKind
from bot.i18n import texts
from bot.telegram.runtime import CONFLICT_STOP_LINE
from tests.conftest import ADMIN_ID, ledger, unsettled_jobs, until_quiet, wait_until
from tests.fakes.segmind import TEST_API_KEY
from tests.fakes.telegram import BOT_USERNAME, TEST_TOKEN, iter_updates
from tests.processes import BotProcess
from tests.short_intervals import MODULE, shortened
from tests.test_private_flow import button_data, send_photo_get_keyboard

USER = 701
#: How long the fake Segmind takes over a job here: longer than any test waits for it.
JOB_SECONDS = 60.0
REPO = Path(__file__).resolve().parent.parent


def redeliver_everything(telegram) -> int:
    """Telegram re-sends what the dead process had not confirmed; we re-send all of it."""
    ids = sorted({update["update_id"] for update in iter_updates(telegram.calls)})
    for update_id in ids:
        telegram.redeliver_update(update_id)
    return len(ids)


async def press_generate(telegram) -> dict:
    photo, keyboard = await send_photo_get_keyboard(telegram, USER, USER)
    telegram.press_button(USER, USER, keyboard["message_id"], button_data(keyboard, "Generate"))
    return photo


async def start_a_job(telegram, segmind, spawn, env, database) -> BotProcess:
    """A bot process with one job submitted and its "queued" status shown.

    The job stays at Segmind until the test moves the fake's clock (``finish_the_video``):
    what the bot does before that cannot depend on how fast this machine is.
    """
    telegram.private_chat(USER)
    segmind.processing_seconds = JOB_SECONDS
    process = await spawn(env)
    await press_generate(telegram)
    await telegram.wait_for_call(
        "editMessageText", chat_id=USER, where=lambda c: c.params["text"].startswith("⏳")
    )
    assert ledger(database)[0]["state"] in ("queued", "processing")
    return process


def finish_the_video(segmind) -> None:
    """Segmind finishes the job now (the fake's clock moves on)."""
    segmind.advance(JOB_SECONDS)


async def settle_and_stop(process: BotProcess, telegram, database) -> None:
    """Let the bot process settle, then stop it: after this nothing more can happen.

    A child process cannot be looked into, so settled means: Telegram has handed out every
    queued update and the bot has confirmed it (a getUpdates with a later offset), and the
    ledger owes nothing (every job a draft, or ended and told, so no job task has anything
    left to do). A handler may still be at work on a confirmed update at that moment, so
    the process is then stopped with SIGTERM: PTB finishes every update it has taken before
    it exits (``Application.stop`` joins its update queue), and the ledger is checked once
    more afterwards, in case such a handler started something.
    """

    def busy() -> str | None:
        if telegram.pending_updates():
            return f"{telegram.pending_updates()} update(s) not yet fetched and confirmed"
        jobs = unsettled_jobs(database)
        return (
            f"jobs not finished: {[(job['id'], job['state']) for job in jobs]}" if jobs else None
        )

    await until_quiet(busy, 15.0, "the bot process")
    process.signal(signal.SIGTERM)
    assert await process.wait() == 0
    assert telegram.pending_updates() == 0
    assert unsettled_jobs(database) == []


# -- start-up ---------------------------------------------------------------------------


async def test_missing_secrets_are_named_in_one_line_each(spawn, tmp_path):
    process = await spawn({"TELEGRAM_BOT_TOKEN": "", "SEGMIND_API_KEY": ""})
    code = await process.wait()
    _, stderr = await process.output()
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("error: TELEGRAM_BOT_TOKEN is missing")
    assert lines[1].startswith("error: SEGMIND_API_KEY is missing")
    assert "Traceback" not in stderr


async def test_a_malformed_setting_is_named_and_no_secret_echoed(spawn, env):
    process = await spawn({**env, "MAX_ACTIVE_JOBS_PER_USER": "lots"})
    code = await process.wait()
    _, stderr = await process.output()
    assert code != 0
    assert stderr.strip().startswith("error: MAX_ACTIVE_JOBS_PER_USER")
    assert len(stderr.strip().splitlines()) == 1
    assert TEST_TOKEN not in stderr
    assert TEST_API_KEY not in stderr


async def test_a_token_telegram_rejects_stops_the_bot_with_one_line(spawn, env):
    process = await spawn(
        {**env, "TELEGRAM_BOT_TOKEN": "999999:REJECTED-token_abcdefghijklmnopqrstu"}
    )
    code = await process.wait()
    _, stderr = await process.output()
    assert code != 0
    assert "error: TELEGRAM_BOT_TOKEN was rejected by Telegram" in stderr
    assert "Traceback" not in stderr


async def test_check_reports_the_bot_and_exits_zero(spawn, env, database):
    process = await spawn(env, "check")
    code = await process.wait()
    stdout, stderr = await process.output()
    assert code == 0, stderr
    assert f"@{BOT_USERNAME}" in stdout
    assert database.exists()
    assert TEST_TOKEN not in stdout + stderr


async def test_check_reports_each_problem_in_one_line(spawn, env, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    process = await spawn(
        {
            **env,
            "TELEGRAM_BOT_TOKEN": "999999:REJECTED-token_abcdefghijklmnopqrstu",
            "DATABASE_PATH": str(blocker / "bot.sqlite3"),
        },
        "check",
    )
    code = await process.wait()
    _, stderr = await process.output()
    assert code == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert errors[0].startswith("error: DATABASE_PATH")
    assert errors[1] == "error: TELEGRAM_BOT_TOKEN was rejected by Telegram"
    assert "Traceback" not in stderr


async def test_a_token_revoked_while_running_stops_the_bot_and_the_job_waits_for_it(
    telegram, segmind, spawn, env, database
):
    process = await start_a_job(telegram, segmind, spawn, env, database)
    telegram.token = "123:revoked-in-botfather"  # every call with the old token: 401
    finish_the_video(segmind)  # delivering it, the bot meets the revoked token

    code = await process.wait(timeout=20)
    _, stderr = await process.output()
    assert code == 1
    assert "error: TELEGRAM_BOT_TOKEN was rejected by Telegram while the bot ran" in stderr
    assert "Traceback" not in stderr
    assert TEST_TOKEN not in stderr
    [job] = ledger(database)
    # Paid for and kept, not yet delivered: where it stood depends on when the watch
    # noticed the token (before or after the poll that saw the video finished).
    assert job["state"] in ("queued", "processing", "completed"), job["state"]
    assert job["request_id"] is not None
    assert job["notified_at"] is None

    telegram.token = TEST_TOKEN  # the operator puts a valid token back
    await spawn(env)
    await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=15)
    await wait_until(lambda: ledger(database)[0]["state"] == "delivered")
    assert len(segmind.submits) == 1


# -- stopping and crashing ------------------------------------------------------------


async def test_sigterm_stops_within_5s_and_the_job_resumes(
    telegram, segmind, spawn, env, database
):
    process = await start_a_job(telegram, segmind, spawn, env, database)
    started = time.monotonic()
    process.signal(signal.SIGTERM)
    code = await process.wait()
    assert time.monotonic() - started < 5
    assert code == 0
    assert telegram.calls_of("sendVideo") == []

    finish_the_video(segmind)  # the video completes while the bot is down
    await spawn(env)
    await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=15)
    await wait_until(lambda: ledger(database)[0]["state"] == "delivered")
    assert len(segmind.submits) == 1
    assert len(telegram.calls_of("sendVideo")) == 1


async def test_sigkill_right_after_the_submit_left_never_submits_twice(
    telegram, segmind, spawn, env, database
):
    telegram.private_chat(USER)
    segmind.submit_delay = 5  # accepted at once, answered late: the bot dies meanwhile
    process = await spawn(env)
    await press_generate(telegram)
    await wait_until(lambda: len(segmind.jobs) == 1, what="submit reached Segmind")
    process.signal(signal.SIGKILL)
    await process.wait()
    assert ledger(database)[0]["state"] == "submitting"
    segmind.submit_delay = 0

    redelivered = redeliver_everything(telegram)
    assert redelivered >= 2  # the photo and the Generate press
    process = await spawn(env)
    # The new process finds the request in Segmind's history by its seed and image URL.
    await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=15)
    # Every re-delivered update handled and the job told: a wrong resubmit or a second
    # keyboard would have happened by now.
    await settle_and_stop(process, telegram, database)
    assert ledger(database)[0]["state"] == "delivered"
    assert len(segmind.submits) == 1
    assert ledger(database)[0]["request_id"] == next(iter(segmind.jobs))
    keyboards = [
        c
        for c in telegram.calls_of("sendMessage", chat_id=USER)
        if c.params["text"].startswith(texts.keyboard_prompt("en"))
    ]
    assert len(keyboards) == 1  # the re-delivered photo found its draft


async def test_sigkill_right_after_the_video_was_sent_delivers_and_never_resubmits(
    telegram, segmind, spawn, env, database
):
    telegram.private_chat(USER)
    process = await spawn(env)
    await press_generate(telegram)
    await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=15)
    process.signal(signal.SIGKILL)
    await process.wait()

    redeliver_everything(telegram)
    process = await spawn(env)
    await wait_until(lambda: ledger(database)[0]["state"] == "delivered", timeout=15)
    await settle_and_stop(process, telegram, database)
    # At most the one documented repeat: Telegram took the video, the bot died before
    # writing it down, so the restart sends it again. Never a second submit.
    assert len(segmind.submits) == 1
    assert 1 <= len([c for c in telegram.calls_of("sendVideo") if c.ok]) <= 2
    assert len(ledger(database)) == 1


async def test_debug_logs_never_show_the_token_or_the_key(telegram, segmind, spawn, env, database):
    telegram.private_chat(USER)
    process = await spawn({**env, "LOG_LEVEL": "DEBUG", "IMAGE_URL_MODE": "telegram"})
    await press_generate(telegram)
    await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=15)
    segmind.fail_next_status(500)
    process.signal(signal.SIGTERM)
    await process.wait()
    _, stderr = await process.output()
    assert "DEBUG" in stderr  # it did log at DEBUG
    assert "getUpdates" in stderr
    assert TEST_TOKEN not in stderr
    assert TEST_TOKEN.split(":")[1] not in stderr
    assert TEST_API_KEY not in stderr


async def test_sigterm_during_a_submit_lets_its_answer_be_recorded(
    telegram, segmind, spawn, env, database
):
    telegram.private_chat(USER)
    segmind.submit_delay = 1.0  # the answer is on its way when SIGTERM arrives
    process = await spawn(env)
    await press_generate(telegram)
    await wait_until(lambda: len(segmind.jobs) == 1, what="submit reached Segmind")
    started = time.monotonic()
    process.signal(signal.SIGTERM)
    assert await process.wait() == 0
    assert time.monotonic() - started < 5
    # Not "uncertain": the shutdown waited for the answer and wrote the request id down.
    (job,) = ledger(database)
    assert job["state"] in ("queued", "processing")
    assert job["request_id"] == next(iter(segmind.jobs))

    segmind.submit_delay = 0
    await spawn(env)
    await telegram.wait_for_call("sendVideo", chat_id=USER, timeout=15)
    assert len(segmind.submits) == 1


# -- another poller on the token --------------------------------------------------------

CONFLICT = (
    "Conflict: terminated by other getUpdates request;"
    " make sure that only one bot instance is running"
)


#: The test-only streak that stops the bot (tests/short_intervals.py), instead of 30 s.
SHORT_CONFLICT_STOP = 4.0


async def test_a_409_conflict_that_persists_stops_the_bot_with_one_line(spawn, env, telegram):
    telegram.fail_next("getUpdates", error_code=409, description=CONFLICT, times=10_000)
    process = await spawn({**env, **shortened(conflict_stop=SHORT_CONFLICT_STOP)}, module=MODULE)
    # PTB retries after 1 s, then 1.5 times longer: the 4 s are over at the 4th try (~5 s).
    code = await process.wait(timeout=30)
    _, stderr = await process.output()
    assert code == 1
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [CONFLICT_STOP_LINE]
    assert stderr.strip().splitlines()[-1] == CONFLICT_STOP_LINE


async def test_a_short_burst_of_409_conflicts_does_not_stop_the_bot(spawn, env, telegram):
    telegram.private_chat(USER)
    telegram.fail_next("getUpdates", error_code=409, description=CONFLICT, times=2)
    process = await spawn(env)
    await send_photo_get_keyboard(telegram, USER, USER)
    assert process.process is not None
    assert process.process.returncode is None
    process.signal(signal.SIGTERM)
    assert await process.wait() == 0


# -- the ledger file deleted under a running bot ----------------------------------------

#: The test-only check interval (tests/short_intervals.py), instead of 10 s.
SHORT_LEDGER_CHECK = 1.0


async def test_a_ledger_file_deleted_while_running_stops_the_bot_with_one_line(
    telegram, spawn, env, database
):
    telegram.private_chat(USER)
    telegram.private_chat(ADMIN_ID)
    process = await spawn({**env, **shortened(ledger_check=SHORT_LEDGER_CHECK)}, module=MODULE)
    await send_photo_get_keyboard(telegram, USER, USER)  # up, and the ledger written
    database.unlink()

    code = await process.wait(timeout=SHORT_LEDGER_CHECK + 15)
    _, stderr = await process.output()
    assert code == 1
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [stderr.strip().splitlines()[-1]]
    assert errors[0].startswith(f"error: DATABASE_PATH {database} was deleted while the bot ran")
    alert = texts.alert("en", AlertKind.LEDGER_FAILING)
    assert [c for c in telegram.calls_of("sendMessage", ADMIN_ID) if c.params["text"] == alert]
