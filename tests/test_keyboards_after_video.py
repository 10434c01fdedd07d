"""The buttons under a video and in /history: their data parses back, fits 64 bytes, and
anything malformed is refused; the Share button's query names one job."""

import pytest

from bot.telegram.keyboards import (
    Action,
    after_video_keyboard,
    history_keyboard,
    parse,
    parse_share_query,
    share_query,
)

BIG_ID = 10**15 - 1


def all_buttons(markup):
    return [button for row in markup.inline_keyboard for button in row]


def test_after_video_buttons_parse_back_and_share_names_the_job():
    markup = after_video_keyboard("en", BIG_ID, share=True)
    again, options, share = all_buttons(markup)
    presses = [parse(again.callback_data), parse(options.callback_data)]
    assert [(p.action, p.job_id) if p else None for p in presses] == [
        (Action.AGAIN, BIG_ID),
        (Action.OPTIONS, BIG_ID),
    ]
    assert share.callback_data is None
    assert parse_share_query(share.switch_inline_query_chosen_chat.query) == BIG_ID
    assert [b.text for b in all_buttons(after_video_keyboard("en", 1, share=False))] == [
        again.text,
        options.text,
    ]
    assert all_buttons(after_video_keyboard("en", 1, share=True, again=False)) == [
        all_buttons(after_video_keyboard("en", 1, share=True))[2]
    ]


def test_history_buttons_fit_64_bytes_and_parse_back():
    markup = history_keyboard(
        "en", [(n, BIG_ID - n) for n in range(1, 11)], older_than=BIG_ID, newer_than=BIG_ID
    )
    actions = []
    for button in all_buttons(markup):
        assert len(button.callback_data.encode()) <= 64
        press = parse(button.callback_data)
        assert press is not None
        actions.append(press.action)
    assert actions == [Action.RESEND] * 10 + [Action.OLDER, Action.NEWER]
    assert history_keyboard("en", [], older_than=None, newer_than=None) is None


@pytest.mark.parametrize(
    "data", ["a", "a:", "a:0", "a:-1", "a:1:2", "o:x", "v:1:q", "h:", "n:1e3", f"a:{10**15}"]
)
def test_malformed_data_is_refused(data):
    assert parse(data) is None


@pytest.mark.parametrize("query", ["", "#", "#abc", "12", "# 12", "#-3", "#0", f"#{10**15}"])
def test_a_share_query_names_a_job_only_as_made(query):
    assert parse_share_query(query) is None
    assert parse_share_query(share_query(42)) == 42
