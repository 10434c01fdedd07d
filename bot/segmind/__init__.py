"""Segmind's v2 API: the core's VideoService over httpx.

The errors it raises are the core's (:mod:`bot.core.errors`): the tracker catches them
without importing this adapter.
"""

from .client import DEFAULT_HISTORY_URL, MODEL_SLUG, SegmindClient, find_output_url

__all__ = ["DEFAULT_HISTORY_URL", "MODEL_SLUG", "SegmindClient", "find_output_url"]
