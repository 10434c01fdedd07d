"""Issue 12: a paid submit whose answer never arrived is found, not abandoned.

The real ``python -m bot`` runs as a child process against the fakes, with
``SEGMIND_HISTORY_URL`` pointed at the fake Segmind's request history. Twenty users press
Generate; the submits reach Segmind (accepted and charged) but their answers never come
back — the bot is SIGKILLed while they are on the wire, or the connections close without
an answer. Each job is then looked up in the history by its seed and image URL: twenty
videos, twenty submits, no ``uncertain`` job.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from tests.conftest import bot_env, ledger, wait_until
from tests.processes import BotProcess
from tests.test_crash import redeliver_everything
from tests.test_private_flow import button_data, send_photo_get_keyboard

USERS = [801 + i for i in range(20)]


@pytest.fixture
def env(telegram, segmind, database):
    return bot_env(
        telegram,
        segmind,
        database,
        POLL_INTERVAL_SECONDS="0.1",
        SEGMIND_HISTORY_URL=segmind.history_url,
    )


async def everyone_presses_generate(telegram) -> None:
    for user in USERS:
        telegram.private_chat(user)
        _, keyboard = await send_photo_get_keyboard(telegram, user, user)
        telegram.press_button(
            user, user, keyboard["message_id"], button_data(keyboard, "Generate")
        )


def states(database) -> Counter[str]:
    return Counter(job["state"] for job in ledger(database))


def settled(telegram, database) -> bool:
    """Every update handed out and confirmed, every job ended and its user told."""
    jobs = ledger(database)
    return (
        telegram.pending_updates() == 0
        and len(jobs) == len(USERS)
        and all(job["state"] == "delivered" and job["notified_at"] is not None for job in jobs)
    )


async def stop_settled(process: BotProcess, telegram, database) -> None:
    """Wait until the bot has nothing left to do, then stop it: nothing more can happen.

    Settled is read from the outside (the fake Telegram and the ledger), then SIGTERM
    lets a handler still busy with a confirmed update finish before the process exits.
    """
    await wait_until(
        lambda: settled(telegram, database),
        timeout=60,
        what=f"every job delivered and told ({states(database)})",
    )
    process.signal(signal.SIGTERM)
    assert await process.wait() == 0
    assert settled(telegram, database)


def assert_one_video_each(telegram, segmind, database) -> None:
    assert len(segmind.submits) == len(USERS)
    assert len(segmind.jobs) == len(USERS)
    assert states(database) == Counter({"delivered": len(USERS)})
    for user in USERS:
        videos = [call for call in telegram.calls_of("sendVideo", chat_id=user) if call.ok]
        assert len(videos) == 1, (user, len(videos))
    # Each job recorded the request Segmind made of its own submit, with its own seed.
    jobs = ledger(database)
    assert {job["request_id"] for job in jobs} == set(segmind.jobs)
    for job in jobs:
        sent = segmind.jobs[job["request_id"]].body
        assert (sent["seed"], sent["image_url"]) == (job["seed"], job["image_url"])
    assert len({job["seed"] for job in jobs}) == len(USERS)


async def test_sigkill_with_20_submits_on_the_wire_still_delivers_20_videos(
    telegram, segmind, spawn, env, database
):
    segmind.hold_submit_answers()  # accepted and charged; the answers wait
    segmind.history_lag_seconds = 1.0  # and their records land a little late
    process = await spawn(env)
    await everyone_presses_generate(telegram)
    await wait_until(
        lambda: len(segmind.jobs) == len(USERS), timeout=30, what="20 submits accepted"
    )
    process.signal(signal.SIGKILL)
    await process.wait()
    assert states(database) == Counter({"submitting": len(USERS)})
    assert not any(job["request_id"] for job in ledger(database))
    segmind.release_submit_answers()  # to nobody: the process is gone

    redeliver_everything(telegram)
    process = await spawn(env)
    await stop_settled(process, telegram, database)
    assert_one_video_each(telegram, segmind, database)
    assert segmind.history_lookups >= 1
    _, stderr = await process.output()
    assert "found in Segmind's request history" in stderr
    assert "uncertain" not in [row["state"] for row in ledger(database)]


async def test_20_answers_lost_on_a_closed_connection_are_found_and_delivered(
    telegram, segmind, spawn, env, database
):
    segmind.accept_then_drop_next_submit(times=len(USERS))  # paid, answered by a hang-up
    segmind.history_lag_seconds = 1.0
    segmind.fail_next_history(503, times=5)  # and the history stumbles at first
    process = await spawn(env)
    await everyone_presses_generate(telegram)
    await stop_settled(process, telegram, database)
    assert_one_video_each(telegram, segmind, database)
    _, stderr = await process.output()
    assert stderr.count("submit outcome unknown") == len(USERS)
    assert "submit not found" not in stderr
