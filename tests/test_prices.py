import re

import pytest

from bot.core.options import DURATIONS, QUALITIES, VideoOptions, is_allowed
from bot.core.prices import MAX_STARS, PriceTable

ALLOWED = [
    (quality, duration)
    for quality in QUALITIES
    for duration in DURATIONS
    if is_allowed(VideoOptions(quality=quality, duration=duration))
]


def prices(table: PriceTable) -> dict[tuple[str, int], int]:
    """What the table charges for every allowed combination, asked through price()."""
    return {
        (quality, duration): table.price(VideoOptions(quality=quality, duration=duration))
        for quality, duration in ALLOWED
    }


def test_the_allowed_combinations_are_the_seven_the_model_offers():
    assert ALLOWED == [
        ("360p", 5),
        ("360p", 8),
        ("540p", 5),
        ("540p", 8),
        ("720p", 5),
        ("720p", 8),
        ("1080p", 5),
    ]


@pytest.mark.parametrize(("text", "stars"), [("0", 0), ("50", 50), (" 7 ", 7), ("10000", 10000)])
def test_a_bare_number_prices_every_video_alike(text, stars):
    table = PriceTable.parse(text)
    assert prices(table) == dict.fromkeys(ALLOWED, stars)
    assert table == PriceTable.flat(stars)


def test_zero_is_free_and_any_price_is_not():
    assert PriceTable.parse("0").is_free
    assert PriceTable.flat(0).is_free
    assert PriceTable.parse("*=0").is_free
    assert not PriceTable.parse("1").is_free
    assert not PriceTable.parse("*=0,720p/8s=1").is_free


def test_pairs_with_a_default_price_each_combination():
    table = PriceTable.parse("*=50,720p/8s=90,1080p/5s=120")
    assert prices(table) == {
        ("360p", 5): 50,
        ("360p", 8): 50,
        ("540p", 5): 50,
        ("540p", 8): 50,
        ("720p", 5): 50,
        ("720p", 8): 90,
        ("1080p", 5): 120,
    }
    assert not table.is_free


def test_style_and_seed_do_not_change_the_price():
    table = PriceTable.parse("*=50,720p/8s=90")
    assert table.price(VideoOptions(quality="720p", duration=8, style="anime", seed=7)) == 90
    assert table.price(VideoOptions(quality="720p", duration=5, style="clay")) == 50


def test_every_combination_listed_needs_no_default():
    text = ",".join(f"{q}/{d}s={i + 1}" for i, (q, d) in enumerate(ALLOWED))
    table = PriceTable.parse(text)
    assert prices(table) == {combination: i + 1 for i, combination in enumerate(ALLOWED)}


def test_a_pair_may_make_one_combination_free():
    table = PriceTable.parse("*=40,360p/5s=0")
    assert prices(table)[("360p", 5)] == 0
    assert prices(table)[("540p", 5)] == 40
    assert not table.is_free


@pytest.mark.parametrize(
    "text",
    [
        "*=50,720p/8s=90",
        "*=50,720p/8=90",
        "*=50,720P/8S=90",
        "  * = 50 ,  720p / 8 s = 90  ",
        "720p/8s=90,*=50",
        "*=50,720p/8s=0090",
    ],
)
def test_spellings_and_whitespace_are_tolerated(text):
    assert prices(PriceTable.parse(text)) == {
        **dict.fromkeys(ALLOWED, 50),
        ("720p", 8): 90,
    }


def test_describe_lists_every_allowed_combination_with_its_stars():
    table = PriceTable.parse("*=50,720p/8s=90,1080p/5s=120,360p/5s=0")
    assert table.describe() == [
        ("360p", 5, 0),
        ("360p", 8, 50),
        ("540p", 5, 50),
        ("540p", 8, 50),
        ("720p", 5, 50),
        ("720p", 8, 90),
        ("1080p", 5, 120),
    ]
    assert PriceTable.parse("0").describe() == [(q, d, 0) for q, d in ALLOWED]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("-5", "can't be negative: '-5'"),
        ("*=-1", "can't be negative: '-1'"),
        ("1.5", "must be a whole number: '1.5'"),
        ("*=2.5", "must be a whole number: '2.5'"),
        ("fifty", "must be a whole number: 'fifty'"),
        ("*=+5", "must be a whole number: '+5'"),
        ("*=٥", "must be a whole number"),  # an Arabic-Indic five: ASCII digits only
        ("10001", "'10001' is above 10000 Stars"),
        ("*=50,720p/8s=20000", "'20000' is above 10000 Stars"),
        ("9" * 5000, "is above 10000 Stars"),
        ("*=50,900p/5s=10", "unknown quality '900p'"),
        ("*=50,720p/6s=10", "unknown duration '6s'"),
        ("*=50,720p/8m=10", "unknown duration '8m'"),
        ("*=50,720p/=10", "unknown duration ''"),
        ("*=50,1080p/8s=10", "1080p/8s is not a combination the model offers"),
        ("*=50,720p=10", "'720p' is not quality/duration"),
        ("*=50,720p/8s/x=10", "is not quality/duration"),
        ("*=50,720p/8s=90,720P/8=80", "720p/8s is given twice"),
        ("*=50,*=60", "* is given twice"),
        ("*=50,,720p/8s=90", "empty piece"),
        ("*=50,", "empty piece"),
        (",*=50", "empty piece"),
        ("*=50,720p/8s", "'720p/8s' has no =stars"),
        ("720p/8s", "'720p/8s' has no =stars"),
        ("*", "'*' has no =stars"),
        ("*=", "has no Stars after ="),
        ("=50", "has no quality/duration before ="),
        ("*=50=60", "must be a whole number: '50=60'"),
        ("50,720p/8s=90", "'50' has no =stars"),
    ],
)
def test_each_malformed_text_is_refused_with_a_short_reason(text, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        PriceTable.parse(text)


def test_without_a_default_every_missing_combination_is_named():
    with pytest.raises(ValueError, match="no price for") as caught:
        PriceTable.parse("360p/5s=10,360p/8s=10,540p/5=10,720p/8s=10")
    assert str(caught.value) == (
        "no price for 540p/8s, 720p/5s, 1080p/5s (list each, or add *=stars)"
    )


def test_an_error_quotes_at_most_a_short_piece_of_the_input():
    long_quality = "q" * 500
    with pytest.raises(ValueError, match="unknown quality 'qqq") as caught:
        PriceTable.parse(f"*=50,{long_quality}/5s=10")
    assert long_quality not in str(caught.value)
    assert len(str(caught.value)) < 100
    with pytest.raises(ValueError, match="whole number: 'oops") as caught:
        PriceTable.parse("*=50,720p/8s=90,540p/5s=oops-and-more-text-after-it")
    assert "720p/8s=90" not in str(caught.value)
    assert "*=50" not in str(caught.value)


def test_the_cap_is_telegrams_limit_per_item():
    assert MAX_STARS == 10_000
    assert PriceTable.parse(f"*=1,1080p/5s={MAX_STARS}").price(VideoOptions("1080p", 5)) == (
        MAX_STARS
    )


def test_a_combination_the_model_refuses_has_no_price():
    with pytest.raises(ValueError, match="1080p/8s"):
        PriceTable.parse("50").price(VideoOptions(quality="1080p", duration=8))


def test_a_table_is_frozen_and_always_complete():
    table = PriceTable.parse("50")
    with pytest.raises(AttributeError):
        table.entries = ()  # type: ignore[misc]
    with pytest.raises(ValueError, match="every allowed combination"):
        PriceTable(table.entries[:-1])
    with pytest.raises(ValueError, match="every price"):
        PriceTable.flat(MAX_STARS + 1)
    with pytest.raises(ValueError, match="every price"):
        PriceTable.flat(-1)
    assert hash(table) == hash(PriceTable.flat(50))
