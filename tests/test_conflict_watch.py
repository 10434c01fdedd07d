"""The 409 Conflict streak: one conflict is nothing, 30 s of them stop the bot."""

from __future__ import annotations

from bot.telegram.runtime import CONFLICT_GAP_SECONDS, CONFLICT_STOP_SECONDS, ConflictWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watch() -> tuple[ConflictWatch, Clock, list[str]]:
    clock = Clock()
    stops: list[str] = []
    return ConflictWatch(on_persistent=lambda: stops.append("stop"), clock=clock), clock, stops


def ptb_retries(watch: ConflictWatch, clock: Clock, seconds: float) -> None:
    """Conflicts as PTB's retry loop meets them: 1 s apart, then 1.5 times longer, ≤ 30 s."""
    start, interval = clock.now, 0.0
    while clock.now - start <= seconds:
        watch.conflict()
        interval = 1.0 if interval == 0 else min(30.0, 1.5 * interval)
        clock.now += interval


def test_conflicts_that_persist_stop_the_bot_once():
    conflicts, clock, stops = watch()
    ptb_retries(conflicts, clock, CONFLICT_STOP_SECONDS + 60)
    assert stops == ["stop"]
    assert conflicts.stopped


def test_a_single_conflict_or_a_burst_does_not():
    conflicts, clock, stops = watch()
    conflicts.conflict()
    clock.now += 1
    conflicts.conflict()
    assert stops == []
    assert not conflicts.stopped


def test_a_quiet_gap_starts_a_new_streak():
    conflicts, clock, stops = watch()
    for _ in range(20):  # a conflict now and then, each after normal polling
        conflicts.conflict()
        clock.now += CONFLICT_GAP_SECONDS + 1
    assert stops == []
