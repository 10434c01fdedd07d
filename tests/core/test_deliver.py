"""COMPLETED → DELIVERED: ``Tracker._deliver`` and ``_send_and_record``, by hand."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

import httpx
import pytest

from bot.core.errors import ChatUnreachable, SendFailed, VideoRefused
from bot.core.jobs import Job, JobState, Reason
from bot.core.ports import BeforeSend, Progress
from bot.core.tracker import RESULT_RETENTION_SECONDS
from tests.core.conftest import INTERVAL, Harness
from tests.core.doubles import error

S = JobState

#: The fake's bodies arrive as a stream, as over a network (an error body must be read
#: before its text is; this once escaped step() as httpx.ResponseNotRead); "preloaded"
#: is what ``httpx.Response(json=...)`` hands a MockTransport client, already read.
BODIES = [
    pytest.param(True, id="streamed"),
    pytest.param(False, id="preloaded"),
]


async def test_the_video_is_sent_and_delivered_recorded_at_once(h: Harness):
    job, request = await h.completed_job()
    h.clock.advance(3)
    assert await h.step(job.id) is None
    delivered = await h.job(job.id)
    assert delivered.state is S.DELIVERED
    assert delivered.video_file_id == f"video-file-{job.id}"
    assert delivered.notified_at == h.clock.now
    assert h.moved(job.id) == [(S.COMPLETED, S.DELIVERED)]
    assert h.messenger.methods() == ["send_video", "show_progress"]
    assert h.messenger.stages() == [Progress.DONE]  # a fast download: no "sending"
    assert h.messenger.videos == [request.video]
    # The CDN gets no API key.
    (download,) = h.segmind.seen("video")
    assert download.url == request.video_url
    assert "x-api-key" not in download.headers
    # Done: a later step does nothing at all.
    assert await h.step(job.id) is None
    assert len(h.messenger.calls) == 2
    assert len(h.segmind.requests) == 1


async def test_the_done_status_line_failing_does_not_undo_the_delivery(h: Harness):
    job, _ = await h.completed_job()
    h.messenger.fail("show_progress", ChatUnreachable("blocked just now"))
    assert await h.step(job.id) is None
    assert (await h.job(job.id)).state is S.DELIVERED


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "streamed-past"])
async def test_a_video_over_the_upload_limit_goes_as_its_link(h: Harness, chunked: bool):
    job, request = await h.completed_job(chunked_video=chunked)
    h.messenger.max_upload_bytes = len(request.video) - 1
    assert await h.step(job.id) is None
    delivered = await h.job(job.id)
    assert delivered.state is S.DELIVERED
    assert delivered.video_file_id is None
    assert h.messenger.methods() == ["send_video_link", "show_progress"]
    expires_at = job.completed_at + RESULT_RETENTION_SECONDS  # type: ignore[operator]
    assert h.messenger.calls[0].args == (request.video_url, expires_at)


async def test_a_video_exactly_at_the_upload_limit_is_uploaded(h: Harness):
    job, request = await h.completed_job(chunked_video=True)
    h.messenger.max_upload_bytes = len(request.video)
    await h.step(job.id)
    assert h.messenger.methods() == ["send_video", "show_progress"]
    assert h.messenger.videos == [request.video]


async def test_a_refused_video_goes_as_its_link(h: Harness):
    job, request = await h.completed_job()
    h.messenger.fail("send_video", VideoRefused("wrong dimensions"))
    assert await h.step(job.id) is None
    delivered = await h.job(job.id)
    assert delivered.state is S.DELIVERED
    assert delivered.video_file_id is None
    assert h.messenger.methods() == ["send_video", "send_video_link", "show_progress"]
    assert h.messenger.calls_to("send_video_link")[0].args[0] == request.video_url


async def test_an_unreachable_chat_ends_undeliverable_without_retries(h: Harness):
    job, _ = await h.completed_job()
    h.messenger.fail("send_video", ChatUnreachable("bot kicked"))
    assert await h.step(job.id) is None
    ended = await h.job(job.id)
    assert (ended.state, ended.reason) == (S.UNDELIVERABLE, Reason.CHAT_GONE)
    assert ended.notified_at == h.clock.now
    h.clock.advance(60)
    assert await h.step(job.id) is None
    assert h.messenger.methods() == ["send_video"]
    assert h.segmind.count("video") == 1


async def test_a_failed_send_backs_off_past_retry_after_then_delivers_once(h: Harness):
    job, request = await h.completed_job()
    h.messenger.fail("send_video", SendFailed("flood control", retry_after=20))
    delay = await h.step(job.id)
    assert delay is not None
    assert delay >= 20
    assert (await h.job(job.id)).state is S.COMPLETED
    assert h.messenger.videos == []

    h.clock.advance(delay)
    assert await h.step(job.id) is None
    assert (await h.job(job.id)).state is S.DELIVERED
    assert h.messenger.videos == [request.video]
    assert h.messenger.methods() == ["send_video", "send_video", "show_progress"]


@pytest.mark.parametrize("streamed", BODIES)
async def test_an_expired_video_ends_expired(h: Harness, streamed: bool):
    h.segmind.streamed_bodies = streamed
    job, _ = await h.completed_job()
    h.segmind.fail("video", 404)
    assert await h.step(job.id) == 0.0
    expired = await h.job(job.id)
    assert (expired.state, expired.reason) == (S.EXPIRED, Reason.RESULT_EXPIRED)
    assert h.messenger.calls == []


@pytest.mark.parametrize("streamed", BODIES)
@pytest.mark.parametrize("code", [500, 503])
async def test_a_failed_download_backs_off(h: Harness, code: int, streamed: bool):
    h.segmind.streamed_bodies = streamed
    job, request = await h.completed_job()
    h.segmind.fail("video", error(code, retry_after=15))
    delay = await h.step(job.id)
    assert delay is not None
    assert delay >= 15
    assert (await h.job(job.id)).state is S.COMPLETED
    h.clock.advance(delay)
    assert await h.step(job.id) is None
    assert h.messenger.videos == [request.video]


@pytest.mark.parametrize(
    "outcome", [httpx.ConnectError, httpx.ReadTimeout], ids=["connect-error", "read-timeout"]
)
async def test_a_broken_download_backs_off(h: Harness, outcome):
    job, request = await h.completed_job()
    h.segmind.fail("video", outcome)
    delay = await h.step(job.id)
    assert delay is not None
    assert delay >= INTERVAL
    assert (await h.job(job.id)).state is S.COMPLETED
    assert h.messenger.calls == []
    h.clock.advance(delay)
    await h.step(job.id)
    assert h.messenger.videos == [request.video]


async def test_a_result_older_than_its_retention_ends_expired_without_a_download(h: Harness):
    job, _ = await h.completed_job()
    h.clock.advance(RESULT_RETENTION_SECONDS + 1)
    assert await h.step(job.id) == 0.0
    expired = await h.job(job.id)
    assert (expired.state, expired.reason) == (S.EXPIRED, Reason.RESULT_EXPIRED)
    assert h.segmind.requests == []
    assert h.messenger.calls == []
    assert await h.step(job.id) is None
    assert h.messenger.calls_to("send_outcome")[0].args == (Reason.RESULT_EXPIRED,)


async def test_a_result_at_its_retention_limit_is_still_delivered(h: Harness):
    job, _ = await h.completed_job()
    h.clock.advance(RESULT_RETENTION_SECONDS)
    assert await h.step(job.id) is None
    assert (await h.job(job.id)).state is S.DELIVERED


async def test_a_stop_during_the_upload_leaves_the_file_to_the_upload(h: Harness, monkeypatch):
    """SIGTERM cancels the job's task while its video is being sent. The send goes on
    (it is paid for) and must still find the file; the folder goes once it is done.
    The cancelled task used to delete the folder under it (FileNotFoundError)."""
    job, request = await h.completed_job()
    send_video = h.messenger.send_video
    uploading, resume = asyncio.Event(), asyncio.Event()
    seen: list[Path] = []

    async def slow_upload(job: Job, path: Path, *, before_send: BeforeSend = None) -> str:
        assert before_send is not None
        await before_send()  # its turn came: the lease confirmed, the upload begins
        seen.append(path)
        uploading.set()
        await resume.wait()
        return await send_video(job, path)

    monkeypatch.setattr(h.messenger, "send_video", slow_upload)
    h.tracker.track(job.id)
    [job_task] = [task for task in asyncio.all_tasks() if task.get_name() == f"job-{job.id}"]
    await uploading.wait()
    stopping = asyncio.create_task(h.tracker.stop())  # SIGTERM
    with contextlib.suppress(asyncio.CancelledError):
        await job_task
    assert job_task.cancelled()
    assert seen[0].exists()  # the cancelled task left the file to the upload
    resume.set()
    await stopping
    assert h.messenger.videos == [request.video]
    assert (await h.job(job.id)).state is S.DELIVERED
    assert not seen[0].parent.exists()  # and the folder went with the upload


@pytest.mark.parametrize("download", ["ok", "expired", "failed", "too-large"])
async def test_no_video_folder_is_left_behind(h: Harness, tmp_path, monkeypatch, download):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    job, request = await h.completed_job()
    if download == "expired":
        h.segmind.fail("video", 404)
    elif download == "failed":
        h.segmind.fail("video", 503)
    elif download == "too-large":
        h.messenger.max_upload_bytes = len(request.video) - 1
    await h.step(job.id)
    assert list((tmp_path / "tmp").iterdir()) == []
