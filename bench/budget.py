"""``python -m bench budget``: three processes sharing one Telegram budget on PostgreSQL.

Starts a throwaway PostgreSQL (tests/pgserver.py) and the fake Telegram in this process,
then three child processes — each what a bot instance has for Telegram: a
PostgresLedger with its own pool, shared with its own PriorityRateLimiter, and a PTB bot
— which all send their messages at once, every chat written to by all three. The fake
records when each message arrived: messages a second (mean over the round, most in any
one second), each chat's closest two messages, and the budget's statements per message.
A second round runs the same three processes each with its own budget only (as three
SQLite bots would be), for contrast.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from bot.storage.postgres import PostgresLedger
from bot.telegram.pacing import Priority, PriorityRateLimiter, SharedBudget, SharedPlace
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram
from tests.pgserver import PostgresServer

from .measure import max_in_window
from .run import REPO, say

__all__ = ["main"]

PROCESSES = 3
#: The child reads the ledger's URL here, not from its command line (``ps`` shows that).
_URL_VARIABLE = "BENCH_BUDGET_DATABASE_URL"


class CountingBudget:
    """The ledger's budget calls, counted (statements to PostgreSQL per message)."""

    def __init__(self, budget: SharedBudget) -> None:
        self._budget = budget
        self.calls: Counter[str] = Counter()

    async def take_send_places(
        self, limit: int, count: int, flight: float, reserve: int = 0
    ) -> tuple[list[SharedPlace], float | None]:
        self.calls["take_send_places"] += 1
        return await self._budget.take_send_places(limit, count, flight, reserve)

    async def give_back_send_places(self, places: Sequence[SharedPlace], span: float) -> None:
        self.calls["give_back_send_places"] += 1
        await self._budget.give_back_send_places(places, span)

    async def take_chat_turn(self, chat_id: int, flight: float) -> tuple[float | None, float]:
        self.calls["take_chat_turn"] += 1
        return await self._budget.take_chat_turn(chat_id, flight)

    async def end_chat_turn(self, chat_id: int, held: float, gap: float) -> None:
        self.calls["end_chat_turn"] += 1
        await self._budget.end_chat_turn(chat_id, held, gap)


# -- a child: one instance's sending side -------------------------------------------


async def _child(api_url: str, index: int, chats: list[int], shared: bool) -> dict[str, Any]:
    ledger = PostgresLedger(os.environ[_URL_VARIABLE], pool_size=10)
    await ledger.open()
    limiter = PriorityRateLimiter()
    counting = CountingBudget(ledger)
    if shared:
        limiter.share(counting)
    bot: ExtBot[Priority] = ExtBot(
        TEST_TOKEN,
        base_url=api_url,
        rate_limiter=limiter,
        request=HTTPXRequest(connection_pool_size=64),
    )
    await bot.initialize()
    try:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
        started = time.monotonic()
        results = await asyncio.gather(
            *(bot.send_message(chat, f"{index} to {chat}") for chat in chats),
            return_exceptions=True,
        )
        took = time.monotonic() - started
    finally:
        await bot.shutdown()
        await limiter.shutdown()
        await ledger.close()
    failures = [repr(result) for result in results if isinstance(result, BaseException)]
    return {
        "sent": len(results) - len(failures),
        "failures": failures[:3],
        "seconds": round(took, 2),
        "budget_calls": dict(counting.calls),
    }


# -- the parent: the database, the fake Telegram, the three, the figures ------------


@dataclass
class BudgetRound:
    shared: bool
    #: Each chat written to by one process only (else by all three at once).
    split: bool
    messages: int
    arrived: int
    seconds: float
    mean_per_second: float
    max_in_one_second: int
    chat_max_in_one_second: int
    chat_min_gap: float
    statements_per_message: float
    statements: dict[str, int]
    failures: list[str]

    def row(self) -> str:
        return (
            f"| {'one shared budget' if self.shared else 'each alone'}"
            f"{', chats split' if self.split else ', same chats'} | {self.messages}"
            f" | {self.arrived} | {self.seconds:.1f} | {self.mean_per_second:.1f}"
            f" | {self.max_in_one_second} | {self.chat_max_in_one_second}"
            f" | {self.chat_min_gap:.2f} | {self.statements_per_message:.2f} |"
        )


HEADER = (
    "| 3 processes | messages | arrived | s first→last | msgs/s mean | most in 1 s"
    " | per chat most in 1 s | per chat closest s | budget statements/msg |\n"
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|"
)


async def _round(
    server: PostgresServer, private_chats: int, groups: int, shared: bool, split: bool
) -> BudgetRound:
    database = server.create_database()
    url = server.url(database)
    try:
        migrate = PostgresLedger(url)
        await migrate.open()  # once, before the three start
        await migrate.close()
        async with FakeTelegram() as telegram:
            chats = [telegram.private_chat(10_000 + i) for i in range(private_chats)]
            chats += [telegram.group(-100_900 - i) for i in range(groups)]
            # Split: as many messages, each chat's three from one process.
            shares = [chats[index::PROCESSES] if split else chats for index in range(PROCESSES)]
            children = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench",
                    "budget",
                    "--child",
                    str(index),
                    "--api",
                    telegram.api_url,
                    "--chats",
                    ",".join(map(str, shares[index] * (PROCESSES if split else 1))),
                    *([] if shared else ["--alone"]),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    cwd=REPO,
                    env={**os.environ, _URL_VARIABLE: url},
                )
                for index in range(PROCESSES)
            ]
            for child in children:
                assert child.stdout is not None
                line = await asyncio.wait_for(child.stdout.readline(), 60)
                assert line.strip() == b"ready", line
            for child in children:  # all three at once
                assert child.stdin is not None
                child.stdin.write(b"go\n")
                await child.stdin.drain()
            reports = []
            for child in children:
                out, _ = await asyncio.wait_for(child.communicate(), 300)
                reports.append(json.loads(out.decode().strip().splitlines()[-1]))
            times = sorted(telegram.send_times())
            per_chat = [telegram.send_times(chat) for chat in chats]
    finally:
        server.drop_database(database)
    statements: Counter[str] = Counter()
    for report in reports:
        statements.update(report["budget_calls"])
    calls = sum(statements.values())
    gaps = [
        later - earlier
        for chat_times in per_chat
        for earlier, later in itertools.pairwise(sorted(chat_times))
    ]
    seconds = times[-1] - times[0] if len(times) > 1 else 0.0
    return BudgetRound(
        shared=shared,
        split=split,
        messages=sum(len(share) for share in shares) * (PROCESSES if split else 1),
        arrived=len(times),
        seconds=seconds,
        mean_per_second=(len(times) - 1) / seconds if seconds else float("nan"),
        max_in_one_second=max_in_window(times),
        chat_max_in_one_second=max(max_in_window(chat_times) for chat_times in per_chat),
        chat_min_gap=min(gaps) if gaps else float("nan"),
        statements_per_message=calls / max(1, len(times)),
        statements=dict(statements),
        failures=[failure for report in reports for failure in report["failures"]],
    )


async def _main_async(args: argparse.Namespace) -> list[BudgetRound]:
    server = await asyncio.to_thread(PostgresServer().start)
    try:
        rounds = []
        kinds = [(True, False), (True, True)] + ([(False, False)] if args.contrast else [])
        for shared, split in kinds:
            say(f"{'shared budget' if shared else 'each alone'}, split {split} ...")
            result = await _round(server, args.private_chats, args.groups, shared, split)
            say(result.row())
            rounds.append(result)
        return rounds
    finally:
        await asyncio.to_thread(server.stop)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench budget", description=__doc__)
    parser.add_argument("--private-chats", type=int, default=190)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument(
        "--contrast",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the three each with its own budget only",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    parser.add_argument("--chats", help=argparse.SUPPRESS)
    parser.add_argument("--alone", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = _parse(argv)
    if args.child is not None:
        chats = [int(chat) for chat in args.chats.split(",")]
        report = asyncio.run(_child(args.api, args.child, chats, not args.alone))
        print(json.dumps(report), flush=True)
        return 0
    rounds = asyncio.run(_main_async(args))
    print(HEADER)
    for result in rounds:
        print(result.row())
    print(
        f"\n{time.strftime('%Y-%m-%d', time.gmtime())}, Python {platform.python_version()},"
        f" {os.cpu_count()} cores; failures: {[r.failures for r in rounds]}"
    )
    for result in rounds:
        if result.statements:
            print(f"budget statements ({result.messages} messages): {result.statements}")
    return 0
