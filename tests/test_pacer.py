from bot.telegram_messenger import (
    GROUP_CHAT_GAP,
    PRIVATE_CHAT_GAP,
    ChatPacer,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_optional_messages_are_skipped_inside_the_chat_gap():
    clock = Clock()
    pacer = ChatPacer(clock)
    assert pacer.optional(1)
    assert not pacer.optional(1)  # a status edit right after another is dropped
    assert pacer.optional(2)  # other chats are independent
    clock.now += PRIVATE_CHAT_GAP
    assert pacer.optional(1)


def test_groups_get_a_wider_gap():
    clock = Clock()
    pacer = ChatPacer(clock)
    assert pacer.optional(-100)
    clock.now += PRIVATE_CHAT_GAP
    assert not pacer.optional(-100)
    assert pacer.wait_needed(-100) == GROUP_CHAT_GAP - PRIVATE_CHAT_GAP


async def test_essential_messages_wait_for_the_slot():
    pacer = ChatPacer()
    await pacer.essential(5)
    assert 0 < pacer.wait_needed(5) <= PRIVATE_CHAT_GAP
    assert not pacer.optional(5)


def test_status_edits_give_way_while_the_rate_limiter_has_a_queue():
    clock = Clock()
    backlog = [3]
    pacer = ChatPacer(clock, busy=lambda: backlog[0] > 0)
    assert not pacer.optional(1)
    backlog[0] = 0
    assert pacer.optional(1)
