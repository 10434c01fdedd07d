"""Drives every started job from the ledger to its one outcome: submit, poll, deliver.

Each unfinished job gets one asyncio task that repeats :meth:`Tracker.step` — read the
job, do the next thing its state calls for, record the transition, return how long to
wait. The ledger is the truth: at start every unfinished job is picked up again, and
the in-memory schedule is only a cache of it.

The submit rule (Segmind has no idempotency key and no cancel):
    intent stored (PREPARING) → SUBMITTING recorded, with the job's own seed, the image
    URL it sends and the time → POST → request_id recorded (QUEUED).
    A job found in SUBMITTING when a step begins means the process died, the answer was
    lost, or the answer could not be written down, while the POST may have been
    accepted. The seed and image URL name the request, so it is looked up in Segmind's
    request history, with backoff, for HISTORY_LOOKUP_SECONDS from the submit (a fresh
    request's record may land late; history errors count as "not yet"). Found → QUEUED
    with that request_id, and on to the video. Not found → UNCERTAIN, operators alerted
    (once per incident), and the user gets a "Try again" button — a new, explicit
    consent. It is never resubmitted on its own. A submit that provably never left
    (connection refused) goes back to PREPARING.

The delivery rule: DELIVERED is recorded right after Telegram accepts the video. A crash
in the few milliseconds between the two repeats that one video at the next start; no
crash loses it.

The lease rule (several instances on one ledger, see :mod:`bot.core.leases`): a job is
driven only by the instance holding its lease. Every write of a step is fenced on it, a
video or an outcome goes out only after the lease was checked (and extended), and a
refused write (LeaseLost) ends this instance's task for the job at once. Another
instance that takes the job over goes on from the ledger, exactly as a restart would.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import schedule
from .alerts import AlertKind, Alerts
from .errors import (
    BadResponse,
    ChatUnreachable,
    InputRejected,
    JobFailed,
    KeyRejected,
    LedgerError,
    NotFound,
    OperatorError,
    OutOfCredits,
    PhotoUnavailable,
    PhotoUnusable,
    SegmindError,
    SendFailed,
    TemporaryError,
    TooLarge,
    VideoRefused,
)
from .jobs import ACTIVE_STATES, Job, JobState, Reason
from .leases import (
    CLAIM_BATCH,
    RENEW_SECONDS,
    TAKEOVER_SCAN_SECONDS,
    Lease,
    LeaseLost,
    instance_id,
    record_done,
)
from .options import SEED_RANGE
from .ports import Ledger, Messenger, StatusReport, VideoService
from .progress import Progress, Status, coarse_elapsed, status_for, usual_seconds
from .tasks import cancel_and_wait

__all__ = ["HISTORY_LOOKUP_SECONDS", "Tracker", "TrackerConfig"]

log = logging.getLogger(__name__)

#: Segmind keeps results for an hour; deliver well inside it.
RESULT_RETENTION_SECONDS = 3600.0
#: How long a photo may take to re-host before the job is given up as "busy".
PREPARE_DEADLINE_SECONDS = 300.0
_LEARN_TTL_SECONDS = 60.0
#: How long a submit whose answer was lost is looked up in the request history, counted
#: from when it left (``submit_sent_at``): Segmind's record of a fresh request may land a
#: little late. After a restart the lookups also go on this long from the first one, so a
#: history that is down at that moment does not decide on its own.
HISTORY_LOOKUP_SECONDS = 300.0
#: The first look after a lost answer, then doubling up to the cap (with jitter).
LOOKUP_FIRST_DELAY = 2.0
LOOKUP_MAX_DELAY = 30.0
#: The most requests to Segmind's API (status polls, result fetches, history lookups)
#: for the jobs this process resumed (at its start, or taken over from another
#: instance) Segmind may see in any one second: a restart with a thousand jobs in flight
#: does not stampede it. Jobs started here are not paced (see :meth:`Tracker._api`).
SEGMIND_API_PER_SECOND = 50
#: At most this many of them on their way at once (see :class:`schedule.ApiPace`) ...
SEGMIND_API_IN_FLIGHT = 10
#: ... and at most this many leave in any second, by this process's clock. What reaches
#: Segmind in a second left in it, or was still on its way when it began: the sum of
#: the two is SEGMIND_API_PER_SECOND, however either side's event loop stalls.
API_REQUESTS_PER_SECOND = float(SEGMIND_API_PER_SECOND - SEGMIND_API_IN_FLIGHT)
#: A restart's first polls are spread at most this many a second.
RESUME_POLLS_PER_SECOND = API_REQUESTS_PER_SECOND
#: The status clock's possible steps (bot.core.progress), to find when it next moves.
_CLOCK_STEPS = (10, 60, 300)
#: A clock step is taken this long after the shown time changes (never just before it).
_TICK_SLACK = 0.01
#: A polled job's step comes this soon after its deadline, whatever it waited for.
DEADLINE_SLACK_SECONDS = 0.05
#: A video still downloading this long after it was made gets the "sending" status (one
#: chat gap: see :class:`_SendingStatus`).
SENDING_STATUS_AFTER_SECONDS = 1.0
#: At shutdown, how long a submit or upload already under way may take to finish. The
#: contract allows a few seconds for SIGTERM; whatever is still running after this is
#: recovered from the ledger at the next start.
CRITICAL_GRACE_SECONDS = 3.0

T = TypeVar("T")


@dataclass(frozen=True)
class _Later:
    """The pace held a request back: the step tries again this many seconds later."""

    wait: float


def _lookup_delay(lookups: int, rng: random.Random) -> float:
    """Seconds before the next request-history lookup after ``lookups`` found nothing:
    2, 4, 8, 16, then every 30 (each up to a fifth shorter, so lost jobs spread out)."""
    base = min(LOOKUP_MAX_DELAY, LOOKUP_FIRST_DELAY * 2.0 ** max(0, lookups - 1))
    return base * rng.uniform(0.8, 1.0)


@dataclass(frozen=True)
class TrackerConfig:
    poll_interval: float = 2.0
    deadline_seconds: float = 900.0
    image_url_mode: str = "upload"
    #: 0 turns request-history lookups off (no history URL): a lost answer is UNCERTAIN
    #: at once, as it was before the lookups existed.
    history_lookup_seconds: float = HISTORY_LOOKUP_SECONDS
    #: The status says "sending" only for a video still downloading this long after it
    #: was made (0: at once). See :class:`_SendingStatus`.
    sending_status_after: float = SENDING_STATUS_AFTER_SECONDS


class _SendingStatus:
    """The "sending" status of one delivery, shown only when the download is slow.

    Every message takes the chat's slot for a second (three in a group), and the video
    waits for it. A fast download would let a "sending" edit hold up the very video it
    announces, so the edit is made only when the download is still running after
    ``after`` seconds (a big video, a slow link: when the user is waiting for it anyway),
    and never once the download is done. 0 shows it at once, before the download.
    """

    def __init__(self, tracker: Tracker, job: Job, after: float) -> None:
        self._tracker = tracker
        self._job = job
        self._after = after
        self._editing = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._after <= 0:
            await self._show()
        else:
            self._task = asyncio.create_task(self._later(), name=f"sending-{self._job.id}")

    async def _later(self) -> None:
        await asyncio.sleep(self._after)
        await self._show()

    async def _show(self) -> None:
        self._editing = True
        await self._tracker._progress_quietly(self._job, Progress.SENDING)

    def not_needed(self) -> None:
        """The download is done: a "sending" edit not yet started would only delay it."""
        if self._task is not None and not self._editing:
            self._task.cancel()

    async def finished(self) -> None:
        """Wait for an edit under way (so the summary comes after it); cancel the rest."""
        if self._task is None:
            return
        self.not_needed()
        await asyncio.wait([self._task])


class Tracker:
    def __init__(
        self,
        ledger: Ledger,
        segmind: VideoService,
        messenger: Messenger,
        alerts: Alerts,
        config: TrackerConfig,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_refund_due: Callable[[], None] | None = None,
        on_ledger_failed: Callable[[], None] | None = None,
        on_submitted: Callable[[Job], None] | None = None,
        owner: str | None = None,
        pace: schedule.ApiPace | None = None,
    ) -> None:
        self._ledger = ledger
        #: This instance's claim on the jobs it drives (``owner``: its instance id).
        self._lease = Lease(owner or instance_id())
        #: Jobs whose lease this instance holds, as the last claim or renewal said.
        self._held: set[int] = set()
        self._leasing: asyncio.Task[None] | None = None
        self._scanning: asyncio.Task[None] | None = None
        #: Told each time a request id is recorded (the job as it is then): for metrics.
        self._on_submitted = on_submitted
        #: Told when a step's write failed (disk full, read-only): operators are alerted.
        self._on_ledger_failed = on_ledger_failed
        #: Told when a paid job ended without a video (the ledger made its refund due).
        self._on_refund_due = on_refund_due
        self._segmind = segmind
        self._messenger = messenger
        self._alerts = alerts
        self._config = config
        self._clock = clock
        self._rng = rng or random.Random()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._failures: dict[int, int] = {}
        self._polls: dict[int, int] = {}
        #: When each job's next step was due (its wait began + its delay): a poll that
        #: comes late (the pace, a busy loop) finds a job done no later than that.
        self._due: dict[int, float] = {}
        #: When each polled job's next status poll is due; steps before it only move
        #: the status line's clock.
        self._poll_at: dict[int, float] = {}
        #: Seconds after its submit that a job was last reported QUEUED (a scheduling hint).
        self._seen_queued: dict[int, float] = {}
        #: Request ids Segmind gave that the ledger could not record yet (job id → id).
        self._answered: dict[int, str] = {}
        #: Request-history lookups of SUBMITTING jobs: job id → (first lookup, count).
        self._lookups: dict[int, tuple[float, int]] = {}
        #: (quality, duration) → (learnt, when it was learnt): a cache of the ledger.
        self._learnt: dict[tuple[str, int], tuple[schedule.Learnt, float]] = {}
        #: The status each job's message shows now (edited only when it changes).
        self._shown: dict[int, Status] = {}
        #: What each job's status says such videos usually take, fixed at its first
        #: status so that a newly learnt figure costs no extra edit.
        self._usual: dict[int, int | None] = {}
        self._closing = False
        self._critical: set[asyncio.Task[Any]] = set()
        #: Requests to Segmind's API for resumed jobs wait for their place here (one pace
        #: per process, see :meth:`_api`).
        self._pace = pace or schedule.ApiPace(API_REQUESTS_PER_SECOND, SEGMIND_API_IN_FLIGHT)
        #: Jobs this process picked up from the ledger (at start, or taken over) rather
        #: than was handed by a user's press: their requests to Segmind go through the pace.
        self._resumed: set[int] = set()
        #: Jobs a status poll found COMPLETED whose result is not fetched yet: when.
        self._seen_done: dict[int, float] = {}
        #: Jobs whose last step the pace held back (it returned the wait, wrote nothing).
        self._held_back: set[int] = set()

    # -- lifecycle -------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """No job is being driven: every job task and paid step has finished (read-only)."""
        return all(task.done() for task in (*self._tasks.values(), *self._critical))

    async def resume(self) -> int:
        """Pick up every unfinished job in the ledger nobody else holds; returns how
        many. From now on leases are renewed, and lapsed ones taken over, in the
        background."""
        plan = await self.resume_plan()
        for job_id, delay in plan:
            self.track(job_id, delay=delay)
        if plan:
            log.info("resumed %d unfinished job(s)", len(plan))
        if self._leasing is None and not self._closing:
            self._leasing = asyncio.create_task(self._keep_leases(), name="leases")
            self._scanning = asyncio.create_task(self._scan_for_takeovers(), name="takeovers")
        return len(plan)

    async def resume_plan(self) -> list[tuple[int, float]]:
        """When each unfinished job nobody else holds (claimed by this call) takes its
        first step after a start or a takeover: (job id, delay).

        Jobs Segmind is working on are not all polled at once (a thousand in flight
        would be a thousand status requests in the first second): each waits until the
        schedule says it may be done, spread at most ``RESUME_POLLS_PER_SECOND``. The
        rest (a submit to look up, a video to send, a user to tell) go at once.
        """
        jobs = await self._claim_free()
        self._picked_up(job.id for job in jobs)
        wanted: list[tuple[float, int]] = []  # (when the schedule allows a poll, job id)
        plan: list[tuple[int, float]] = []
        for job in jobs:
            if job.state in (JobState.QUEUED, JobState.PROCESSING):
                jitter = self._rng.uniform(0.0, self._config.poll_interval)
                wanted.append((await self._next_poll(job) + jitter, job.id))
            else:
                plan.append((job.id, 0.0))
        gap = 1.0 / RESUME_POLLS_PER_SECOND
        previous = -gap
        by_id = {job.id: job for job in jobs}
        for when, job_id in sorted(wanted):
            previous = max(when, previous + gap)  # never two within one gap
            plan.append((job_id, self._within_deadline(by_id[job_id], previous)))
        return plan

    def track(self, job_id: int, *, delay: float = 0.0) -> None:
        """Make sure a task drives this job (idempotent); its first step after ``delay``."""
        if self._closing or self._driving(job_id):
            return
        task = asyncio.create_task(self._drive(job_id, delay), name=f"job-{job_id}")
        self._tasks[job_id] = task

    def _driving(self, job_id: int) -> bool:
        task = self._tasks.get(job_id)
        return task is not None and not task.done()

    def _picked_up(self, job_ids: Iterable[int]) -> None:
        """These jobs were found in the ledger, not started here: paced (see :meth:`_api`).
        A job this process already drives (its own lease lapsed under load and it took
        it back) stays as it was."""
        self._resumed.update(job_id for job_id in job_ids if not self._driving(job_id))

    async def stop(self) -> None:
        """Cancel every job task at once; the ledger holds where each one was. Then the
        leases are let go, so another instance takes the jobs over at once."""
        self._closing = True
        await cancel_and_wait(self._scanning)
        await cancel_and_wait(self._leasing)
        tasks = [task for task in self._tasks.values() if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._critical:
            # A submit or a video already on the wire: let its answer be recorded, briefly.
            done, pending = await asyncio.wait(set(self._critical), timeout=CRITICAL_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*done, *pending, return_exceptions=True)
        await self._release_leases()

    async def _finish_paid_step(self, step: Coroutine[Any, Any, T]) -> T:
        """Run a step whose interruption would cost (a submit, a video upload) so that
        cancelling the job's task at shutdown does not cut it off mid-request."""
        task = asyncio.create_task(step)
        self._critical.add(task)
        task.add_done_callback(self._paid_step_done)
        return await asyncio.shield(task)

    def _paid_step_done(self, task: asyncio.Task[Any]) -> None:
        self._critical.discard(task)
        if task.cancelled():
            return
        error = task.exception()  # also marks it seen: its job task may be gone
        if error is not None and self._closing:
            # Nobody awaits it any more; the ledger says where the job is.
            log.warning("a paid step ended after the stop: %s: %s", type(error).__name__, error)

    async def _drive(self, job_id: int, first_delay: float = 0.0) -> None:
        try:
            self._due[job_id] = self._clock() + first_delay
            if first_delay > 0:
                await asyncio.sleep(first_delay)
            job: Job | None = None
            while True:
                if job is None or job_id not in self._held_back:
                    try:
                        job = await self._leased_job(job_id)
                    except LedgerError as exc:
                        # The ledger cannot be read now (PostgreSQL restarting): keep it.
                        log.warning("job J%s: the ledger %s; trying again", job_id, exc)
                        await asyncio.sleep(self._backoff(job_id))
                        continue
                    if job is None:
                        return
                # Held back by the pace, the last step wrote nothing: the job is as it
                # was read, and its turn is not spent on a ledger read's queue.
                self._held_back.discard(job_id)
                try:
                    delay = await self.step(job)
                except asyncio.CancelledError:
                    raise
                except LeaseLost:
                    log.info(
                        "job %s: taken over by another instance; not driving it", job.short_id
                    )
                    self._held.discard(job_id)
                    return
                except LedgerError as exc:
                    # Nothing was written: the job stays where it was, to be tried again.
                    log.warning("job %s: the ledger %s; trying again", job.short_id, exc)
                    if self._on_ledger_failed is not None:
                        self._on_ledger_failed()
                    delay = self._backoff(job.id)
                except Exception:
                    # A bug must not kill the job: log it and try again later.
                    log.exception("job %s: step failed in state %s", job.short_id, job.state)
                    delay = self._backoff(job.id)
                if delay is None or self._closing:
                    # Closing: stop() cancelled this task, and a cancel dropped inside the
                    # step (a library's race) must not keep the job going; stop() waits.
                    return
                if job_id not in self._held_back:  # waiting for the pace is not Segmind's
                    self._due[job_id] = self._clock() + delay
                await asyncio.sleep(delay)
        finally:
            self._failures.pop(job_id, None)
            self._polls.pop(job_id, None)
            self._seen_queued.pop(job_id, None)
            self._due.pop(job_id, None)
            self._poll_at.pop(job_id, None)
            self._seen_done.pop(job_id, None)
            self._held_back.discard(job_id)
            self._pace.forget(job_id)
            self._resumed.discard(job_id)
            self._lookups.pop(job_id, None)
            self._shown.pop(job_id, None)
            self._usual.pop(job_id, None)
            current = self._tasks.get(job_id)
            if current is asyncio.current_task():
                self._tasks.pop(job_id, None)
                self._held.discard(job_id)  # a renewal says whether it is still ours

    async def _api(
        self, job_id: int, request: Callable[[], Awaitable[T]], *, in_line: bool = True
    ) -> T | _Later:
        """Make one request to Segmind's API: its answer, or how long to wait before the
        step tries again (no request made).

        Only a job this process resumed (found in the ledger at its start, or taken over
        from another instance) waits for the pace (:class:`schedule.ApiPace`): those fall
        due all at once, a thousand polls in the first seconds after a restart. A job a
        user started here polls on its own schedule, as with no restart: pacing it too
        would slow the steady state (a thousand users' jobs need some 80 requests a
        second) with no stampede to prevent.

        ``in_line``: a poll or lookup takes its turn behind the others; a result fetch (a
        video waits on it) goes ahead of them."""
        if job_id not in self._resumed:
            return await request()
        wait = self._pace.turn(job_id, self._clock(), in_line=in_line)
        if wait <= 0:
            async with self._pace.slot():
                wait = self._pace.start(job_id, self._clock(), in_line=in_line)
                if wait <= 0:
                    return await request()
        self._held_back.add(job_id)
        return _Later(wait)

    # -- one step --------------------------------------------------------------------

    async def step(self, job: Job) -> float | None:
        """Do the next thing for ``job``; returns seconds until the next step, or None."""
        if job.state is JobState.PREPARING:
            return await self._prepare_and_submit(job)
        if job.state is JobState.SUBMITTING:
            # Only a crash, a lost answer or an unwritten one leaves a job here at the
            # start of a step: find out whether Segmind has it.
            return await self._recover(job)
        if job.state in (JobState.QUEUED, JobState.PROCESSING):
            if not self._polls_now(job):
                # Only the status line's clock moved: show it, no request to Segmind.
                stage = (
                    Progress.PROCESSING if job.state is JobState.PROCESSING else Progress.QUEUED
                )
                if not await self._progress(job, stage):
                    return None
                poll_at = self._poll_at[job.id]
                wait = self._until_poll_or_tick(job, max(0.0, poll_at - self._clock()))
                return self._within_deadline(job, wait)
            self._poll_at.pop(job.id, None)
            delay = await self._poll(job)
            return None if delay is None else self._within_deadline(job, delay)
        if job.state is JobState.COMPLETED:
            return await self._deliver(job)
        if job.is_terminal and job.notified_at is None:
            return await self._notify(job)
        return None

    def _within_deadline(self, job: Job, delay: float) -> float:
        """No wait (backoff, a Retry-After, a sparse poll) may carry a polled job past
        its deadline: the step after it ends the job at the deadline, not a minute on."""
        deadline_at = (job.submitted_at or self._clock()) + self._config.deadline_seconds
        return min(delay, max(0.0, deadline_at - self._clock()) + DEADLINE_SLACK_SECONDS)

    def _backoff(self, job_id: int, retry_after: float | None = None) -> float:
        failures = self._failures.get(job_id, 0) + 1
        self._failures[job_id] = failures
        return schedule.backoff_delay(
            failures, self._config.poll_interval, retry_after=retry_after, rng=self._rng
        )

    async def _end(self, job: Job, state: JobState, reason: Reason | None) -> float | None:
        """Move to a terminal state, then tell the user (next step)."""
        ended = await self._ledger.transition(
            job.id,
            job.state,
            state,
            lease=self._lease,
            reason=reason,
            poll_count=job.poll_count + self._polls.pop(job.id, 0),
        )
        self._refund_due(ended)
        return 0.0  # the next step (re-reading the row) tells the user

    def _refund_due(self, ended: Job | None) -> None:
        if ended is not None and ended.charge_id is not None and self._on_refund_due:
            self._on_refund_due()

    async def _chat_gone(self, job: Job) -> float | None:
        log.info("job %s: chat %s unreachable, giving up delivery", job.short_id, job.chat_id)
        if job.state in ACTIVE_STATES:
            ended = await self._ledger.transition(
                job.id,
                job.state,
                JobState.UNDELIVERABLE,
                lease=self._lease,
                reason=Reason.CHAT_GONE,
            )
            if ended is None:
                return 0.0
            self._refund_due(ended)
        await self._ledger.mark_notified(job.id, lease=self._lease)
        return None

    async def _status(self, job: Job, progress: Progress) -> Status | None:
        """What the job's status message should say now (None: this stage is not shown)."""
        now = self._clock()
        group = job.chat_type != "private"
        if progress is Progress.DONE:
            since = job.generate_at or job.submitted_at
            return status_for(
                progress, elapsed=None if since is None else now - since, usual=None, group=group
            )
        if progress is Progress.SENDING:
            # Shows no figures: no ledger read, so it leaves before the download does.
            return status_for(progress, elapsed=None, usual=None, group=group)
        if job.id not in self._usual:
            self._usual[job.id] = (await self._learn(job)).usual
        elapsed = None if job.submitted_at is None else now - job.submitted_at
        return status_for(progress, elapsed=elapsed, usual=self._usual[job.id], group=group)

    async def _show_status(self, job: Job, progress: Progress) -> None:
        """Edit the status message if what it should say changed; a skipped edit (the
        chat's pace) is tried again at the next step. Raises what the messenger raises."""
        status = await self._status(job, progress)
        if status is None or self._shown.get(job.id) == status:
            return
        if await self._messenger.show_progress(job, status):
            self._shown[job.id] = status

    async def _progress(self, job: Job, progress: Progress) -> bool:
        """Update the status message; False if the chat is gone (job ended)."""
        try:
            await self._show_status(job, progress)
        except ChatUnreachable:
            await self._chat_gone(job)
            return False
        except SendFailed:
            pass  # a status line is not worth a retry
        return True

    async def _progress_quietly(self, job: Job, progress: Progress) -> None:
        """A status edit beside a delivery: whatever happens to it, the delivery goes on
        (a chat gone is found by the video's own send)."""
        try:
            await self._show_status(job, progress)
        except (ChatUnreachable, SendFailed):
            pass
        except Exception:
            log.exception("job %s: status %s failed", job.short_id, progress)

    # -- PREPARING → SUBMITTING → QUEUED ---------------------------------------------

    async def _image_url(self, job: Job) -> str:
        if self._config.image_url_mode == "telegram":
            return await self._messenger.photo_link(job)
        # "Again" (or a submit that never left) carries the photo's earlier upload:
        # reused while Segmind still serves it, which spares a download and an upload.
        if job.image_url is not None and await self._segmind.still_serves(job.image_url):
            log.info("job %s: re-using the photo uploaded before", job.short_id)
            return job.image_url
        photo = await self._messenger.fetch_photo(job)
        return await self._segmind.upload(photo.data, photo.mime_type)

    async def _prepare_and_submit(self, job: Job) -> float | None:
        now = self._clock()
        if now - (job.generate_at or now) > PREPARE_DEADLINE_SECONDS:
            return await self._end(job, JobState.REJECTED, Reason.BUSY)
        # No status edit before the submit: under load it would queue behind videos in
        # the rate limiter and hold up the paid step (the button's answer already said
        # "Starting"). The status message changes once the job is queued.
        try:
            image_url = await self._image_url(job)
        except PhotoUnavailable as exc:
            reason = Reason.PHOTO_TOO_BIG if exc.too_big else Reason.PHOTO_UNAVAILABLE
            return await self._end(job, JobState.REJECTED, reason)
        except PhotoUnusable:
            return await self._end(job, JobState.REJECTED, Reason.PHOTO_UNUSABLE)
        except ChatUnreachable:
            return await self._chat_gone(job)
        except SendFailed as exc:
            return self._backoff(job.id, exc.retry_after)
        except SegmindError as exc:
            return await self._submit_refused(job, exc)

        # The seed and the image URL name the request in Segmind's history: both are
        # stored with SUBMITTING, before the POST, with the time it leaves.
        seed = job.options.seed or self._rng.randint(*SEED_RANGE)
        submitting = await self._ledger.transition(
            job.id,
            JobState.PREPARING,
            JobState.SUBMITTING,
            lease=self._lease,  # no submit leaves without this instance's lease
            seed=seed,
            image_url=image_url,
            submit_sent_at=self._clock(),
        )
        if submitting is None:
            return 0.0
        outcome = await self._finish_paid_step(self._submit_and_record(submitting, image_url))
        return await self._queued(outcome, answered=True)

    async def _queued(self, outcome: Job | float | None, *, answered: bool) -> float | None:
        """After the request_id was recorded: the status line, then the first poll.
        ``answered``: Segmind's answer just said QUEUED (not so for a history find)."""
        if not isinstance(outcome, Job):
            return outcome
        if not await self._progress(outcome, Progress.QUEUED):
            return None
        return self._until_poll_or_tick(outcome, await self._next_poll(outcome, queued=answered))

    async def _submit_and_record(self, job: Job, image_url: str) -> Job | float | None:
        """POST the job and record what came back: the queued job, or the next delay."""
        try:
            submission = await self._segmind.submit(image_url, job.options)
        except TemporaryError as exc:
            if exc.maybe_sent:
                return self._answer_lost(job, exc)
            if exc.status is None:
                # Never left this machine: safe to try again shortly.
                back = await self._ledger.transition(
                    job.id, JobState.SUBMITTING, JobState.PREPARING, lease=self._lease
                )
                if back is None:
                    return 0.0
                await self._alerts.segmind_failed()
                return self._backoff(job.id, exc.retry_after)
            return await self._submit_refused(job, exc)
        except BadResponse as exc:
            # A 2xx we cannot read: the job may be running and charged.
            return self._answer_lost(job, exc)
        except SegmindError as exc:
            return await self._submit_refused(job, exc)

        log.info("job %s: submitted as %s", job.short_id, submission.request_id)
        recorded = await self._record_request(job, submission.request_id, self._clock())
        await self._segmind_answered()
        return recorded

    def _answer_lost(self, job: Job, exc: SegmindError) -> float:
        """The submit may have been accepted: stay SUBMITTING and look it up shortly."""
        log.warning(
            "job %s: submit outcome unknown (%s: %s); looking it up in the request history",
            job.short_id,
            type(exc).__name__,
            exc,
        )
        if self._config.history_lookup_seconds <= 0:
            return 0.0  # no history to ask: the next step makes it UNCERTAIN
        return LOOKUP_FIRST_DELAY

    async def _record_request(
        self, job: Job, request_id: str, submitted_at: float
    ) -> Job | float | None:
        """SUBMITTING → QUEUED with the request_id. A ledger that cannot write it now
        (disk full, read-only) must not lose a paid request: it is logged at once, kept
        in memory, and the next step writes it (a restart finds it in the history)."""
        try:
            queued = await self._record_step(
                job,
                JobState.SUBMITTING,
                JobState.QUEUED,
                request_id=request_id,
                submitted_at=submitted_at,
            )
        except LeaseLost:
            raise  # recorded all the same: the job's new driver polls that request
        except Exception as exc:
            self._answered[job.id] = request_id
            log.warning(
                "job %s: Segmind accepted it as %s but the ledger could not record that "
                "(%s: %s); kept in memory, writing it again shortly",
                job.short_id,
                request_id,
                type(exc).__name__,
                exc,
            )
            return self._backoff(job.id)
        self._answered.pop(job.id, None)
        self._lookups.pop(job.id, None)
        self._failures.pop(job.id, None)
        if queued is not None and self._on_submitted is not None:  # metrics hook
            self._on_submitted(queued)
        return queued if queued is not None else 0.0

    async def _recover(self, job: Job) -> float | None:
        """A SUBMITTING job at a step's start: did Segmind get the submit?"""
        answered = self._answered.get(job.id)
        if answered is not None:
            # Segmind did answer; only the ledger write failed. Try it again.
            submitted_at = job.submit_sent_at or self._clock()
            recorded = await self._record_request(job, answered, submitted_at)
            return await self._queued(recorded, answered=True)
        window = self._config.history_lookup_seconds
        if window <= 0:
            return await self._end(job, JobState.UNCERTAIN, Reason.CONNECTION_LOST)
        if job.image_url is None or job.options.seed is None or job.submit_sent_at is None:
            # Sent before the ledger kept seeds and image URLs: nothing to look up.
            log.warning("job %s: submit outcome unknown and not traceable", job.short_id)
            await self._alerts.trouble(AlertKind.SUBMIT_LOST)
            return await self._end(job, JobState.UNCERTAIN, Reason.CONNECTION_LOST)

        now = self._clock()
        first, count = self._lookups.get(job.id, (now, 0))
        image_url, seed, sent_at = job.image_url, job.options.seed, job.submit_sent_at

        async def look_up() -> str | None:
            self._lookups[job.id] = (first, count + 1)
            return await self._segmind.find_request(image_url, seed, sent_at)

        answered_cleanly = True
        try:
            found = await self._api(job.id, look_up)
            if isinstance(found, _Later):
                return found.wait  # not looked up yet: nothing counted
            request_id = found
        except SegmindError as exc:
            # The history is a best effort: an error means "not known yet".
            log.warning(
                "job %s: request history lookup failed (%s: %s)",
                job.short_id,
                type(exc).__name__,
                exc,
            )
            answered_cleanly, request_id = False, None
        if request_id is not None:
            log.info(
                "job %s: found in Segmind's request history as %s (lookup %d)",
                job.short_id,
                request_id,
                count + 1,
            )
            recorded = await self._record_request(job, request_id, job.submit_sent_at)
            return await self._queued(recorded, answered=False)

        # A late record may still land until the window from the submit is over; and
        # after a restart a history that keeps failing gets a whole window of its own.
        settled_at = job.submit_sent_at + window
        give_up_at = max(settled_at, first + window)
        now = self._clock()
        if now >= give_up_at or (answered_cleanly and now >= settled_at):
            log.warning(
                "job %s: submit not found in Segmind's request history %.0fs after it "
                "left (%d lookup(s), seed %d): uncertain",
                job.short_id,
                now - job.submit_sent_at,
                count + 1,
                job.options.seed,
            )
            self._lookups.pop(job.id, None)
            await self._alerts.trouble(AlertKind.SUBMIT_LOST)
            return await self._end(job, JobState.UNCERTAIN, Reason.CONNECTION_LOST)
        until = settled_at if now < settled_at else give_up_at
        return min(_lookup_delay(count + 1, self._rng), until - now)

    async def _segmind_answered(self) -> None:
        """Segmind took the key and did the work: whatever alert was open is over."""
        await self._alerts.cleared(AlertKind.KEY_REJECTED)
        await self._alerts.cleared(AlertKind.OUT_OF_CREDITS)
        await self._alerts.segmind_answered()

    async def _submit_refused(self, job: Job, exc: SegmindError) -> float | None:
        """Segmind said no before any job existed: nothing was paid."""
        log.warning("job %s: segmind refused (%s): %s", job.short_id, type(exc).__name__, exc)
        if isinstance(exc, KeyRejected):
            await self._alerts.trouble(AlertKind.KEY_REJECTED)
            reason = Reason.SERVICE_UNAVAILABLE
        elif isinstance(exc, OutOfCredits):
            await self._alerts.trouble(AlertKind.OUT_OF_CREDITS)
            reason = Reason.SERVICE_UNAVAILABLE
        elif isinstance(exc, InputRejected):
            reason = Reason.BAD_INPUT
        else:
            if isinstance(exc, TemporaryError) and exc.status != 429:
                await self._alerts.segmind_failed()
            reason = Reason.BUSY
        return await self._end(job, JobState.REJECTED, reason)

    # -- QUEUED / PROCESSING ---------------------------------------------------------

    async def _learn(self, job: Job) -> schedule.Learnt:
        key = (job.options.quality, job.options.duration)
        cached = self._learnt.get(key)
        now = self._clock()
        if cached is not None and now - cached[1] < _LEARN_TTL_SECONDS:
            return cached[0]
        history = await self._ledger.run_seconds(*key)
        learnt = schedule.Learnt(
            earliest_finish=schedule.expected_earliest_finish(history.total),
            earliest_processing=schedule.expected_earliest_finish(history.processing),
            usual=usual_seconds(history.total),
        )
        self._learnt[key] = (learnt, now)
        return learnt

    async def _next_poll(self, job: Job, *, queued: bool = False) -> float:
        elapsed = self._clock() - (job.submitted_at or self._clock())
        if queued:
            self._seen_queued[job.id] = elapsed
        learnt = await self._learn(job)
        return schedule.next_poll_delay(
            elapsed=elapsed,
            earliest_finish=learnt.earliest_finish,
            interval=self._config.poll_interval,
            last_seen_queued=self._seen_queued.get(job.id),
            earliest_processing=learnt.earliest_processing,
            seen_at_work=job.state is not JobState.QUEUED,
        )

    def _until_poll_or_tick(self, job: Job, poll_delay: float) -> float:
        """The next poll is ``poll_delay`` away; the step before it may come sooner, when
        the status line's clock moves (no request to Segmind then, see ``step``)."""
        now = self._clock()
        self._poll_at[job.id] = now + poll_delay
        if poll_delay <= self._config.poll_interval:
            return poll_delay  # polled every interval: the clock moves at the polls
        if job.submitted_at is None or job.id not in self._shown:
            return poll_delay
        elapsed = now - job.submitted_at
        group = job.chat_type != "private"
        shown = coarse_elapsed(elapsed, group=group)
        for step in _CLOCK_STEPS:
            tick = shown + step
            if coarse_elapsed(tick, group=group) != shown:
                return min(poll_delay, tick - elapsed + _TICK_SLACK)
        return poll_delay

    def _polls_now(self, job: Job) -> bool:
        """False while only the status clock is due (the poll itself comes later)."""
        poll_at = self._poll_at.get(job.id)
        now = self._clock()
        past_deadline = now - (job.submitted_at or now) > self._config.deadline_seconds
        return poll_at is None or now >= poll_at - _TICK_SLACK or past_deadline

    async def _poll(self, job: Job) -> float | None:
        request_id = job.request_id
        assert request_id is not None
        now = self._clock()
        if now - (job.submitted_at or now) > self._config.deadline_seconds:
            return await self._end(job, JobState.TIMED_OUT, Reason.DEADLINE)

        async def status() -> StatusReport:
            self._polls[job.id] = self._polls.get(job.id, 0) + 1
            return await self._segmind.status(request_id)

        try:
            if job.id not in self._seen_done:
                polled = await self._api(job.id, status)
                if isinstance(polled, _Later):
                    return polled.wait
                report = polled
                if report.status == "COMPLETED":
                    self._seen_done[job.id] = now
            if job.id in self._seen_done:
                # Its video is made: the result (its URL) goes ahead of waiting polls,
                # and one held back by the pace is fetched at the next step, not polled.
                fetched = await self._api(
                    job.id, lambda: self._segmind.result(request_id), in_line=False
                )
                if isinstance(fetched, _Later):
                    return fetched.wait
                report = fetched
        except NotFound:
            return await self._end(job, JobState.EXPIRED, Reason.RESULT_EXPIRED)
        except JobFailed as exc:
            log.info("job %s: failed at Segmind: %s", job.short_id, exc.detail[:200])
            return await self._end(job, JobState.FAILED, Reason.CONTENT)
        except OperatorError as exc:
            # The job exists and is paid; keep polling while the operator fixes the key.
            kind = (
                AlertKind.OUT_OF_CREDITS
                if isinstance(exc, OutOfCredits)
                else AlertKind.KEY_REJECTED
            )
            await self._alerts.trouble(kind)
            return self._backoff(job.id)
        except TemporaryError as exc:
            if exc.status != 429:  # rate limited is Segmind working, not an outage
                await self._alerts.segmind_failed()
            return self._backoff(job.id, exc.retry_after)
        except SegmindError as exc:
            log.warning("job %s: unexpected poll answer: %s", job.short_id, exc)
            return self._backoff(job.id)
        self._failures.pop(job.id, None)
        await self._segmind_answered()

        if report.status == "FAILED":
            log.info("job %s: failed at Segmind: %s", job.short_id, (report.error or "")[:200])
            return await self._end(job, JobState.FAILED, Reason.CONTENT)
        seen_done = self._seen_done.pop(job.id, None)
        if report.status == "COMPLETED":
            seen_at = now if seen_done is None else seen_done
            completed_at = schedule.finish_to_record(
                seen_at=seen_at, due_at=self._due.get(job.id, seen_at)
            )
            completed = await self._ledger.transition(
                job.id,
                job.state,
                JobState.COMPLETED,
                lease=self._lease,
                output_url=report.output_url,
                completed_at=completed_at,
                poll_count=job.poll_count + self._polls.pop(job.id, 0),
            )
            if completed is None:
                return 0.0
            # A new observation: learn from it at the next poll of a similar job.
            self._learnt.pop((job.options.quality, job.options.duration), None)
            log.info(
                "job %s: completed after %.1fs and %d poll(s)",
                job.short_id,
                (completed.completed_at or 0) - (completed.submitted_at or 0),
                completed.poll_count,
            )
            return await self._deliver(completed)
        if report.status == "PROCESSING" and job.state is JobState.QUEUED:
            processing = await self._ledger.transition(
                job.id,
                JobState.QUEUED,
                JobState.PROCESSING,
                lease=self._lease,
                processing_at=self._clock(),
            )
            if processing is None:
                return 0.0
            job = processing
        stage = Progress.PROCESSING if job.state is JobState.PROCESSING else Progress.QUEUED
        if not await self._progress(job, stage):  # unchanged text: no edit
            return None
        return self._until_poll_or_tick(
            job, await self._next_poll(job, queued=report.status == "QUEUED")
        )

    # -- COMPLETED → DELIVERED -------------------------------------------------------

    async def _deliver(self, job: Job) -> float | None:
        assert job.output_url is not None
        now = self._clock()
        expires_at = (job.completed_at or now) + RESULT_RETENTION_SECONDS
        if now > expires_at:
            return await self._end(job, JobState.EXPIRED, Reason.RESULT_EXPIRED)
        sending = _SendingStatus(self, job, self._config.sending_status_after)
        await sending.start()
        # The folder belongs to whoever uses it last: this task until the send begins,
        # then the send, which may outlive this task at shutdown (its upload must not
        # find the file gone).
        folder = Path(tempfile.mkdtemp(prefix="warmth-"))
        handed_over = False
        try:
            path: Path | None = folder / f"{job.short_id}.mp4"
            assert path is not None
            try:
                await self._segmind.download(
                    job.output_url, path, max_bytes=self._messenger.max_upload_bytes
                )
            except TooLarge:
                path = None  # too big to upload: its link goes instead
            sending.not_needed()
            handed_over = True
            delivered = await self._finish_paid_step(
                self._send_and_clean_up(job, path, expires_at, folder)
            )
        except ChatUnreachable:
            return await self._chat_gone(job)
        except SendFailed as exc:
            log.warning("job %s: delivery failed, will retry: %s", job.short_id, exc)
            return self._backoff(job.id, exc.retry_after)
        except NotFound:
            return await self._end(job, JobState.EXPIRED, Reason.RESULT_EXPIRED)
        except SegmindError as exc:
            log.warning("job %s: video download failed, will retry: %s", job.short_id, exc)
            return self._backoff(job.id, getattr(exc, "retry_after", None))
        finally:
            if not handed_over:
                shutil.rmtree(folder, ignore_errors=True)
            await sending.finished()  # its edit comes before the summary's
        if delivered is not None:
            # The video is there: the status message becomes its one-line summary.
            await self._progress_quietly(delivered, Progress.DONE)
        return None

    async def _send_and_clean_up(
        self, job: Job, path: Path | None, expires_at: float, folder: Path
    ) -> Job | None:
        try:
            return await self._send_and_record(job, path, expires_at)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def _send_and_record(self, job: Job, path: Path | None, expires_at: float) -> Job | None:
        """Send the video (or, too big for an upload, its link) and record DELIVERED at once."""
        assert job.output_url is not None
        file_id: str | None = None

        async def still_ours() -> None:
            # A video goes out only from the lease's holder, checked (and the lease
            # extended) once the chat's turn has come: under load the wait for it can
            # outlast the lease, and another instance may have taken the job meanwhile.
            await self._hold(job)

        if path is None:
            await self._messenger.send_video_link(
                job, job.output_url, expires_at, before_send=still_ours
            )
        else:
            try:
                file_id = await self._messenger.send_video(job, path, before_send=still_ours)
            except VideoRefused as exc:
                log.warning("job %s: video refused (%s), sending its link", job.short_id, exc)
                await self._messenger.send_video_link(
                    job, job.output_url, expires_at, before_send=still_ours
                )
        sent_at = self._clock()
        return await self._record_step(
            job, JobState.COMPLETED, JobState.DELIVERED, video_file_id=file_id, notified_at=sent_at
        )

    async def _record_step(
        self, job: Job, source: JobState, target: JobState, **fields: Any
    ) -> Job | None:
        """A step that already happened outside (Segmind took the request, Telegram the
        video), recorded even if the lease lapsed meanwhile (:func:`record_done`)."""
        return await record_done(
            lambda lease: self._ledger.transition(job.id, source, target, lease=lease, **fields),
            self._lease,
        )

    # -- telling the user how it ended ----------------------------------------------

    async def _notify(self, job: Job) -> float | None:
        if job.state is JobState.UNDELIVERABLE:
            await self._ledger.mark_notified(job.id, lease=self._lease)
            return None
        await self._hold(job)  # one outcome message, from the lease's holder
        try:
            await self._messenger.send_outcome(job)
        except ChatUnreachable:
            await self._ledger.mark_notified(job.id, lease=self._lease)
            return None
        except SendFailed as exc:
            return self._backoff(job.id, exc.retry_after)
        await record_done(
            lambda lease: self._ledger.mark_notified(job.id, lease=lease), self._lease
        )
        return None

    # -- leases (bot.core.leases) ------------------------------------------------------

    @property
    def owner(self) -> str:
        """This instance's id, as the ledger's leases name it."""
        return self._lease.owner

    def holds(self, job_id: int) -> bool:
        """Whether this instance holds the job's lease, as far as it knows (read-only)."""
        return job_id in self._held

    async def claim(self, job_id: int) -> Job | None:
        """Claim one job for this instance (a job a handler just started, or one found
        free); the job, or None when another instance holds it or it is finished."""
        job = await self._ledger.claim_job(job_id, self._lease, self._clock())
        if job is None:
            self._held.discard(job_id)
        else:
            self._held.add(job_id)
        return job

    async def _leased_job(self, job_id: int) -> Job | None:
        """The job for the next step: claimed when this instance does not hold it (yet),
        else read. None: not (or no longer) this instance's to drive."""
        if job_id not in self._held:
            return await self.claim(job_id)
        return await self._ledger.get(job_id)

    async def _hold(self, job: Job) -> None:
        """Right before a message goes out: the lease is still held (and now extended)
        and the job still where this step found it; else LeaseLost."""
        if not await self._ledger.hold_job(job.id, job.state, self._lease, self._clock()):
            raise LeaseLost(job.short_id)

    async def _claim_free(self) -> list[Job]:
        """Every unfinished job nobody holds, claimed in batches of CLAIM_BATCH."""
        claimed: list[Job] = []
        while True:
            batch = await self._ledger.claim_jobs(self._lease, CLAIM_BATCH, self._clock())
            claimed.extend(batch)
            self._held.update(job.id for job in batch)
            if len(batch) < CLAIM_BATCH:
                return claimed

    async def renew_leases(self) -> None:
        """Extend every lease this instance holds (one statement); jobs it no longer
        holds (taken over while it was paused) are no longer driven."""
        before = set(self._held)
        held = set(await self._ledger.renew_leases(self._lease, self._clock()))
        # A job whose task ended meanwhile has left self._held: finished, not lost. (One
        # read each for hundreds of those made a renewal late enough, under load, for
        # the leases it was renewing to lapse.)
        for job_id in sorted((before - held) & self._held):
            # A job that ended meanwhile let its lease go itself (its task may still be
            # writing the status summary): not lost, only finished.
            job = await self._ledger.get(job_id)
            if job is not None and job.notified_at is None:
                log.warning("job J%s: lease lost; another instance drives it now", job_id)
        self._held = held | (self._held - before)  # with the claims made meanwhile

    async def take_over(self) -> int:
        """Claim and drive the jobs nobody holds (their instance died or stopped), and
        drive again any job this instance holds whose task ended unfinished."""
        plan = await self.resume_plan()
        for job_id, delay in plan:
            self.track(job_id, delay=delay)
        if plan:
            log.info("took over %d job(s) nobody was driving", len(plan))
        for job_id in sorted(self._held - set(self._tasks)):
            self.track(job_id)
        return len(plan)

    async def _keep_leases(self) -> None:
        """Renew every RENEW_SECONDS, on its own: a takeover scan that claims hundreds
        of jobs must not make a renewal late. A ledger fault is logged and tried again."""
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await self.renew_leases()
            except Exception as exc:
                log.warning("leases: renewal failed (%s: %s)", type(exc).__name__, exc)

    async def _scan_for_takeovers(self) -> None:
        """Look for jobs to take over every TAKEOVER_SCAN_SECONDS (a fault: next time)."""
        while True:
            await asyncio.sleep(TAKEOVER_SCAN_SECONDS)
            try:
                await self.take_over()
            except Exception as exc:
                log.warning("leases: takeover failed (%s: %s)", type(exc).__name__, exc)

    async def _release_leases(self) -> None:
        """At a clean stop: let every lease go (best effort: unreleased ones lapse)."""
        try:
            await self._ledger.release_leases(self._lease.owner)
        except Exception as exc:
            log.warning("leases: release failed (%s: %s); they lapse", type(exc).__name__, exc)
        self._held.clear()
