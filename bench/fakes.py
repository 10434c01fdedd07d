"""The fake Segmind with realistic, slightly varied job times (tests/fakes stay as they are)."""

from __future__ import annotations

import random

from tests.fakes.segmind import FakeSegmind

__all__ = ["BenchSegmind"]


class BenchSegmind(FakeSegmind):
    """A FakeSegmind whose jobs each draw their processing time from a range.

    The base class reads ``processing_seconds`` exactly once per accepted submit (when it
    makes the job), so a property that draws a fresh value on each read gives every job
    its own time without touching the fake's code.
    """

    def __init__(
        self,
        *,
        queued_seconds: float,
        processing_range: tuple[float, float],
        rng: random.Random,
        video_size: int = 200_000,
    ) -> None:
        self._rng = rng
        super().__init__(
            queued_seconds=queued_seconds,
            processing_seconds=processing_range[0],
            video_size=video_size,
        )
        # After the base __init__, whose assignment went through the setter below.
        self._range = processing_range

    @property
    def processing_seconds(self) -> float:
        low, high = self._range
        return low if high <= low else self._rng.uniform(low, high)

    @processing_seconds.setter
    def processing_seconds(self, value: float) -> None:
        # The base __init__ assigns it; a plain assignment later pins every job to it.
        self._range = (value, value)

    def set_processing_range(self, low: float, high: float) -> None:
        self._range = (low, high)
