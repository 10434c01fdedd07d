"""Two instances on one ledger: each job is driven by the one holding its lease.

Instance A is the harness's tracker; instance B a second Tracker on the same ledger,
Segmind and chat. "A is paused" means A's clock moves on while A neither steps nor
renews; A then "wakes" and steps the job as it had read it before the pause. Every
test counts what reached Segmind (submits) and the chat (videos, outcomes): exactly one
of each per Generate, whoever drove it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.core import tracker as tracker_module
from bot.core.errors import AlreadyRefunded
from bot.core.jobs import Job, JobState, Reason
from bot.core.leases import LEASE_SECONDS, Lease, LeaseLost
from bot.core.payments import RefundState
from bot.core.ports import BeforeSend
from bot.core.refunds import Refunds
from bot.core.tracker import Tracker
from tests.conftest import wait_until
from tests.core.conftest import Harness
from tests.core.doubles import GatedBody
from tests.core.test_refunds import paid_job

S = JobState
LAPSE = LEASE_SECONDS + 1


def instance(h: Harness, owner: str) -> Tracker:
    """Another bot instance sharing the harness's ledger, Segmind and chat."""
    return h.new_tracker(seed=1, owner=owner)


async def drive(h: Harness, tracker: Tracker, job_id: int, max_steps: int = 50) -> None:
    """Step the job with ``tracker`` (its task would), advancing the clock, to the end."""
    for _ in range(max_steps):
        job = await h.ledger.get(job_id)
        assert job is not None
        delay = await tracker.step(job)
        if delay is None:
            return
        h.clock.advance(delay)
    raise AssertionError(f"job {job_id} not finished after {max_steps} steps")


async def claimed(tracker: Tracker, job_id: int) -> Job:
    job = await tracker.claim(job_id)
    assert job is not None
    return job


async def test_the_instance_that_claims_a_job_drives_it_and_no_other_may(h: Harness):
    b = instance(h, "instance-B")
    job = await h.new_job()  # Generate pressed on instance A: A's task claims it
    await claimed(h.tracker, job.id)
    assert await b.claim(job.id) is None
    assert await b.resume_plan() == []  # B's takeover scan finds nothing free
    assert not b.holds(job.id)
    h.segmind.next_timeline = ["COMPLETED"]
    await drive(h, h.tracker, job.id)
    assert (await h.job(job.id)).state is S.DELIVERED
    assert len(h.segmind.accepted) == 1
    assert len(h.messenger.videos) == 1
    assert await b.claim(job.id) is None  # delivered and told: nobody drives it again


async def test_renewal_keeps_a_job_and_without_it_the_job_is_taken_over(h: Harness):
    b = instance(h, "instance-B")
    job = await h.new_job()
    await claimed(h.tracker, job.id)
    h.clock.advance(20)
    await h.tracker.renew_leases()
    h.clock.advance(20)  # 40 s after the claim, 20 after the renewal
    assert await b.resume_plan() == []
    assert h.tracker.holds(job.id)
    h.clock.advance(11)  # A stopped renewing (paused): its lease lapsed
    assert [job_id for job_id, _ in await b.resume_plan()] == [job.id]
    assert b.holds(job.id)
    await h.tracker.renew_leases()  # A wakes: it learns the job is no longer its own
    assert not h.tracker.holds(job.id)


async def test_a_paused_instance_cannot_submit_a_job_taken_over_meanwhile(h: Harness):
    b = instance(h, "instance-B")
    job = await h.new_job()
    before_pause = await claimed(h.tracker, job.id)
    h.clock.advance(LAPSE)  # A paused past its lease
    assert [job_id for job_id, _ in await b.resume_plan()] == [job.id]
    # A wakes and carries on from what it read: storing SUBMITTING (before the POST)
    # is fenced on the lease, so its submit never leaves.
    with pytest.raises(LeaseLost):
        await h.tracker.step(before_pause)
    assert h.segmind.count("submit") == 0
    assert (await h.job(job.id)).state is S.PREPARING
    h.segmind.next_timeline = ["COMPLETED"]
    await drive(h, b, job.id)  # B submits once and delivers
    assert (await h.job(job.id)).state is S.DELIVERED
    assert h.segmind.count("submit") == 1
    assert len(h.messenger.videos) == 1


async def test_a_submit_answered_after_a_takeover_is_recorded_and_not_resubmitted(
    h: Harness,
):
    """A sent its submit and was paused before recording the answer; meanwhile B took
    the job over. A's request id is still written (Segmind has the job: that is a
    fact), A stops driving the job, and B polls that request: no second submit, no
    history lookup needed."""
    b = instance(h, "instance-B")
    job = await h.new_job()
    await claimed(h.tracker, job.id)

    async def paused_while_answering(body: object) -> None:
        h.clock.advance(LAPSE)
        assert [job_id for job_id, _ in await b.resume_plan()] == [job.id]

    h.segmind.on_submit = paused_while_answering
    with pytest.raises(LeaseLost):
        await h.step(job.id)
    h.segmind.on_submit = None
    queued = await h.job(job.id)
    assert (queued.state, queued.request_id) == (S.QUEUED, "req-1")
    assert await h.column(job.id, "owner") == "instance-B"  # A's late write took nothing

    h.segmind.jobs["req-1"].timeline = ["COMPLETED"]
    await drive(h, b, job.id)
    done = await h.job(job.id)
    assert (done.state, done.request_id) == (S.DELIVERED, "req-1")
    assert h.segmind.count("submit") == 1
    assert h.segmind.count("history") == 0
    assert len(h.messenger.videos) == 1


async def test_a_submit_answered_after_the_history_was_searched_is_not_resubmitted(
    h: Harness,
):
    """B took over while A's answer was on its way and began looking the request up;
    A's late write records it; B's next step polls it instead of looking again."""
    b = instance(h, "instance-B")
    job = await h.new_job()
    await claimed(h.tracker, job.id)
    history_lag = h.segmind.history_lag
    h.segmind.history_lag = 3600.0  # the request is not in the history yet

    async def paused_while_answering(body: object) -> None:
        h.clock.advance(LAPSE)
        await b.resume_plan()
        submitting = await h.job(job.id)
        assert await b.step(submitting) is not None  # B looked, found nothing yet

    h.segmind.on_submit = paused_while_answering
    with pytest.raises(LeaseLost):
        await h.step(job.id)
    h.segmind.on_submit = None
    h.segmind.history_lag = history_lag
    assert (await h.job(job.id)).request_id == "req-1"
    h.segmind.jobs["req-1"].timeline = ["COMPLETED"]
    await drive(h, b, job.id)
    assert (await h.job(job.id)).state is S.DELIVERED
    assert h.segmind.count("submit") == 1
    assert len(h.messenger.videos) == 1


async def test_a_paused_instance_sends_no_second_video(h: Harness):
    """A was downloading the video when it was paused; B took over and delivered it.
    When A's download finishes, its lease check before sending refuses: one video."""
    b = instance(h, "instance-B")
    job, request = await h.completed_job()
    await claimed(h.tracker, job.id)
    gate = asyncio.Event()
    body = GatedBody(request.video, gate)
    request.video_body = body
    a_step = asyncio.create_task(h.tracker.step(job))
    await body.started.wait()  # A is mid-download...
    h.clock.advance(LAPSE)  # ...and paused past its lease
    request.video_body = None  # B's download is not held up
    assert [job_id for job_id, _ in await b.resume_plan()] == [job.id]
    await drive(h, b, job.id)
    assert (await h.job(job.id)).state is S.DELIVERED
    assert len(h.messenger.videos) == 1
    gate.set()  # A wakes with the video downloaded
    with pytest.raises(LeaseLost):
        await a_step
    assert len(h.messenger.videos) == 1
    assert len(h.messenger.calls_to("send_video_link")) == 0


async def test_a_video_is_not_sent_by_an_instance_that_lost_the_job_before_sending(
    h: Harness,
):
    """B has only claimed the job (not delivered yet) when A wakes: A still sends nothing."""
    b = instance(h, "instance-B")
    job, _ = await h.completed_job()
    before_pause = await claimed(h.tracker, job.id)
    h.clock.advance(LAPSE)
    await b.resume_plan()
    with pytest.raises(LeaseLost):
        await h.tracker.step(before_pause)
    assert h.messenger.videos == []
    assert (await h.job(job.id)).state is S.COMPLETED
    await drive(h, b, job.id)
    assert len(h.messenger.videos) == 1


async def test_a_video_sent_while_the_lease_lapsed_is_recorded_so_none_follows(
    h: Harness, monkeypatch
):
    """A's upload took longer than its lease (a pause, a long queue) and B claimed the
    job meanwhile. Telegram has the video: A records it all the same, so B, about to
    deliver, finds it delivered and sends nothing."""
    b = instance(h, "instance-B")
    job, _ = await h.completed_job()
    await claimed(h.tracker, job.id)
    send_video = h.messenger.send_video

    async def slow_upload(job: Job, path: Path, *, before_send: BeforeSend = None) -> str:
        assert before_send is not None
        await before_send()  # the lease is confirmed as the upload begins...
        h.clock.advance(LAPSE)  # ...and the upload outlasts it
        assert [job_id for job_id, _ in await b.resume_plan()] == [job.id]
        return await send_video(job, path)

    monkeypatch.setattr(h.messenger, "send_video", slow_upload)
    with pytest.raises(LeaseLost):
        await h.step(job.id)
    delivered = await h.job(job.id)
    assert delivered.state is S.DELIVERED
    assert delivered.notified_at is not None
    assert delivered.video_file_id == f"video-file-{job.id}"
    monkeypatch.setattr(h.messenger, "send_video", send_video)
    await drive(h, b, job.id)  # B's turn: nothing left to do
    assert len(h.messenger.videos) == 1
    assert await b.resume_plan() == []
    assert await h.tracker.resume_plan() == []


async def test_a_video_whose_turn_came_after_the_job_was_taken_over_is_not_sent(
    h: Harness, monkeypatch
):
    """A's video waited for its turn at Telegram (a thousand others ahead) past its
    lease, and B took the job meanwhile. The lease is checked when the turn comes, not
    before the wait: A sends nothing, B delivers once (the scale bench's duplicates)."""
    b = instance(h, "instance-B")
    job, _ = await h.completed_job()
    await claimed(h.tracker, job.id)
    send_video = h.messenger.send_video

    async def long_queue(job: Job, path: Path, *, before_send: BeforeSend = None) -> str:
        h.clock.advance(LAPSE)
        assert [job_id for job_id, _ in await b.resume_plan()] == [job.id]
        return await send_video(job, path, before_send=before_send)

    monkeypatch.setattr(h.messenger, "send_video", long_queue)
    with pytest.raises(LeaseLost):
        await h.step(job.id)
    assert h.messenger.videos == []
    assert (await h.job(job.id)).state is S.COMPLETED
    monkeypatch.setattr(h.messenger, "send_video", send_video)
    await drive(h, b, job.id)
    assert len(h.messenger.videos) == 1
    assert (await h.job(job.id)).state is S.DELIVERED


async def test_a_video_sent_after_its_own_lease_lapsed_is_not_sent_again(h: Harness, monkeypatch):
    """One instance, its renewal late (a saturated ledger): the lease lapsed during the
    upload with nobody else about. The video is recorded; the takeover scan that follows
    finds nothing to drive (it used to find the job COMPLETED and send it again)."""
    job, _ = await h.completed_job()
    await claimed(h.tracker, job.id)
    send_video = h.messenger.send_video

    async def slow_upload(job: Job, path: Path, *, before_send: BeforeSend = None) -> str:
        assert before_send is not None
        await before_send()
        h.clock.advance(LAPSE)
        return await send_video(job, path)

    monkeypatch.setattr(h.messenger, "send_video", slow_upload)
    with pytest.raises(LeaseLost):
        await h.step(job.id)
    assert (await h.job(job.id)).state is S.DELIVERED
    assert await h.tracker.resume_plan() == []
    assert len(h.messenger.videos) == 1


async def test_an_outcome_told_while_the_lease_lapsed_is_recorded_so_none_follows(
    h: Harness, monkeypatch
):
    b = instance(h, "instance-B")
    job = await h.finished_job(S.REJECTED, reason=Reason.BUSY)
    await claimed(h.tracker, job.id)
    send_outcome = h.messenger.send_outcome

    async def slow_outcome(job: Job) -> None:
        h.clock.advance(LAPSE)
        await b.resume_plan()
        await send_outcome(job)

    monkeypatch.setattr(h.messenger, "send_outcome", slow_outcome)
    with pytest.raises(LeaseLost):
        await h.step(job.id)
    assert (await h.job(job.id)).notified_at is not None
    monkeypatch.setattr(h.messenger, "send_outcome", send_outcome)
    await drive(h, b, job.id)
    assert len(h.messenger.calls_to("send_outcome")) == 1


async def test_an_outcome_is_told_once_across_a_takeover(h: Harness):
    b = instance(h, "instance-B")
    job = await h.finished_job(S.REJECTED, reason=Reason.BUSY)
    before_pause = await claimed(h.tracker, job.id)
    h.clock.advance(LAPSE)
    await b.resume_plan()
    with pytest.raises(LeaseLost):
        await h.tracker.step(before_pause)
    assert h.messenger.calls_to("send_outcome") == []
    await drive(h, b, job.id)
    assert len(h.messenger.calls_to("send_outcome")) == 1
    assert (await h.job(job.id)).notified_at is not None


async def test_a_clean_stop_lets_another_instance_take_over_at_once(h: Harness):
    b = instance(h, "instance-B")
    job = await h.new_job()
    await claimed(h.tracker, job.id)
    h.clock.advance(1)
    assert await b.resume_plan() == []
    await h.tracker.stop()  # SIGTERM on A
    assert not h.tracker.holds(job.id)
    assert [job_id for job_id, _ in await b.resume_plan()] == [job.id]  # no lapse needed
    h.segmind.next_timeline = ["COMPLETED"]
    await drive(h, b, job.id)
    assert h.segmind.count("submit") == 1
    assert len(h.messenger.videos) == 1


async def test_a_refund_is_worked_by_one_instance_and_told_once(h: Harness, monkeypatch):
    """A asked Telegram for the refund and was paused before recording it; B took the
    refund over (Telegram: already refunded) and told the payer. A's late confirmation
    is refused, so A tells nobody."""
    job = await paid_job(h)
    ended = await h.ledger.transition(job.id, S.PREPARING, S.REJECTED, reason=Reason.BUSY)
    assert ended is not None
    a = Refunds(h.ledger, h.messenger, clock=h.clock, owner="instance-A")
    b = Refunds(h.ledger, h.messenger, clock=h.clock, owner="instance-B")
    asked: list[str] = []

    async def refund_stars(user_id: int, charge_id: str) -> None:
        asked.append(charge_id)
        if len(asked) == 1:  # A's request went through; A is paused before its answer
            h.clock.advance(LAPSE)
            await b.step()
        else:
            raise AlreadyRefunded("CHARGE_ALREADY_REFUNDED")

    monkeypatch.setattr(h.messenger, "refund_stars", refund_stars)
    await a.step()
    assert asked == ["charge-1", "charge-1"]
    assert h.messenger.told == [("charge-1", job.id)]  # by B only
    payment = await h.ledger.payment("charge-1")
    assert payment is not None
    assert payment.refund is RefundState.DONE
    await a.step()
    await b.step()
    assert len(asked) == 2
    assert len(h.messenger.told) == 1


async def test_a_refund_made_while_the_claim_lapsed_is_recorded_and_not_asked_again(
    h: Harness, monkeypatch
):
    """A's refund went through at Telegram, but its claim lapsed while it waited for the
    answer (nobody else took it yet). The refund is recorded all the same; A stops, and
    the next claim only tells the payer: Telegram is asked once, the payer told once."""
    job = await paid_job(h)
    await h.ledger.transition(job.id, S.PREPARING, S.REJECTED, reason=Reason.BUSY)
    a = Refunds(h.ledger, h.messenger, clock=h.clock, owner="instance-A")
    b = Refunds(h.ledger, h.messenger, clock=h.clock, owner="instance-B")
    refund_stars = h.messenger.refund_stars

    async def slow_refund(user_id: int, charge_id: str) -> None:
        await refund_stars(user_id, charge_id)
        h.clock.advance(LAPSE)

    monkeypatch.setattr(h.messenger, "refund_stars", slow_refund)
    await a.step()
    payment = await h.ledger.payment("charge-1")
    assert payment is not None
    assert payment.refund is RefundState.DONE
    assert h.messenger.told == []  # A let it go
    await b.step()
    assert len(h.messenger.refunded) == 1
    assert h.messenger.told == [("charge-1", job.id)]


async def test_one_refund_claimed_by_one_instance_is_not_worked_by_another(h: Harness):
    job = await paid_job(h)
    await h.ledger.transition(job.id, S.PREPARING, S.REJECTED, reason=Reason.BUSY)
    a = Refunds(h.ledger, h.messenger, clock=h.clock, owner="instance-A")
    b = Refunds(h.ledger, h.messenger, clock=h.clock, owner="instance-B")
    [mine] = await h.ledger.claim_refunds(a._lease, h.clock())  # A's step has begun
    await b.step()
    assert h.messenger.refunded == []  # B leaves it to A
    await a.step()
    assert h.messenger.refunded == [(mine.user_id, "charge-1")]
    assert h.messenger.told == [("charge-1", job.id)]
    await b.step()
    assert len(h.messenger.refunded) == 1


async def test_a_running_instance_takes_over_a_dead_ones_job_by_itself(
    h: Harness, monkeypatch: pytest.MonkeyPatch
):
    """The background loop (not a test's call) claims the lapsed job and drives it; a
    stop lets it go. The loop's real-time tick is shortened; leases use the fake clock."""
    monkeypatch.setattr(tracker_module, "TAKEOVER_SCAN_SECONDS", 0.01)
    b = instance(h, "instance-B")
    job = await h.new_job()
    await claimed(h.tracker, job.id)  # instance A, which then dies
    assert await b.resume() == 0
    h.clock.advance(LAPSE)
    for _ in range(500):  # B's next scans take it over and submit it
        if h.segmind.count("submit") == 1 and (await h.job(job.id)).state is S.QUEUED:
            break
        await asyncio.sleep(0.01)
    assert b.holds(job.id)
    assert h.segmind.count("submit") == 1
    await b.stop()
    assert await h.ledger.claim_job(job.id, Lease("instance-C")) is not None  # let go


async def test_a_job_that_ends_between_renewals_is_finished_not_lost(h: Harness, caplog):
    """Delivering a video lets the lease go in the same write; the renewal that follows
    (the task may still be writing the status summary) must not call it lost."""
    job = await h.new_job()
    await claimed(h.tracker, job.id)
    h.segmind.next_timeline = ["COMPLETED"]
    await drive(h, h.tracker, job.id)
    assert (await h.job(job.id)).state is S.DELIVERED
    assert h.tracker.holds(job.id)  # its task has not ended yet
    with caplog.at_level("WARNING", logger="bot.core.tracker"):
        await h.tracker.renew_leases()
    assert "lease lost" not in caplog.text
    assert not h.tracker.holds(job.id)


async def test_a_renewal_does_not_read_back_the_jobs_whose_tasks_ended(
    h: Harness, monkeypatch, caplog
):
    """Hundreds of jobs finish while a renewal waits for the ledger under load: it must
    not read each of them back (that made renewals late enough for leases to lapse)."""
    jobs = [(await h.completed_job())[0] for _ in range(3)]
    for job in jobs:
        await claimed(h.tracker, job.id)
    renew_leases, get = h.ledger.renew_leases, h.ledger.get
    read: list[int] = []
    tasks_ended = False

    async def renew_while_the_jobs_finish(lease: Lease, now: float | None = None) -> list[int]:
        for job in jobs:  # their tasks deliver and end while the renewal is queued
            h.tracker.track(job.id)
        tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("job-")]
        await asyncio.gather(*tasks)
        nonlocal tasks_ended
        tasks_ended = True
        return await renew_leases(lease, now)

    async def counting_get(job_id: int) -> Job | None:
        if tasks_ended:
            read.append(job_id)
        return await get(job_id)

    monkeypatch.setattr(h.ledger, "renew_leases", renew_while_the_jobs_finish)
    monkeypatch.setattr(h.ledger, "get", counting_get)
    with caplog.at_level("WARNING", logger="bot.core.tracker"):
        await h.tracker.renew_leases()
    assert tasks_ended
    assert read == []
    assert "lease lost" not in caplog.text
    assert [(await h.job(job.id)).state for job in jobs] == [S.DELIVERED] * 3
    assert not any(h.tracker.holds(job.id) for job in jobs)


async def test_renewals_go_on_while_a_takeover_scan_is_slow(
    h: Harness, monkeypatch: pytest.MonkeyPatch
):
    """A scan claiming hundreds of a dead instance's jobs (or waiting on a busy ledger)
    must not hold up this instance's renewals: in one loop it did, its own leases
    lapsed, and live instances took each other's jobs (the scale bench's duplicate
    videos). The loops' real-time ticks are shortened; the scan never returns here."""
    monkeypatch.setattr(tracker_module, "TAKEOVER_SCAN_SECONDS", 0.01)
    monkeypatch.setattr(tracker_module, "RENEW_SECONDS", 0.02)
    job = await h.new_job()
    await claimed(h.tracker, job.id)
    scanning = asyncio.Event()

    async def stuck_scan() -> int:
        scanning.set()
        await asyncio.Event().wait()
        return 0

    renewals: list[list[int]] = []
    renew_leases = h.ledger.renew_leases

    async def counted(lease: Lease, now: float | None = None) -> list[int]:
        renewals.append(await renew_leases(lease, now))
        return renewals[-1]

    monkeypatch.setattr(h.tracker, "take_over", stuck_scan)
    monkeypatch.setattr(h.ledger, "renew_leases", counted)
    await h.tracker.resume()
    await scanning.wait()
    await wait_until(lambda: len(renewals) >= 3, what="renewals beside the stuck scan")
    assert renewals[-1] == [job.id]
    await h.tracker.stop()
