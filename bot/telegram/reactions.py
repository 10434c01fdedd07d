"""👀 on the photo the bot is answering: a small "got it" that costs nothing when it fails.

It goes after the keyboard, at the lowest priority of the rate limiter (so it counts in
the bot's and the group's budgets like every request, and waits behind all of them), and
only while the limiter's queue is short. Whatever Telegram answers — reactions off or
narrowed in a group (``REACTION_INVALID``), the photo deleted, a flood wait, a network
error — is logged at DEBUG and dropped. A group that refused is left alone for a day,
so a bot in a group without reactions does not spend a request on every photo.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from telegram import Bot, ReactionTypeEmoji
from telegram.error import BadRequest, TelegramError
from telegram.ext import ExtBot

from .pacing import STATUS_EDIT_MAX_BACKLOG, Priority

__all__ = ["EYES", "Reactions"]

log = logging.getLogger(__name__)

EYES = "👀"
#: How long a reaction may wait for its turn; after that it is not worth sending.
PATIENCE_SECONDS = 5.0
#: A chat that refused the reaction is not asked again for this long.
REFUSED_FOR_SECONDS = 86_400.0
_MAX_REFUSED_CHATS = 10_000


class Reactions:
    def __init__(
        self,
        backlog: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: Requests waiting in the rate limiter: a reaction gives way when it is long.
        self._backlog = backlog
        self._clock = clock
        #: Chats whose reactions are off or exclude 👀 → when that was learnt.
        self._refused: dict[int, float] = {}

    async def seen(self, bot: Bot, chat_id: int, message_id: int) -> None:
        """React 👀 to the message; never raises, never waits more than PATIENCE_SECONDS."""
        refused_at = self._refused.get(chat_id)
        if refused_at is not None and self._clock() - refused_at < REFUSED_FOR_SECONDS:
            return
        if self._backlog() >= STATUS_EDIT_MAX_BACKLOG:
            return
        reaction = ReactionTypeEmoji(EYES)
        if isinstance(bot, ExtBot):  # the application's bot: the limiter's lowest priority
            call = bot.set_message_reaction(
                chat_id, message_id, reaction, rate_limit_args=Priority.LOW
            )
        else:
            call = bot.set_message_reaction(chat_id, message_id, reaction)
        try:
            async with asyncio.timeout(PATIENCE_SECONDS):
                await call
        except TimeoutError:
            log.debug("reaction in chat %s skipped: Telegram's budget is busy", chat_id)
        except BadRequest as exc:
            if "REACTION_INVALID" in exc.message.upper():
                self._remember_refusal(chat_id)
            log.debug("reaction in chat %s refused: %s", chat_id, exc.message)
        except TelegramError as exc:  # blocked, flood wait, network: none of it matters here
            log.debug("reaction in chat %s failed: %s", chat_id, type(exc).__name__)

    def _remember_refusal(self, chat_id: int) -> None:
        if len(self._refused) >= _MAX_REFUSED_CHATS:
            self._refused.clear()  # forgetting costs one more refused request per chat
        self._refused[chat_id] = self._clock()
