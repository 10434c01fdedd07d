import asyncio
import random
from typing import Any

import pytest

from bot.core.schedule import (
    MAX_BACKOFF_SECONDS,
    ApiPace,
    backoff_delay,
    expected_earliest_finish,
    finish_to_record,
    next_poll_delay,
)


def simulate_polls(run_seconds: float, earliest: float, interval: float) -> tuple[int, float]:
    """Polls a job of ``run_seconds`` needs, and how late its completion is noticed."""
    elapsed, polls = 0.0, 0
    while True:
        elapsed += next_poll_delay(elapsed=elapsed, earliest_finish=earliest, interval=interval)
        polls += 1
        if elapsed >= run_seconds:
            return polls, elapsed - run_seconds


def test_no_poll_before_the_earliest_finish_then_every_interval():
    # The first poll half an interval before the learnt figure (finishes as seen at
    # polls), then every interval.
    assert next_poll_delay(elapsed=0, earliest_finish=48, interval=2) == 47
    assert next_poll_delay(elapsed=40, earliest_finish=48, interval=2) == 7
    assert next_poll_delay(elapsed=46, earliest_finish=48, interval=2) == 2
    assert next_poll_delay(elapsed=47, earliest_finish=48, interval=2) == 2
    assert next_poll_delay(elapsed=120, earliest_finish=48, interval=2) == 2


def test_a_50s_job_costs_few_polls_and_is_noticed_within_one_interval():
    polls, late = simulate_polls(run_seconds=50, earliest=48, interval=2)
    assert polls == 3  # at 47, 49 and 51 s
    assert late <= 2
    naive_polls = 50  # one poll a second, as the SDK does
    assert polls < naive_polls / 4


def test_jobs_spread_like_the_bench_cost_four_polls_and_are_noticed_in_time():
    """Run times spread evenly over 48–58 s (the bench's). The learnt low end is 49 s:
    the fastest finishes as seen at polls two seconds apart, one second late on average."""
    runs = [48 + 10 * (i + 0.5) / 100 for i in range(100)]
    results = [simulate_polls(run, earliest=49, interval=2) for run in runs]
    mean_polls = sum(polls for polls, _ in results) / len(results)
    assert mean_polls <= 4, mean_polls
    assert max(late for _, late in results) <= 2


def test_the_first_poll_keeps_the_learnt_figure_from_creeping_up():
    """Jobs found done at their first poll are recorded at it: that record is below the
    figure it was scheduled from, so a lower figure is learnt next, not a higher one."""
    earliest = 48.0
    first_poll = next_poll_delay(elapsed=0, earliest_finish=earliest, interval=2)
    polled_late_by = 0.2  # the event loop, the pace: a poll never comes early
    assert first_poll + polled_late_by < earliest


def test_a_job_faster_than_the_low_estimate_is_late_by_at_most_the_difference():
    _, late = simulate_polls(run_seconds=45, earliest=48, interval=2)
    assert late == 47 - 45


def test_a_slower_than_usual_job_is_still_noticed_within_one_interval():
    _, late = simulate_polls(run_seconds=90, earliest=48, interval=2)
    assert late <= 2


def test_retry_after_is_never_undercut():
    rng = random.Random(1)
    for failures in range(1, 10):
        assert backoff_delay(failures, 2, retry_after=45, rng=rng) >= 45


def test_backoff_grows_and_is_capped():
    rng = random.Random(7)
    ceilings = [max(backoff_delay(n, 2, rng=rng) for _ in range(200)) for n in range(1, 10)]
    assert ceilings[0] <= 4
    assert all(c <= MAX_BACKOFF_SECONDS for c in ceilings)
    assert ceilings[-1] > 30
    assert min(backoff_delay(1, 2, rng=rng) for _ in range(50)) >= 2


def test_earliest_finish_is_learnt_from_history():
    assert expected_earliest_finish([]) == 0  # nothing known: poll every interval
    assert expected_earliest_finish([50, 52]) == 0  # too few to trust
    assert expected_earliest_finish([55, 50, 60]) == 50
    history = [float(x) for x in range(40, 80)]
    assert 40 <= expected_earliest_finish(history) <= 42  # the 5th percentile
    # One odd fast job among many does not pull every job's first poll forward.
    assert expected_earliest_finish([5.0, *history]) >= 40


def test_the_pace_hands_out_turns_at_most_per_second():
    pace = ApiPace(40, 10)
    waits = [pace.turn(job, 100.0) for job in range(100)]  # a hundred jobs due at once
    assert waits[0] == 0
    turns = [100.0 + wait for wait in waits]
    assert all(b - a == pytest.approx(1 / 40) for a, b in zip(turns, turns[1:], strict=False))
    assert max(sum(1 for t in turns if start <= t < start + 1) for start in turns) == 40
    # A job asking again keeps its place; its turn ends when its request goes.
    assert pace.turn(99, 101.0) == pytest.approx(waits[99] - 1.0)
    assert pace.start(0, 100.0) == 0.0
    assert not pace.in_line(0)
    assert pace.in_line(1)
    # Later, with the backlog gone, a poll goes at once.
    assert pace.turn(500, 200.0) == 0


def test_however_late_the_turns_wake_they_go_one_at_a_time_and_no_more_than_per_second():
    """A busy loop (or answers let go together) wakes a hundred turns at once: one goes,
    the rest get fresh turns one gap apart, ahead of the polls still in line."""
    pace = ApiPace(40, 10)
    for job in range(100):
        pace.turn(job, 100.0)  # turns 1/40 s apart from 100 s ...
    waits = [pace.start(job, 103.0) for job in range(100)]  # ... all woken at 103 s
    assert waits.count(0.0) == 1
    held = [103.0 + wait for wait in waits if wait]
    assert all(b - a == pytest.approx(1 / 40) for a, b in zip(held, held[1:], strict=False))
    assert held[0] == pytest.approx(103.0 + 1 / 80)  # half a turn after the one that went
    assert all(pace.in_line(job) for job in range(1, 100))
    assert pace.turn(500, 103.0) == pytest.approx(0.0)  # its turn long past: in line ...
    assert pace.start(500, 103.0) == pytest.approx(held[-1] + 1 / 40 - 103.0)  # ... behind


def test_no_more_than_per_second_go_in_any_second_however_they_come():
    pace = ApiPace(40, 10)
    sent: list[float] = []
    now = 10.0
    for step in range(2000):  # a request asking every 5 ms, each its own job
        now = 10.0 + step * 0.005
        if pace.start(step, now) == 0.0:
            sent.append(now)
    assert max(sum(1 for t in sent if start <= t < start + 1) for start in sent) == 40
    assert min(b - a for a, b in zip(sent, sent[1:], strict=False)) >= 1 / 80 - 1e-9


def test_result_fetches_go_ahead_of_waiting_polls_but_count_in_their_second():
    """After a restart many jobs are found done at once: each result fetch goes without
    taking a turn (a video waits on it), but results and polls together keep to the
    rate in any second, and a result held back goes ahead of the polls in line."""
    pace = ApiPace(40, 10)
    waits = [pace.turn(job, 50.0) for job in range(100)]  # a hundred polls in line
    results = range(1000, 1010)
    assert [pace.turn(job, 50.0, in_line=False) for job in results] == [0.0] * 10
    # Ten results whose status answers came back together go at once (at most
    # in_flight answers can) ...
    assert [pace.start(job, 50.0, in_line=False) for job in results] == [0.0] * 10
    assert pace.start(0, 50.0) > 0  # ... the first poll, due now too, half a turn later
    started = [pace.start(job, 50.2, in_line=False) for job in range(2000, 2040)]
    assert started.count(0.0) == 30  # the second already held ten requests
    held = [wait for wait in started if wait]
    assert held[0] == pytest.approx(51.0 - 50.2)  # when the first ten leave the window
    assert all(b - a == pytest.approx(1 / 40) for a, b in zip(held, held[1:], strict=False))
    assert held[-1] < waits[-1]  # ahead of the polls still in line
    assert waits[1] == pytest.approx(1 / 40)


async def test_no_more_than_in_flight_requests_hold_a_slot_and_the_rest_wait_in_order():
    pace = ApiPace(40, 3)
    gate = asyncio.Event()
    order: list[int] = []

    async def request(job: int) -> None:
        async with pace.slot():
            order.append(job)
            await gate.wait()

    tasks = [asyncio.create_task(request(job)) for job in range(8)]
    for _ in range(100):  # let every task reach the pace (yielding: no time passes)
        if pace.waiting_for_slot + pace.in_flight == 8:
            break
        await asyncio.sleep(0)
    # All eight are accounted for: three out, five waiting: nothing else can happen.
    assert (pace.in_flight, pace.waiting_for_slot) == (3, 5)
    assert order == [0, 1, 2]
    gate.set()
    await asyncio.gather(*tasks)
    assert order == list(range(8))
    assert (pace.in_flight, pace.waiting_for_slot) == (0, 0)


def test_the_pace_refuses_a_rate_that_is_not_one_and_a_cap_below_one():
    for bad in (0.0, 0.5, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive number"):
            ApiPace(bad, 10)
    with pytest.raises(ValueError, match="at least 1"):
        ApiPace(40, 0)


def test_without_history_every_interval():
    assert next_poll_delay(elapsed=0, earliest_finish=0, interval=2) == 2


def test_a_job_seen_still_queued_cannot_finish_before_it_is_processed():
    # Past the usual finish, but Segmind has not started it: the processing is still ahead.
    assert (
        next_poll_delay(
            elapsed=60,
            earliest_finish=48,
            interval=2,
            last_seen_queued=60,
            earliest_processing=40,
        )
        == 40 - 1
    )
    # Seen processing now, queued at the poll before: it started at 50 s at the earliest.
    kwargs: dict[str, Any] = {"earliest_finish": 48, "interval": 2, "earliest_processing": 40}
    assert next_poll_delay(elapsed=70, last_seen_queued=50, **kwargs) == 19
    assert next_poll_delay(elapsed=89, last_seen_queued=50, **kwargs) == 2
    # Never seen queued (or not since the submit): the usual rule.
    assert next_poll_delay(elapsed=60, **kwargs) == 2
    # Nothing learnt about processing yet: nothing to go on, every interval.
    assert next_poll_delay(elapsed=60, earliest_finish=48, interval=2, last_seen_queued=60) == 2


def polls_through_a_backlog(queued: float, processing: float, *, state_aware: bool):
    """Polls for a job that waits ``queued`` s in Segmind's queue, learnt times 48 / 40 s."""
    elapsed, polls, seen_queued = 0.0, 0, None
    while elapsed < queued + processing:
        if state_aware and elapsed < queued:
            seen_queued = elapsed
        elapsed += next_poll_delay(
            elapsed=elapsed,
            earliest_finish=48,
            interval=2,
            last_seen_queued=seen_queued,
            earliest_processing=40,
        )
        polls += 1
    return polls, elapsed - (queued + processing)


def test_a_backlog_at_segmind_costs_few_polls_and_the_end_is_still_noticed_in_time():
    blind, _ = polls_through_a_backlog(120, 45, state_aware=False)
    polls, late = polls_through_a_backlog(120, 45, state_aware=True)
    assert blind > 55  # every 2 s from 48 s to 165 s
    assert polls <= 25
    assert late <= 2


def learn_generations(*, poll_lateness: float, generations: int = 12) -> list[float]:
    """The learnt low end after each generation of 100 jobs (true runs spread evenly over
    48–58 s, polls every 2 s, each poll ``poll_lateness`` s late: the pace's queue)."""
    runs = [48 + 10 * (i + 0.5) / 100 for i in range(100)]
    learnt, figures = 50.0, []
    for _ in range(generations):
        recorded = []
        for run in runs:
            elapsed, due = 0.0, 0.0
            while True:
                due = elapsed + next_poll_delay(
                    elapsed=elapsed, earliest_finish=learnt, interval=2
                )
                elapsed = due + poll_lateness
                if elapsed >= run:
                    recorded.append(finish_to_record(seen_at=elapsed, due_at=due))
                    break
        learnt = expected_earliest_finish(recorded)
        figures.append(learnt)
    return figures


def test_late_polls_do_not_make_the_learnt_figure_creep_up():
    for lateness in (0.0, 0.5, 3.0, 10.0):
        figures = learn_generations(poll_lateness=lateness)
        assert max(figures) <= 50.5, (lateness, figures)
        # Late polls can only pull it down, and by no more than their lateness (more
        # polls, never later ones); it does not collapse towards nothing learnt.
        assert min(figures) >= 48 - lateness - 2, (lateness, figures)


def test_a_finish_is_recorded_no_later_than_the_poll_was_due():
    assert finish_to_record(seen_at=60, due_at=52) == 52
    assert finish_to_record(seen_at=52, due_at=52) == 52
    assert finish_to_record(seen_at=52, due_at=60) == 52  # (a step sooner than planned)


def test_a_job_not_yet_seen_at_work_is_looked_at_then_at_twice_its_age():
    kwargs: dict[str, Any] = {"earliest_finish": 48, "interval": 2, "seen_at_work": False}
    assert next_poll_delay(elapsed=0, **kwargs) == 2 * 2  # FIRST_LOOK_INTERVALS
    assert next_poll_delay(elapsed=4, **kwargs) == 4  # still queued at 4 s: look at 8 s
    assert next_poll_delay(elapsed=8, **kwargs) == 8
    assert next_poll_delay(elapsed=30, **kwargs) == 48 - 1 - 30  # the finish comes first
    assert next_poll_delay(elapsed=3.5, **kwargs) == 3.5  # never sooner than an interval
    assert next_poll_delay(elapsed=1, **kwargs) == 3
    # Nothing learnt: every interval, looks or not.
    assert next_poll_delay(elapsed=0, earliest_finish=0, interval=2, seen_at_work=False) == 2


def test_with_the_look_jobs_like_the_benchs_still_cost_under_five_polls():
    """3 s in Segmind's queue, then 45–55 s of processing (the bench's); learnt 49 s."""
    costs = []
    for i in range(100):
        run = 48 + 10 * (i + 0.5) / 100
        elapsed, polls = 0.0, 0
        while True:
            at_work = polls > 0 and elapsed >= 3
            elapsed += next_poll_delay(
                elapsed=elapsed, earliest_finish=49, interval=2, seen_at_work=at_work
            )
            polls += 1
            if elapsed >= run:
                costs.append((polls, elapsed - run))
                break
    assert sum(polls for polls, _ in costs) / len(costs) <= 5
    assert max(late for _, late in costs) <= 2
