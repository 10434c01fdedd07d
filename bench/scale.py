"""``python -m bench scale``: three whole bot instances on one PostgreSQL ledger.

What an operator runs with ``deploy/compose.scale.yaml``, on one machine: a throwaway
PostgreSQL (tests/pgserver.py), three ``python -m bot`` processes in webhook mode on
one ``DATABASE_URL``, each serving its own port behind a round-robin balancer
(tests/fakes/balancer.py), the fake Telegram pushing every update to the balancer, and
the fake Segmind with real job times. N users go through photo → keyboard → Generate →
video as in the single-process round (bench/run.py): their photos arrive 25 a second.

Once Segmind has accepted every submit (all N jobs in flight; ``--kill submitted``), or
once a third of the videos are out (``--kill delivering``: the others' jobs are
finishing then), the instance holding the most unfinished jobs is killed (SIGKILL: no
clean stop, its leases are not let go). The bench then watches the ledger: a job is
*taken over* when its row names one of the other two instances. It reports when each
was taken over after the kill, when Segmind next heard about it, and whether all of
them were delivered once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from tests.fakes.balancer import RoundRobinBalancer
from tests.fakes.segmind import FakeJob
from tests.fakes.telegram import FakeTelegram
from tests.pgserver import PostgresServer

from .fakes import BenchSegmind
from .measure import ProcSample, max_in_window, percentile, proc_sample
from .run import (
    _MEASURED_PHOTO_BASE,
    _WARMUP_PHOTO_BASE,
    _WARMUP_USER_BASE,
    MESSAGE_METHODS,
    REPO,
    BenchConfig,
    CallWatcher,
    User,
    _quiet,
    _round_timeout,
    _stop_process,
    _telegram_rates,
    _users,
    bot_environment,
    play_users,
    say,
)

__all__ = ["ScaleRound", "main", "run_scale_round"]

INSTANCES = 3
WEBHOOK_PATH = "/telegram/hook"
#: The bench's own secret for the fake's webhook posts (not a real one: nothing leaves
#: 127.0.0.1).
_WEBHOOK_SECRET = "bench_Webhook-secret"
_READY_TIMEOUT = 60.0
#: How often the ledger is read while a killed instance's jobs wait to be taken over.
_TAKEOVER_WATCH_EVERY = 0.1
#: Longest the bench waits for the takeover: the lease (30 s) lapses 20-30 s after the
#: kill, then a scan (every 5 s) claims the jobs; twice that for a loaded machine.
_TAKEOVER_TIMEOUT = 120.0
#: Bot settings of webhook mode and PostgreSQL, dropped from this shell's environment.
_SCALE_SETTINGS = ("DATABASE_URL", "WEBHOOK_URL", "WEBHOOK_SECRET", "HTTP_LISTEN")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(eq=False)
class Instance:
    """One ``python -m bot`` of the three: its process, folder and log."""

    index: int
    port: int
    folder: Path
    process: asyncio.subprocess.Process
    log_path: Path
    before: ProcSample | None = None
    after: ProcSample | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def owns(self, owner: str | None) -> bool:
        """Whether a lease's owner (host-pid-random) names this instance."""
        return owner is not None and owner.rsplit("-", 2)[-2:-1] == [str(self.pid)]

    def log_problems(self) -> list[str]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if "ERROR" in line or "Traceback" in line]

    def log_warnings(self) -> list[str]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if "WARNING" in line]


@dataclass
class Cluster:
    telegram: FakeTelegram
    segmind: BenchSegmind
    balancer: RoundRobinBalancer
    server: PostgresServer
    url: str
    instances: list[Instance]
    watcher: CallWatcher
    #: Statements the bench itself ran on the ledger's database (not the bots' work).
    queries: int = 0

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        self.queries += 1
        conn = await asyncpg.connect(self.url)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()


def _postgres_cpu_seconds(server: PostgresServer) -> float:
    """CPU time of the whole PostgreSQL server: the postmaster, the children it has
    reaped (cutime, cstime) and those still running (each connection's backend)."""
    ticks = os.sysconf("SC_CLK_TCK")
    postmaster = server.pid()
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid, ppid = int(entry.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(value) for value in fields[11:15]) / ticks
        elif ppid == postmaster:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


async def _table_activity(cluster: Cluster) -> dict[str, int]:
    """Rows written (inserted, updated, deleted) and index/sequential scans so far, per
    table of the ledger: where the transactions go."""
    rows = await cluster.fetch(
        "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del AS written,"
        " coalesce(idx_scan, 0) + coalesce(seq_scan, 0) AS scans FROM pg_stat_user_tables"
    )
    activity = {f"{r['relname']} written": int(r["written"]) for r in rows}
    activity.update({f"{r['relname']} scans": int(r["scans"]) for r in rows})
    return activity


async def _transactions(cluster: Cluster) -> int:
    """Transactions committed or rolled back in the bench's database so far."""
    rows = await cluster.fetch(
        "SELECT xact_commit + xact_rollback AS n FROM pg_stat_database"
        " WHERE datname = current_database()"
    )
    return int(rows[0]["n"])


@contextlib.asynccontextmanager
async def cluster_running(
    config: BenchConfig, label: str, webhook_connections: int
) -> AsyncIterator[Cluster]:
    """PostgreSQL, both fakes, the balancer and the three bots; all stopped on exit.
    The fake Telegram posts up to ``webhook_connections`` updates at once."""
    root = Path(tempfile.mkdtemp(prefix=f"warmth-bench-{label}-"))
    server = await asyncio.to_thread(PostgresServer().start)
    database = await asyncio.to_thread(server.create_database)
    url = server.url(database)
    telegram = FakeTelegram(keep_uploads_up_to=0)
    low, high = config.processing_range
    segmind = BenchSegmind(
        queued_seconds=config.queued_seconds * config.scale,
        processing_range=(low * config.scale, high * config.scale),
        rng=random.Random(config.seed),
        video_size=config.video_bytes,
    )
    await telegram.start()
    await segmind.start()
    watcher = CallWatcher(telegram)
    watch_task = asyncio.create_task(watcher.run(), name="call-watcher")
    ports = [_free_port() for _ in range(INSTANCES)]
    balancer = await RoundRobinBalancer([f"http://127.0.0.1:{port}" for port in ports]).start()
    telegram.webhook_proxy = balancer.url
    telegram.webhook_connections = webhook_connections
    cluster = Cluster(telegram, segmind, balancer, server, url, [], watcher)
    try:
        for index, port in enumerate(ports):
            folder = root / f"bot-{index + 1}"
            folder.mkdir()
            env = bot_environment(
                telegram,
                segmind,
                folder / "data" / "bot.sqlite3",  # its photos/ folder; the ledger is PostgreSQL
                config.bot_interval,
                config.bot_source,
            )
            for name in _SCALE_SETTINGS:
                env.pop(name, None)
            env.update(
                {
                    "DATABASE_URL": url,
                    "WEBHOOK_URL": f"https://bot.example.test{WEBHOOK_PATH}",
                    "WEBHOOK_SECRET": _WEBHOOK_SECRET,
                    "HTTP_LISTEN": f"127.0.0.1:{port}",
                }
            )
            log_path = folder / "bot.log"
            with log_path.open("wb") as log_file:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bot",
                    cwd=folder,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                )
            cluster.instances.append(Instance(index + 1, port, folder, process, log_path))
        # Each instance sets the webhook once its HTTP server listens.
        deadline = time.monotonic() + _READY_TIMEOUT
        while len(telegram.calls_of("setWebhook")) < INSTANCES:
            dead = [i for i in cluster.instances if not i.alive]
            if dead or time.monotonic() > deadline:
                tail = "\n".join(
                    i.log_path.read_text(errors="replace")[-1500:] for i in cluster.instances
                )
                raise RuntimeError(f"the instances did not all start:\n{tail}")
            await asyncio.sleep(0.05)
        say(f"{label}: {INSTANCES} instances serving (pids {[i.pid for i in cluster.instances]})")
        yield cluster
    finally:
        for instance in cluster.instances:
            await _stop_process(instance.process)
        say(f"{label}: instances stopped {[i.process.returncode for i in cluster.instances]}")
        watch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch_task
        await balancer.close()
        await telegram.stop()
        await segmind.stop()
        await asyncio.to_thread(server.stop)
        if config.keep_dirs:
            say(f"{label}: kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- results


@dataclass
class Takeover:
    """What became of the killed instance's jobs."""

    #: The killed instance's unfinished jobs at the kill, by state.
    states: dict[str, int]
    #: Kill → the row names another instance, per job (seconds).
    claimed_after_s: list[float]
    #: Kill → Segmind's next request about the job (a status poll, its result, the video).
    segmind_after_s: list[float]
    #: Jobs not taken over within the bench's timeout.
    not_taken: int
    delivered_once: int
    duplicates: int
    #: COMPLETED → sendVideo of these jobs (the others' are in the round's figures).
    completed_to_video_s: list[float]

    @property
    def jobs(self) -> int:
        return sum(self.states.values())

    def summary(self) -> dict[str, Any]:
        def p(values: Sequence[float], q: float) -> float | None:
            return round(percentile(values, q), 2) if values else None

        return {
            "jobs": self.jobs,
            "states_at_kill": self.states,
            "claimed_after_s": {
                "min": p(self.claimed_after_s, 0),
                "p50": p(self.claimed_after_s, 50),
                "max": p(self.claimed_after_s, 100),
            },
            "segmind_after_s": {
                "min": p(self.segmind_after_s, 0),
                "p50": p(self.segmind_after_s, 50),
                "max": p(self.segmind_after_s, 100),
            },
            "not_taken": self.not_taken,
            "delivered_once": self.delivered_once,
            "duplicates": self.duplicates,
            "completed_to_video_s": {
                "p50": p(self.completed_to_video_s, 50),
                "p95": p(self.completed_to_video_s, 95),
            },
        }


@dataclass
class ScaleRound:
    users: int
    seconds: float
    delivered: int
    duplicates: int
    failures: list[str]
    #: Videos delivered per second, first photo → last video.
    jobs_per_second: float
    #: Most videos delivered in any 10 s window, per second.
    videos_per_second_max_10s: float
    #: Messages (sends and edits) at Telegram per user of the round.
    messages_per_job: float
    presses: int
    submits: int
    #: Jobs Segmind accepted that no ledger row of the round names (a second submit).
    unrecorded_submits: int
    polls: list[int]
    photo_to_keyboard_ms: list[float]
    generate_to_submit_ms: list[float]
    completed_to_video_s: list[float]
    telegram_messages_max: int
    telegram_calls_max: int
    chat_messages_max: int
    telegram_errors: int
    segmind_rate_max: int
    cpu_seconds: list[float]
    peak_rss_mb: list[float]
    postgres_cpu_seconds: float
    postgres_transactions: int
    #: Per table: rows written and scans during the round (pg_stat_user_tables).
    postgres_tables: dict[str, int]
    webhook_posts: int
    webhook_retries: int
    load_average: tuple[float, float]
    takeover: Takeover | None
    #: When the SIGKILL came (see KILL_MOMENTS).
    kill: str = "none"
    #: Updates the fake Telegram posted at once.
    webhook_connections: int = 1
    #: Exit statuses at the SIGTERM after the round (-9: the killed one).
    exit_codes: list[int | None] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)
    log_warnings: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.users - self.delivered

    def summary(self) -> dict[str, Any]:
        def pair(values: Sequence[float]) -> list[float] | None:
            if not values:
                return None
            return [round(percentile(values, 50), 3), round(percentile(values, 95), 3)]

        return {
            "users": self.users,
            "seconds": round(self.seconds, 1),
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "failures": self.failures[:10],
            "jobs_per_second": round(self.jobs_per_second, 2),
            "videos_per_second_max_10s": round(self.videos_per_second_max_10s, 1),
            "messages_per_job": round(self.messages_per_job, 2),
            "presses": self.presses,
            "submits": self.submits,
            "unrecorded_submits": self.unrecorded_submits,
            "polls_mean": round(statistics.fmean(self.polls), 2) if self.polls else None,
            "polls_max": max(self.polls, default=0),
            "photo_to_keyboard_ms_p50_p95": pair(self.photo_to_keyboard_ms),
            "generate_to_submit_ms_p50_p95": pair(self.generate_to_submit_ms),
            "completed_to_video_s_p50_p95": pair(self.completed_to_video_s),
            "telegram_messages_max_per_s": self.telegram_messages_max,
            "telegram_calls_max_per_s": self.telegram_calls_max,
            "chat_messages_max_per_s": self.chat_messages_max,
            "telegram_errors": self.telegram_errors,
            "segmind_requests_max_per_s": self.segmind_rate_max,
            "cpu_seconds_per_instance": [round(c, 1) for c in self.cpu_seconds],
            "peak_rss_mb_per_instance": [round(r, 1) for r in self.peak_rss_mb],
            "postgres_cpu_seconds": round(self.postgres_cpu_seconds, 1),
            "postgres_transactions": self.postgres_transactions,
            "postgres_tables": {k: v for k, v in self.postgres_tables.items() if v},
            "webhook_posts": self.webhook_posts,
            "webhook_retries": self.webhook_retries,
            "load_average_start_end": list(self.load_average),
            "kill": self.kill,
            "webhook_connections": self.webhook_connections,
            "takeover": self.takeover.summary() if self.takeover else None,
            "exit_codes": self.exit_codes,
            "log_problems": self.log_problems[:10],
            "log_warnings": self.log_warnings[:20],
        }


def _pair(values: Sequence[float], fmt: str) -> str:
    if not values:
        return "—"
    return f"{percentile(values, 50):{fmt}} / {percentile(values, 95):{fmt}}"


HEADER = (
    "| 3 instances | N | jobs/s | status polls/job mean / max | TG msgs/s max"
    " | photo→keyboard ms p50 / p95 | Generate→submit ms p50 / p95"
    " | COMPLETED→sendVideo s p50 / p95 | submits / Generate | lost | duplicate videos"
    " | CPU s/job: bots + PostgreSQL | PG transactions/job |\n"
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
)
TAKEOVER_HEADER = (
    "| SIGKILL | its jobs at the kill | taken over after s min / p50 / max"
    " | Segmind heard of them after s min / p50 / max | not taken over"
    " | delivered once / twice | their COMPLETED→sendVideo s p50 / p95 |\n"
    "|---|--:|--:|--:|--:|--:|--:|"
)


def row(result: ScaleRound) -> str:
    polls = f"{statistics.fmean(result.polls):.1f} / {max(result.polls)}" if result.polls else "—"
    cells = [
        "bot" if result.takeover is None else f"bot, one SIGKILLed ({result.kill})",
        str(result.users),
        f"{result.jobs_per_second:.2f}",
        polls,
        str(result.telegram_messages_max),
        _pair(result.photo_to_keyboard_ms, ".0f"),
        _pair(result.generate_to_submit_ms, ".0f"),
        _pair(result.completed_to_video_s, ".2f"),
        f"{result.submits} / {result.presses}",
        str(result.lost),
        str(result.duplicates),
        f"{sum(result.cpu_seconds) / max(1, result.users):.3f}"
        f" + {result.postgres_cpu_seconds / max(1, result.users):.3f}",
        f"{result.postgres_transactions / max(1, result.users):.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


def takeover_row(result: ScaleRound) -> str:
    t = result.takeover
    if t is None:
        return ""

    def spread(values: Sequence[float]) -> str:
        if not values:
            return "—"
        return " / ".join(f"{percentile(values, q):.1f}" for q in (0, 50, 100))

    states = ", ".join(f"{count} {state}" for state, count in sorted(t.states.items()))
    cells = [
        f"N = {result.users}, {result.kill}",
        f"{t.jobs} ({states})",
        spread(t.claimed_after_s),
        spread(t.segmind_after_s),
        str(t.not_taken),
        f"{t.delivered_once} / {t.duplicates}",
        _pair(t.completed_to_video_s, ".2f"),
    ]
    return "| " + " | ".join(cells) + " |"


# --------------------------------------------------------------------------- the round


async def _owners(cluster: Cluster) -> dict[int, FakeJob]:
    """Each user's Segmind job, through the shared ledger (user id → request id)."""
    rows = await cluster.fetch("SELECT user_id, request_id FROM jobs WHERE request_id IS NOT NULL")
    by_request = {str(r["request_id"]): int(r["user_id"]) for r in rows}
    return {
        by_request[job.request_id]: job
        for job in cluster.segmind.jobs.values()
        if job.request_id in by_request
    }


async def _kill_busiest(
    cluster: Cluster, users: set[int]
) -> tuple[Instance, float, dict[int, str]] | None:
    """SIGKILL the instance holding the most of the round's unfinished jobs; it, the
    moment of the kill, and its jobs (id → state)."""
    rows = await cluster.fetch(
        "SELECT id, user_id, owner, state FROM jobs"
        " WHERE notified_at IS NULL AND owner IS NOT NULL"
    )
    held: dict[int, dict[int, str]] = {i.index: {} for i in cluster.instances}
    for r in rows:
        if int(r["user_id"]) not in users:
            continue
        for instance in cluster.instances:
            if instance.owns(r["owner"]):
                held[instance.index][int(r["id"])] = str(r["state"])
    index = max(held, key=lambda i: len(held[i]))
    if not held[index]:
        return None
    victim = next(i for i in cluster.instances if i.index == index)
    victim.after = proc_sample(victim.pid)
    victim.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    await victim.process.wait()
    return victim, killed_at, held[index]


async def _watch_takeover(
    cluster: Cluster, victim: Instance, killed_at: float, jobs: dict[int, str]
) -> dict[int, float]:
    """Kill → the moment each of the victim's jobs is seen held by another instance
    (or finished), read from the ledger every _TAKEOVER_WATCH_EVERY seconds."""
    taken: dict[int, float] = {}
    ids = list(jobs)
    conn = await asyncpg.connect(cluster.url)
    try:
        while len(taken) < len(ids) and time.monotonic() - killed_at < _TAKEOVER_TIMEOUT:
            rows = await conn.fetch(
                "SELECT id, owner, notified_at FROM jobs WHERE id = ANY($1::bigint[])", ids
            )
            cluster.queries += 1
            now = time.monotonic()
            for r in rows:
                if int(r["id"]) in taken:
                    continue
                if (r["owner"] is not None and not victim.owns(r["owner"])) or r[
                    "notified_at"
                ] is not None:
                    taken[int(r["id"])] = now - killed_at
            await asyncio.sleep(_TAKEOVER_WATCH_EVERY)
    finally:
        await conn.close()
    return taken


def _all_submitted(users: Sequence[User], accepted: int) -> bool:
    """Every user pressed Generate (or failed before it), and Segmind accepted a job for
    each press that did not end in a failure or a text outcome."""
    if any(math.isnan(u.press_at) and u.failure is None and u.outcome_text is None for u in users):
        return False
    pressed = sum(
        1
        for u in users
        if not math.isnan(u.press_at) and u.failure is None and u.outcome_text is None
    )
    return accepted >= pressed


#: When the round's SIGKILL comes (``--kill``).
KILL_MOMENTS = ("submitted", "delivering", "none")


async def run_scale_round(
    config: BenchConfig, users: int, *, kill: str, webhook_connections: int = 40
) -> ScaleRound:
    """Warm the shared ledger up, drive ``users`` users through the three instances,
    SIGKILL the busiest at the moment ``kill`` names; measure the round."""
    label = f"scale{users}"
    async with cluster_running(config, label, webhook_connections) as cluster:
        telegram, segmind = cluster.telegram, cluster.segmind
        warm = _users(config.warmup_jobs, _WARMUP_USER_BASE, _WARMUP_PHOTO_BASE)
        await play_users(
            telegram,
            cluster.watcher,
            warm,
            think=config.think_seconds,
            ramp=0.0,
            within=_round_timeout(config, len(warm)),
        )
        if any(user.videos == 0 for user in warm):
            raise RuntimeError(f"warm-up failed: {[u.failure for u in warm if u.failure]}")
        say(f"{label}: warm-up of {len(warm)} jobs done")
        await asyncio.sleep(1.5)

        measured = _users(users, 1, _MEASURED_PHOTO_BASE)
        calls_before = len(telegram.calls)
        log_before = len(segmind.requests_log)
        accepted_before = len(segmind.jobs)
        submits_before = len(segmind.submits)
        posts_before = len(telegram.webhook_posts)
        for instance in cluster.instances:
            instance.before = proc_sample(instance.pid)
        pg_cpu_before = _postgres_cpu_seconds(cluster.server)
        transactions_before = await _transactions(cluster)
        tables_before = await _table_activity(cluster)
        queries_before = cluster.queries
        load_start = os.getloadavg()[0]
        started = time.monotonic()
        users_task = asyncio.create_task(
            play_users(
                telegram,
                cluster.watcher,
                measured,
                think=config.think_seconds,
                ramp=config.ramp_for(users),
                within=_round_timeout(config, users)
                + (_TAKEOVER_TIMEOUT if kill != "none" else 0.0),
            )
        )
        takeover: Takeover | None = None
        victim_jobs: dict[int, str] = {}
        victim: Instance | None = None
        killed_at = math.nan
        taken: dict[int, float] = {}
        if kill != "none":
            # "submitted": every job accepted by Segmind, all of them in flight (users
            # whose photo or Generate failed are not waited for); "delivering": a third
            # of the videos out, the rest finishing.
            while (
                not _all_submitted(measured, len(segmind.jobs) - accepted_before)
                if kill == "submitted"
                else sum(1 for u in measured if u.videos) < users // 3
            ):
                if users_task.done():
                    break
                await asyncio.sleep(0.05)
            killed = await _kill_busiest(cluster, {u.user_id for u in measured})
            if killed is not None:
                victim, killed_at, victim_jobs = killed
                say(f"{label}: SIGKILL instance {victim.index} holding {len(victim_jobs)} jobs")
                taken = await _watch_takeover(cluster, victim, killed_at, victim_jobs)
                say(
                    f"{label}: {len(taken)} of {len(victim_jobs)} taken over within"
                    f" {max(taken.values(), default=math.nan):.1f} s of the kill"
                )
        await users_task
        await _quiet(telegram)
        ended = time.monotonic()
        load_end = os.getloadavg()[0]
        say(f"{label}: measured round done in {ended - started:.1f}s")
        for instance in cluster.instances:
            if instance.alive:
                instance.after = proc_sample(instance.pid)
        # The survivors stop cleanly (SIGTERM) before PostgreSQL's figures are read: a
        # backend sends its statistics to pg_stat_database when it goes idle for 10 s, or
        # at its exit.
        for instance in cluster.instances:
            await _stop_process(instance.process)
        pg_cpu = _postgres_cpu_seconds(cluster.server) - pg_cpu_before
        await asyncio.sleep(0.5)
        bench_queries = cluster.queries - queries_before
        transactions = await _transactions(cluster) - transactions_before - bench_queries
        tables = {
            name: count - tables_before.get(name, 0)
            for name, count in (await _table_activity(cluster)).items()
        }
        cluster.watcher.scan()

        owners = await _owners(cluster)
        measured_ids = {u.user_id for u in measured}
        round_jobs = [job for uid, job in owners.items() if uid in measured_ids]
        by_user = {u.user_id: u for u in measured}
        photo_ms = [
            (u.keyboard_at - u.photo_at) * 1000 for u in measured if not math.isnan(u.keyboard_at)
        ]
        submit_ms = [
            (owners[u.user_id].submitted_at - u.press_at) * 1000
            for u in measured
            if u.user_id in owners
        ]
        to_video = {
            u.user_id: u.video_at - owners[u.user_id].finished_at
            for u in measured
            if u.user_id in owners and not math.isnan(u.video_at)
        }
        victim_user_ids: set[int] = set()
        if victim is not None:
            rows = await cluster.fetch(
                "SELECT id, user_id, request_id FROM jobs WHERE id = ANY($1::bigint[])",
                list(victim_jobs),
            )
            victim_user_ids = {int(r["user_id"]) for r in rows}
            after_kill: list[float] = []
            first_request: dict[str, float] = {}
            for at, _method, path, _status in segmind.requests_log[log_before:]:
                if at < killed_at:
                    continue
                for prefix in ("/v2/requests/", "/outputs/"):
                    if path.startswith(prefix):
                        rid = path[len(prefix) :].split("/", 1)[0].removesuffix(".mp4")
                        first_request.setdefault(rid, at)
            for r in rows:
                rid = r["request_id"]
                if rid is not None and str(rid) in first_request:
                    after_kill.append(first_request[str(rid)] - killed_at)
            theirs = [by_user[uid] for uid in victim_user_ids if uid in by_user]
            takeover = Takeover(
                states=dict(
                    sorted(
                        {
                            s: sum(1 for v in victim_jobs.values() if v == s)
                            for s in set(victim_jobs.values())
                        }.items()
                    )
                ),
                claimed_after_s=sorted(taken.values()),
                segmind_after_s=sorted(after_kill),
                not_taken=len(victim_jobs) - len(taken),
                delivered_once=sum(1 for u in theirs if u.videos == 1),
                duplicates=sum(u.videos - 1 for u in theirs if u.videos > 1),
                completed_to_video_s=[
                    to_video[u.user_id] for u in theirs if u.user_id in to_video
                ],
            )
        videos = [u.video_at for u in measured if not math.isnan(u.video_at)]
        first_photo = min(u.photo_at for u in measured)
        calls = telegram.calls[calls_before:]
        rates = _telegram_rates(calls)
        requests = [entry[0] for entry in segmind.requests_log[log_before:]]
        failures = [f"{u.user_id}: {u.failure}" for u in measured if u.failure]
        failures += [f"{u.user_id}: got {u.outcome_text!r}" for u in measured if u.outcome_text]
        posts = telegram.webhook_posts[posts_before:]
        return ScaleRound(
            users=users,
            seconds=ended - started,
            delivered=sum(1 for u in measured if u.videos > 0),
            duplicates=sum(u.videos - 1 for u in measured if u.videos > 1),
            failures=failures,
            jobs_per_second=(len(videos) / (max(videos) - first_photo) if videos else math.nan),
            videos_per_second_max_10s=max_in_window(videos, 10.0) / 10.0,
            messages_per_job=sum(1 for call in calls if call.method.lower() in MESSAGE_METHODS)
            / max(1, users),
            presses=sum(1 for u in measured if not math.isnan(u.press_at)),
            submits=len(segmind.submits) - submits_before,
            unrecorded_submits=len(segmind.jobs) - accepted_before - len(round_jobs),
            polls=[job.status_polls for job in round_jobs],
            photo_to_keyboard_ms=photo_ms,
            generate_to_submit_ms=submit_ms,
            completed_to_video_s=[
                seconds for uid, seconds in to_video.items() if uid not in victim_user_ids
            ],
            telegram_messages_max=rates[1],
            telegram_calls_max=rates[0],
            chat_messages_max=rates[2],
            telegram_errors=sum(1 for call in calls if not call.ok),
            segmind_rate_max=max_in_window(requests),
            cpu_seconds=[
                i.after.cpu_seconds - i.before.cpu_seconds
                for i in cluster.instances
                if i.after is not None and i.before is not None
            ],
            peak_rss_mb=[i.after.peak_rss_mb for i in cluster.instances if i.after is not None],
            postgres_cpu_seconds=pg_cpu,
            postgres_transactions=transactions,
            postgres_tables=dict(sorted(tables.items(), key=lambda item: -item[1])),
            webhook_posts=len(posts),
            webhook_retries=sum(1 for _uid, status in posts if not 200 <= status < 300),
            load_average=(load_start, load_end),
            takeover=takeover,
            kill=kill,
            webhook_connections=webhook_connections,
            exit_codes=[i.process.returncode for i in cluster.instances],
            log_problems=[line for i in cluster.instances for line in i.log_problems()],
            log_warnings=[line for i in cluster.instances for line in i.log_warnings()],
        )


# --------------------------------------------------------------------------- command line


def _machine() -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    ).stdout.strip()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit or '?'},"
        f" Python {platform.python_version()}, {os.cpu_count()} cores"
    )


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__)
    parser.add_argument(
        "--users",
        type=lambda text: [int(part) for part in text.split(",") if part.strip()],
        default=[300],
        help="one round per N, e.g. 300,1000",
    )
    parser.add_argument(
        "--kill",
        choices=KILL_MOMENTS,
        default="submitted",
        help="SIGKILL the busiest instance once every job is at Segmind (submitted), once"
        " a third of the videos are out (delivering), or not at all (none)",
    )
    parser.add_argument(
        "--webhook-connections",
        type=int,
        default=40,
        help="updates the fake Telegram posts at once (Telegram's default max_connections)",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="as python -m bench --scale")
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--warmup", type=int, default=5, help="warm-up jobs (shared ledger)")
    parser.add_argument("--think", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=25.0, help="photos arriving per second")
    parser.add_argument("--video-kb", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write every figure here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the instances' folders")
    parser.add_argument("--bot-src", type=Path, default=REPO)
    return parser.parse_args(argv)


async def _main_async(args: argparse.Namespace) -> list[ScaleRound]:
    config = BenchConfig(
        scale=args.scale,
        poll_interval=args.poll_interval,
        warmup_jobs=args.warmup,
        think_seconds=args.think,
        arrival_rate=args.rate,
        video_bytes=args.video_kb * 1000,
        seed=args.seed,
        keep_dirs=args.keep,
        bot_source=args.bot_src.resolve(),
    )
    results = []
    for users in args.users:
        say(f"scale, {users} users ...")
        result = await run_scale_round(
            config, users, kill=args.kill, webhook_connections=args.webhook_connections
        )
        say(row(result))
        results.append(result)
    return results


def main(argv: Sequence[str]) -> int:
    args = _parse(argv)
    results = asyncio.run(_main_async(args))
    print(HEADER)
    for result in results:
        print(row(result))
    if any(result.takeover for result in results):
        print()
        print(TAKEOVER_HEADER)
        for result in results:
            if result.takeover is not None:
                print(takeover_row(result))
    print(f"\n{_machine()}")
    for result in results:
        print(
            f"- N={result.users}: load average {result.load_average[0]:.2f} →"
            f" {result.load_average[1]:.2f}; {result.delivered} delivered in"
            f" {result.seconds:.0f} s, at most {result.videos_per_second_max_10s:.1f} videos/s"
            f" over 10 s; {result.messages_per_job:.2f} TG messages per job;"
            f" TG calls/s max {result.telegram_calls_max}, per chat"
            f" msgs/s max {result.chat_messages_max}, TG errors {result.telegram_errors};"
            f" Segmind req/s max {result.segmind_rate_max}; webhook posts"
            f" {result.webhook_posts} ({result.webhook_retries} not taken, up to"
            f" {result.webhook_connections} at once);"
            f" peak RSS MB {[round(r, 1) for r in result.peak_rss_mb]};"
            f" exit statuses {result.exit_codes};"
            f" {len(result.failures)} failure(s) {result.failures[:3]};"
            f" {len(result.log_warnings)} WARNING line(s) {result.log_warnings[:3]};"
            f" ERROR lines {result.log_problems[:3]}"
        )
    if args.json is not None:
        args.json.write_text(
            json.dumps({"machine": _machine(), "rounds": [r.summary() for r in results]}, indent=2)
            + "\n"
        )
    return 0
