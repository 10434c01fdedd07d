"""The ledger at start: one running bot per SQLite ledger (a second `python -m bot` on
the same DATABASE_PATH stops with one line, exit 1; `check` still works beside the running
one; a SIGKILLed bot leaves no stale lock), and a ledger that cannot be used is named in
one line and left untouched."""

from __future__ import annotations

import signal

import pytest

from bot.storage import LedgerLocked, SqliteLedger
from tests.conftest import ledger, wait_until
from tests.test_crash import press_generate


async def test_an_exclusive_ledger_refuses_a_second_holder_until_closed(tmp_path):
    path = tmp_path / "bot.sqlite3"
    first = SqliteLedger(path, exclusive=True)
    await first.open()
    second = SqliteLedger(path, exclusive=True)
    with pytest.raises(LedgerLocked, match="another bot"):
        await second.open()
    reader = SqliteLedger(path)  # check's way: no lock needed
    await reader.open()
    await reader.close()
    await first.close()
    await second.open()  # free again once the first closed
    await second.close()


async def test_a_second_bot_on_the_same_ledger_stops_with_one_line(
    telegram, segmind, spawn, env, database
):
    telegram.private_chat(701)
    first = await spawn(env)
    # deleteWebhook comes right before the first (long) getUpdates: the bot is up.
    await wait_until(lambda: telegram.calls_of("deleteWebhook"), what="the first bot up")
    second = await spawn(env)
    assert await second.wait(timeout=20) == 1
    _, stderr = await second.output()
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: another bot is running on this ledger (DATABASE_PATH {database}); stop it first"
    ]
    assert "Traceback" not in stderr

    check = await spawn(env, "check")  # beside the running bot, check still works
    assert await check.wait(timeout=20) == 0

    # The first bot still works alone, and a SIGKILL leaves no stale lock.
    segmind.processing_seconds = 0.2
    await press_generate(telegram)
    await telegram.wait_for_call("sendVideo", chat_id=701, timeout=15)
    first.signal(signal.SIGKILL)
    await first.wait()
    ups = len(telegram.calls_of("deleteWebhook"))
    third = await spawn(env)
    await wait_until(lambda: len(telegram.calls_of("deleteWebhook")) > ups, what="bot 3 up")
    assert third.process is not None
    assert third.process.returncode is None  # it holds the ledger now
    # Killed maybe right after sendVideo: the new holder finishes the job (one submit).
    await wait_until(lambda: ledger(database)[0]["state"] == "delivered", what="delivered")
    assert len(segmind.submits) == 1


@pytest.mark.parametrize("command", [(), ("check",)], ids=["run", "check"])
async def test_a_damaged_ledger_stops_the_bot_with_one_line_and_is_left_alone(
    telegram, segmind, spawn, env, database, command
):
    database.parent.mkdir(parents=True)
    database.write_bytes(b"not a ledger at all" * 200)
    before = database.read_bytes()
    process = await spawn(env, *command)
    assert await process.wait(timeout=20) == 1
    _, stderr = await process.output()
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: DATABASE_PATH {database} is not a bot ledger (a damaged or unrelated file)"
    ]
    assert "Traceback" not in stderr
    assert database.read_bytes() == before
    assert telegram.calls_of("getUpdates") == []


async def test_telegram_unreachable_at_start_is_one_line_without_library_noise(spawn, env):
    process = await spawn({**env, "TELEGRAM_API_URL": "http://127.0.0.1:9", "LOG_LEVEL": "INFO"})
    assert await process.wait(timeout=30) == 1
    _, stderr = await process.output()
    errors = [line for line in stderr.splitlines() if " ERROR " in line or "error:" in line]
    assert errors == ["error: cannot reach Telegram at TELEGRAM_API_URL (NetworkError)"]
    assert "Network Retry Loop" not in stderr
    assert "Traceback" not in stderr
