"""An "Again" job (same photo and options, a new seed) re-uses the photo's upload while
Segmind still serves it, and re-hosts it from Telegram once it does not."""

from __future__ import annotations

from bot.core.jobs import JobState
from bot.core.limits import StartOutcome
from tests.core.conftest import LIMITS, USER, Harness, run_until_settled
from tests.core.doubles import CDN_URL

S = JobState


async def delivered_then_again(h: Harness) -> tuple[int, int]:
    """A job run to its video, then "Again" pressed under it: (old id, new id)."""
    first = await h.new_job()
    h.segmind.next_timeline = ["PROCESSING", "COMPLETED"]
    await run_until_settled(h, first.id)
    assert (await h.job(first.id)).state is S.DELIVERED
    result = await h.ledger.start_again(first.id, USER, LIMITS)
    assert result.outcome is StartOutcome.STARTED
    assert result.job is not None
    return first.id, result.job.id


async def test_again_reuses_the_upload_that_is_still_served(h: Harness):
    first_id, again_id = await delivered_then_again(h)
    first = await h.job(first_id)
    assert (await h.job(again_id)).image_url == first.image_url == f"{CDN_URL}/assets/upload-1.jpg"
    h.segmind.requests.clear()
    h.segmind.next_timeline = ["COMPLETED"]
    fetches = len(h.messenger.calls_to("fetch_photo"))

    await run_until_settled(h, again_id)

    again = await h.job(again_id)
    assert again.state is S.DELIVERED
    # One HEAD on the old upload, no second upload, no download from Telegram.
    routes = [seen.route for seen in h.segmind.requests]
    assert routes[:2] == ["asset", "submit"]
    assert "upload" not in routes
    assert len(h.messenger.calls_to("fetch_photo")) == fetches
    submit = h.segmind.seen("submit")[0].json
    assert submit["image_url"] == first.image_url
    # Same options, a seed of its own.
    assert again.options.quality == first.options.quality
    assert again.options.duration == first.options.duration
    assert again.options.seed is not None
    assert again.options.seed != first.options.seed


async def test_again_rehosts_the_photo_when_the_upload_expired(h: Harness):
    first_id, again_id = await delivered_then_again(h)
    first = await h.job(first_id)
    assert first.image_url is not None
    h.segmind.expired_assets.add(first.image_url)
    h.segmind.requests.clear()
    h.segmind.next_timeline = ["COMPLETED"]

    await run_until_settled(h, again_id)

    again = await h.job(again_id)
    assert again.state is S.DELIVERED
    assert [seen.route for seen in h.segmind.requests][:3] == ["asset", "upload", "submit"]
    assert h.segmind.seen("submit")[0].json["image_url"] == f"{CDN_URL}/assets/upload-2.jpg"
    assert again.image_url == f"{CDN_URL}/assets/upload-2.jpg"
