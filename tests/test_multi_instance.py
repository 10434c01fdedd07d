"""Three real ``python -m bot`` instances on one PostgreSQL ledger, in webhook mode behind
a round-robin load balancer (tests/fakes/balancer.py), the fake Telegram pushing each
update to the balancer. Faults of one instance must cost no second submit to Segmind and
no second video: each Generate is submitted once and delivered once.

- an instance killed (SIGKILL) while its jobs are at Segmind: the others take them over
  once its leases lapse and deliver each once;
- an instance stopped (SIGSTOP) past its lease, taken over, then woken (SIGCONT): it
  notices it lost the job and sends nothing;
- an instance stopped while downloading a finished video (its next step sends it),
  taken over, then woken: refused at the lease check right before sending;
- an instance killed while it uploads the photo (before any submit): another takes
  the job over, uploads again and submits it once;
- an instance killed while Segmind's answer to its submit is on the way: another finds
  the request in Segmind's request history and submits nothing again;
- the same update handed to two instances at the same moment: handled once.

The instances that must lose a lease run tests/short_intervals.py (test-only): leases
of SHORT_LEASE seconds instead of 30, renewed every third of that and scanned for every
sixth, the same proportions as the real ones (bot/core/leases.py). The takeover then
comes within seconds, and the stalled download's stop stays within its read timeout.
The tests wait on rows and log lines, bounded by those figures, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import free_port, wait_until
from tests.fakes.balancer import RoundRobinBalancer
from tests.fakes.segmind import FakeSegmind
from tests.fakes.telegram import FakeTelegram
from tests.processes import BotProcess
from tests.short_intervals import MODULE, shortened
from tests.test_private_flow import button_data, reply_target, send_photo_get_keyboard

#: Each test's own bounds (three bots serving within 60 s, a takeover, a video, a clean
#: stop within 30 s) add up to more than the suite's default 60 s per test.
pytestmark = pytest.mark.timeout(120)

INSTANCES = 3
JOB_SECONDS = 600.0  # at Segmind until the test moves its clock
WEBHOOK_PATH = "/telegram/hook"
#: The test-only lease (tests/short_intervals.py), its renewal and its takeover scan.
SHORT_LEASE = 6.0
SHORT_RENEW = SHORT_LEASE / 3
SHORT_SCAN = SHORT_LEASE / 6
#: Longest a dead instance's job waits: its lease (renewed up to SHORT_RENEW before the
#: fault), then the next takeover scan, with room for a loaded machine.
TAKEOVER_WITHIN = SHORT_LEASE + SHORT_SCAN + 15.0


@dataclass(eq=False)  # one process each: compared (and hashed) by identity
class Instance:
    process: BotProcess
    port: int

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    @property
    def alive(self) -> bool:
        return self.process.process is not None and self.process.process.returncode is None

    def log(self) -> str:
        return self.process.stderr.decode(errors="replace")

    def logged(self, *fragments: str) -> bool:
        """Whether one line of its log holds every fragment."""
        return any(all(f in line for f in fragments) for line in self.log().splitlines())


@dataclass
class Cluster:
    instances: list[Instance]
    balancer: RoundRobinBalancer
    url: str

    def by_owner(self, owner: str | None) -> Instance | None:
        """The instance a lease's owner names (its id is host-pid-random)."""
        if owner is None:
            return None
        pid = int(owner.rsplit("-", 2)[1])
        return next((i for i in self.instances if i.pid == pid), None)

    async def logged(self, *fragments: str) -> list[Instance]:
        """The instances with a log line holding every fragment, once one has one: a line
        logged right before the row a test just read may still be in the pipe."""
        await wait_until(
            lambda: any(i.logged(*fragments) for i in self.instances),
            what=f"a log line with {fragments}",
        )
        return [i for i in self.instances if i.logged(*fragments)]

    async def jobs(self) -> list[dict[str, Any]]:
        conn = await asyncpg.connect(self.url)
        try:
            return [dict(r) for r in await conn.fetch("SELECT * FROM jobs ORDER BY id")]
        finally:
            await conn.close()

    async def until_jobs(
        self, done: Callable[[list[dict[str, Any]]], bool], what: str, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """The jobs table once ``done`` holds for it (read again between checks)."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = await self.jobs()
            if done(jobs):
                return jobs
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {jobs}"
            await asyncio.sleep(0.1)  # between reads of a state; never a wait in itself


#: Starts the three instances; ``lease_seconds`` (test-only) shortens their leases.
StartCluster = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def start_cluster(
    telegram: FakeTelegram,
    segmind: FakeSegmind,
    env: dict[str, str],
    postgres_url: str,
    tmp_path: Path,
) -> AsyncIterator[StartCluster]:
    """Three bots on one DATABASE_URL, each serving its own port, behind the balancer."""
    started: list[Cluster] = []

    async def start(lease_seconds: float | None = None) -> Cluster:
        ports = [free_port() for _ in range(INSTANCES)]
        balancer = await RoundRobinBalancer([f"http://127.0.0.1:{p}" for p in ports]).start()
        telegram.webhook_proxy = balancer.url
        instance_env = {
            **env,
            "DATABASE_URL": postgres_url,
            "WEBHOOK_URL": f"https://bot.example.test{WEBHOOK_PATH}",
            "WEBHOOK_SECRET": "s3cret_Webhook-token",
            "LOG_LEVEL": "INFO",
            "POLL_INTERVAL_SECONDS": "0.5",
        }
        module = "bot"
        if lease_seconds is not None:
            module = MODULE
            instance_env |= shortened(lease=lease_seconds)
        cluster = Cluster([], balancer, postgres_url)
        started.append(cluster)
        for port in ports:
            process = BotProcess(
                {**instance_env, "HTTP_LISTEN": f"127.0.0.1:{port}"}, tmp_path, module=module
            )
            cluster.instances.append(Instance(await process.start(), port))
        # Each one calls setWebhook once its HTTP server listens.
        await wait_until(
            lambda: len(telegram.calls_of("setWebhook")) == INSTANCES,
            timeout=60,
            what="three instances serving",
        )
        return cluster

    yield start
    for cluster in started:
        for instance in cluster.instances:
            if instance.alive:
                instance.process.signal(signal.SIGCONT)  # a stopped one must hear SIGKILL
            await instance.process.kill()
        await cluster.balancer.close()


def at_segmind(jobs: list[dict[str, Any]], count: int) -> bool:
    return len(jobs) == count and all(j["state"] in ("queued", "processing") for j in jobs)


def delivered_and_told(jobs: list[dict[str, Any]], count: int) -> bool:
    return len(jobs) == count and all(
        j["state"] == "delivered" and j["notified_at"] is not None for j in jobs
    )


async def generate(telegram: FakeTelegram, user: int) -> None:
    _, keyboard = await send_photo_get_keyboard(telegram, user, user)
    telegram.press_button(user, user, keyboard["message_id"], button_data(keyboard, "Generate"))


async def stop_all(cluster: Cluster) -> None:
    """A clean stop of every live instance: exit 0, no traceback."""
    live = [i for i in cluster.instances if i.alive]
    for instance in live:
        instance.process.signal(signal.SIGTERM)
    for instance in live:
        assert await instance.process.wait(timeout=30) == 0, instance.log()
        assert "Traceback" not in instance.log(), instance.log()


def assert_once_each(
    telegram: FakeTelegram, segmind: FakeSegmind, users: list[int], jobs: list[dict[str, Any]]
) -> None:
    """One submit per Generate (each job's own request), one video per user."""
    assert len(segmind.submits) == len(users)
    assert sorted(j["request_id"] for j in jobs) == sorted(segmind.jobs)
    for user in users:
        assert len(telegram.calls_of("sendVideo", chat_id=user)) == 1
    assert len(telegram.calls_of("sendVideo")) == len(users)


async def test_an_instance_killed_while_its_jobs_are_at_segmind_is_taken_over(
    telegram: FakeTelegram, segmind: FakeSegmind, start_cluster: StartCluster
):
    cluster = await start_cluster(lease_seconds=SHORT_LEASE)
    users = [801, 802, 803, 804, 805, 806]
    segmind.processing_seconds = JOB_SECONDS
    for user in users:
        telegram.private_chat(user)
        await generate(telegram, user)
    jobs = await cluster.until_jobs(lambda js: at_segmind(js, len(users)), "all at Segmind")
    owners = {cluster.by_owner(j["owner"]) for j in jobs}
    assert None not in owners  # each job is held by a live instance
    # The victim: the instance holding the most jobs (round robin spreads them).
    victim = max(owners, key=lambda i: sum(cluster.by_owner(j["owner"]) is i for j in jobs))
    assert victim is not None
    theirs = {j["id"]: j["lease_until"] for j in jobs if cluster.by_owner(j["owner"]) is victim}
    victim.process.signal(signal.SIGKILL)
    killed_at = time.time()
    await victim.process.wait()

    survivors = [i for i in cluster.instances if i is not victim]
    taken = await cluster.until_jobs(
        lambda js: all(cluster.by_owner(j["owner"]) in survivors for j in js),
        "the others took the dead instance's jobs over",
        timeout=TAKEOVER_WITHIN,
    )
    taken_after = time.time() - killed_at
    for job in taken:
        if job["id"] in theirs:  # not taken before its lease had lapsed
            assert job["lease_until"] - SHORT_LEASE >= theirs[job["id"]]
    assert any("took over" in i.log() for i in survivors)

    segmind.advance(JOB_SECONDS)
    done = await cluster.until_jobs(
        lambda js: delivered_and_told(js, len(users)), "every video delivered", timeout=30
    )
    assert_once_each(telegram, segmind, users, done)
    await stop_all(cluster)
    assert taken_after <= TAKEOVER_WITHIN


async def test_an_instance_stopped_past_its_lease_and_woken_sends_nothing_twice(
    telegram: FakeTelegram, segmind: FakeSegmind, start_cluster: StartCluster
):
    cluster = await start_cluster(lease_seconds=SHORT_LEASE)
    user = 811
    telegram.private_chat(user)
    segmind.processing_seconds = JOB_SECONDS
    await generate(telegram, user)
    [job] = await cluster.until_jobs(lambda js: at_segmind(js, 1), "the job at Segmind")
    paused = cluster.by_owner(job["owner"])
    assert paused is not None
    paused.process.signal(signal.SIGSTOP)
    stopped_at = time.time()

    [taken] = await cluster.until_jobs(
        lambda js: cluster.by_owner(js[0]["owner"]) not in (None, paused),
        "another instance took the job over",
        timeout=TAKEOVER_WITHIN,
    )
    assert time.time() - stopped_at >= SHORT_LEASE - SHORT_RENEW  # not before it lapsed
    taker = cluster.by_owner(taken["owner"])
    assert taker is not None
    polls = sum(segmind.status_polls())
    await wait_until(lambda: sum(segmind.status_polls()) > polls, what="the taker polls")

    # Woken with its old view of the job: it learns it lost the lease (at its next
    # fenced write, or its next renewal within SHORT_RENEW) and stops driving it.
    paused.process.signal(signal.SIGCONT)
    short_id = f"J{job['id']}"
    await wait_until(
        lambda: (
            paused.logged(f"job {short_id}: taken over by another instance")
            or paused.logged(f"job {short_id}: lease lost")
        ),
        timeout=SHORT_RENEW + SHORT_SCAN + 15,
        what="the woken instance letting the job go",
    )
    segmind.advance(JOB_SECONDS)
    done = await cluster.until_jobs(lambda js: delivered_and_told(js, 1), "the video delivered")
    assert cluster.by_owner(done[0]["owner"]) is None  # told: the lease let go
    assert_once_each(telegram, segmind, [user], done)
    assert await cluster.logged(f"job {short_id}: ", "-> delivered") == [taker]
    await stop_all(cluster)
    assert len(telegram.calls_of("sendVideo")) == 1  # nothing left over went out at the stop


async def test_one_update_handed_to_two_instances_at_once_is_handled_once(
    telegram: FakeTelegram, segmind: FakeSegmind, start_cluster: StartCluster
):
    cluster = await start_cluster()
    user = 821
    telegram.private_chat(user)
    cluster.balancer.duplicate_next(2)  # the photo
    photo, keyboard = await send_photo_get_keyboard(telegram, user, user)
    cluster.balancer.duplicate_next(2)  # and Generate
    telegram.press_button(user, user, keyboard["message_id"], button_data(keyboard, "Generate"))
    done = await cluster.until_jobs(lambda js: delivered_and_told(js, 1), "the video delivered")
    # Both updates reached two instances (each answered 200); one of the two dropped it.
    posted = [uid for uid, status in telegram.webhook_posts if status == 200]
    assert len(posted) == 2
    assert len(cluster.balancer.instances_posted(WEBHOOK_PATH)) == 4
    for update_id in posted:
        dropped = [i for i in cluster.instances if i.logged(f"update {update_id} arrived again")]
        assert len(dropped) == 1, update_id
    keyboards = [
        c
        for c in telegram.calls_of("sendMessage", chat_id=user)
        if "reply_markup" in c.params and reply_target(c.params) == photo["message_id"]
    ]
    assert len(keyboards) == 1
    assert_once_each(telegram, segmind, [user], done)
    await stop_all(cluster)


async def test_an_instance_stalled_mid_delivery_past_its_lease_sends_no_second_video(
    telegram: FakeTelegram, segmind: FakeSegmind, start_cluster: StartCluster
):
    """The narrow case: the holder is stopped while downloading the finished video (its
    next step would send it). Another instance takes over and delivers; woken, the first
    finishes its download and is refused at the lease check right before sending.
    Leases of SHORT_LEASE seconds, so that the stop stays shorter than the download's
    read timeout and the download does finish after it."""
    cluster = await start_cluster(lease_seconds=SHORT_LEASE)
    user = 831
    telegram.private_chat(user)
    stalled_download = segmind.hold_next_video()
    await generate(telegram, user)
    await wait_until(
        lambda: [job.video_downloads for job in segmind.jobs.values()] == [1],
        timeout=30,
        what="the holder downloading the video",
    )
    [job] = await cluster.jobs()
    stalled = cluster.by_owner(job["owner"])
    assert stalled is not None
    assert job["state"] == "completed"
    stalled.process.signal(signal.SIGSTOP)

    done = await cluster.until_jobs(
        lambda js: delivered_and_told(js, 1),
        "another instance delivered",
        timeout=SHORT_LEASE * 2 + 15,
    )
    assert len(telegram.calls_of("sendVideo", chat_id=user)) == 1
    stalled.process.signal(signal.SIGCONT)
    stalled_download.set()  # its download completes; it would send the video next
    short_id = f"J{job['id']}"
    await wait_until(
        lambda: stalled.logged(f"job {short_id}: taken over by another instance"),
        timeout=15,
        what="the woken instance refused at the lease check",
    )
    assert [j.video_downloads for j in segmind.jobs.values()] == [2]  # both downloaded
    assert_once_each(telegram, segmind, [user], done)
    deliverers = await cluster.logged(f"job {short_id}: ", "-> delivered")
    assert len(deliverers) == 1
    assert stalled not in deliverers
    await stop_all(cluster)
    assert len(telegram.calls_of("sendVideo")) == 1


async def test_an_instance_killed_mid_upload_is_taken_over_and_submits_once(
    telegram: FakeTelegram, segmind: FakeSegmind, start_cluster: StartCluster
):
    """The holder is killed while Segmind is reading its upload of the photo: nothing
    is submitted yet (the job is PREPARING). Another instance takes it over once the
    lease lapses, fetches and uploads the photo again, and submits it once."""
    cluster = await start_cluster(lease_seconds=SHORT_LEASE)
    user = 841
    telegram.private_chat(user)
    stalled_upload = segmind.hold_next_upload()
    await generate(telegram, user)
    await wait_until(
        lambda: segmind.uploads_held == 1, timeout=30, what="the holder uploading the photo"
    )
    [job] = await cluster.jobs()
    victim = cluster.by_owner(job["owner"])
    assert victim is not None
    assert job["state"] == "preparing"
    assert segmind.submits == []
    victim.process.signal(signal.SIGKILL)
    await victim.process.wait()
    await wait_until(lambda: segmind.uploads_held == 0, what="the upload cut off with it")

    survivors = [i for i in cluster.instances if i is not victim]
    done = await cluster.until_jobs(
        lambda js: delivered_and_told(js, 1),
        "another instance submitted and delivered",
        timeout=SHORT_LEASE * 2 + 20,
    )
    assert not stalled_upload.is_set()  # the killed upload was never answered
    assert len(segmind.uploads) == 1  # the taker's: the killed one stored nothing
    assert_once_each(telegram, segmind, [user], done)
    short_id = f"J{job['id']}"
    [deliverer] = await cluster.logged(f"job {short_id}: ", "-> delivered")
    assert deliverer in survivors
    assert deliverer.logged("took over")
    await stop_all(cluster)
    assert len(telegram.calls_of("sendVideo")) == 1


async def test_an_instance_killed_while_its_submit_is_answered_is_found_in_the_history(
    telegram: FakeTelegram, segmind: FakeSegmind, start_cluster: StartCluster
):
    """The holder is killed after Segmind accepted (and charged) its submit, before the
    answer reached it: the ledger says SUBMITTING with no request_id. The instance that
    takes the job over must not submit again: it looks the request up in Segmind's
    request history and drives that one to the video."""
    cluster = await start_cluster(lease_seconds=SHORT_LEASE)
    user = 851
    telegram.private_chat(user)
    segmind.hold_submit_answers()
    await generate(telegram, user)
    await wait_until(lambda: len(segmind.jobs) == 1, timeout=30, what="the submit accepted")
    [job] = await cluster.until_jobs(
        lambda js: len(js) == 1 and js[0]["state"] == "submitting", "the job SUBMITTING"
    )
    assert job["request_id"] is None
    victim = cluster.by_owner(job["owner"])
    assert victim is not None
    victim.process.signal(signal.SIGKILL)
    await victim.process.wait()
    segmind.release_submit_answers()  # to nobody: the connection died with the instance

    survivors = [i for i in cluster.instances if i is not victim]
    done = await cluster.until_jobs(
        lambda js: delivered_and_told(js, 1),
        "another instance found the request and delivered",
        timeout=SHORT_LEASE * 2 + 20,
    )
    assert_once_each(telegram, segmind, [user], done)
    short_id = f"J{job['id']}"
    [taker] = await cluster.logged(f"job {short_id}: ", "-> delivered")
    assert taker in survivors
    assert taker.logged(f"job {short_id}: found in Segmind's request history")
    assert segmind.history_lookups >= 1
    await stop_all(cluster)
    assert len(telegram.calls_of("sendVideo")) == 1
