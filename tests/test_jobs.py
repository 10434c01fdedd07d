"""The state machine and the limits' day, as pure rules."""

from bot.core.jobs import (
    ACTIVE_STATES,
    RETRYABLE,
    TERMINAL_STATES,
    JobState,
    Reason,
    can_transition,
    offers_retry,
)
from bot.core.limits import utc_day_start
from tests.builders import job_row


def test_utc_day_start():
    assert utc_day_start(86_400 * 3 + 5) == 86_400 * 3


def test_state_machine_has_no_way_out_of_terminal_states():
    for state in JobState:
        for target in JobState:
            if state in (JobState.DELIVERED, JobState.FAILED, JobState.UNCERTAIN):
                assert not can_transition(state, target)
    assert can_transition(JobState.QUEUED, JobState.UNDELIVERABLE)
    assert not can_transition(JobState.DRAFT, JobState.UNDELIVERABLE)


def test_every_state_is_active_terminal_or_waiting_for_the_user():
    assert ACTIVE_STATES.isdisjoint(TERMINAL_STATES)
    waiting = {JobState.DRAFT, JobState.AWAITING_PAYMENT}  # nothing paid, nothing to drive
    assert set(JobState) == ACTIVE_STATES | TERMINAL_STATES | waiting


def test_try_again_is_offered_only_where_nothing_was_made_and_waiting_helps():
    assert offers_retry(job_row(JobState.UNCERTAIN, Reason.CONNECTION_LOST))
    for reason in Reason:
        assert offers_retry(job_row(JobState.REJECTED, reason)) is (reason in RETRYABLE)
    assert not offers_retry(job_row(JobState.FAILED, Reason.CONTENT))
    assert not offers_retry(job_row(JobState.DELIVERED, None))
