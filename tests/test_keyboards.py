import pytest

from bot.core.options import VideoOptions
from bot.i18n import texts
from bot.telegram.keyboards import Action, Press, options_keyboard, parse, retry_keyboard


def labels(markup):
    return [[button.text for button in row] for row in markup.inline_keyboard]


def test_keyboard_marks_the_defaults_and_has_every_contract_label():
    rows = labels(options_keyboard("en", 7, VideoOptions()))
    assert rows[0] == ["360p", "✅ 540p", "720p", "1080p"]
    assert rows[1] == ["✅ 5 s", "8 s"]
    assert any("Generate" in label for row in rows for label in row)


def test_every_button_data_parses_back_and_fits_64_bytes():
    markup = options_keyboard("en", 10**12, VideoOptions(quality="1080p", style="clay"))
    for row in markup.inline_keyboard:
        for button in row:
            data = button.callback_data
            assert isinstance(data, str)
            assert len(data.encode()) <= 64
            press = parse(data)
            assert press is not None
            assert press.job_id == 10**12


def test_retry_keyboard():
    (button,) = retry_keyboard("en", 3).inline_keyboard[0]
    assert button.text == texts.retry_label("en")
    assert parse(str(button.callback_data)) == Press(Action.RETRY, 3)


@pytest.mark.parametrize(
    "data",
    [
        None,
        "",
        "garbage",
        "g",
        "g:",
        "g:abc",
        "g:-1",
        "g:0",
        "g:1:extra",
        "q:1",
        "q:1:4k",
        "d:1:6",
        "d:1:x",
        "x:1",
        "q:1:720p:more",
        "g:" + "9" * 70,
    ],
)
def test_malformed_or_forged_data_is_refused(data):
    assert parse(data) is None


def test_valid_data_parses():
    assert parse("q:5:720p") == Press(Action.QUALITY, 5, "720p")
    assert parse("d:5:8") == Press(Action.DURATION, 5, "8")
    assert parse("g:5") == Press(Action.GENERATE, 5)
