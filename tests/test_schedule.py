import random

from bot.core.schedule import (
    MAX_BACKOFF_SECONDS,
    backoff_delay,
    expected_earliest_finish,
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


def test_sparse_before_the_earliest_finish_then_every_interval():
    assert next_poll_delay(elapsed=0, earliest_finish=48, interval=2) == 24
    assert next_poll_delay(elapsed=40, earliest_finish=48, interval=2) == 4
    assert next_poll_delay(elapsed=45, earliest_finish=48, interval=2) == 2
    assert next_poll_delay(elapsed=120, earliest_finish=48, interval=2) == 2


def test_a_50s_job_costs_few_polls_and_is_noticed_within_one_interval():
    polls, late = simulate_polls(run_seconds=50, earliest=48, interval=2)
    assert polls <= 12
    assert late <= 2
    naive_polls = 50  # one poll a second, as the SDK does
    assert polls < naive_polls / 4


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
    assert 40 <= expected_earliest_finish(history) <= 45


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
        == 20
    )
    # Seen processing now, queued at the poll before: it started at 50 s at the earliest.
    kwargs = {"earliest_finish": 48, "interval": 2, "earliest_processing": 40}
    assert next_poll_delay(elapsed=70, last_seen_queued=50, **kwargs) == 10
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
