import itertools

import pytest

from bot.core.options import (
    DURATIONS,
    QUALITIES,
    STYLES,
    Adjustment,
    VideoOptions,
    choose,
    is_allowed,
    with_next_style,
)
from bot.core.users import UserPreferences


def test_defaults_are_540p_5s():
    assert VideoOptions() == VideoOptions(quality="540p", duration=5, style=None, seed=None)


def test_1080p_with_8s_is_never_allowed():
    assert not is_allowed(VideoOptions(quality="1080p", duration=8))
    assert is_allowed(VideoOptions(quality="1080p", duration=5))
    assert is_allowed(VideoOptions(quality="720p", duration=8))


def test_picking_1080p_shortens_8s_to_5s():
    options, adjustment = choose(VideoOptions(duration=8), quality="1080p")
    assert options == VideoOptions(quality="1080p", duration=5)
    assert adjustment is Adjustment.DURATION_SHORTENED


def test_picking_8s_lowers_1080p_to_720p():
    options, adjustment = choose(VideoOptions(quality="1080p"), duration=8)
    assert options == VideoOptions(quality="720p", duration=8)
    assert adjustment is Adjustment.QUALITY_LOWERED


def test_every_sequence_of_choices_stays_allowed():
    start = VideoOptions()
    for first, second in itertools.product(
        [("q", q) for q in QUALITIES] + [("d", d) for d in DURATIONS], repeat=2
    ):
        options = start
        for field, value in (first, second):
            if field == "q":
                options, _ = choose(options, quality=str(value))
            else:
                options, _ = choose(options, duration=int(value))
            assert is_allowed(options), options


@pytest.mark.parametrize(("quality", "duration"), [("4k", None), (None, 6)])
def test_unknown_values_are_refused(quality, duration):
    with pytest.raises(ValueError, match="unknown"):
        choose(VideoOptions(), quality=quality, duration=duration)


def test_style_button_cycles_through_every_style_and_back():
    options = VideoOptions()
    seen = []
    for _ in STYLES:
        seen.append(options.style)
        options = with_next_style(options)
    assert seen == list(STYLES)
    assert options.style is None


def test_remembered_options_are_the_next_defaults_only_while_allowed():
    assert UserPreferences().next_options() == VideoOptions()
    kept = UserPreferences(options=VideoOptions("720p", 8, "clay", seed=5))
    assert kept.next_options() == VideoOptions("720p", 8, "clay")  # never the old seed
    for stale in (VideoOptions("1080p", 8), VideoOptions("4k", 5), VideoOptions(style="oil")):
        assert UserPreferences(options=stale).next_options() == VideoOptions()
