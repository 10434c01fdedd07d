"""Small builders shared by tests: the photo a job is made from."""

from __future__ import annotations

from dataclasses import asdict

from bot.core.jobs import Job, JobState, NewJob, Reason
from bot.core.options import VideoOptions


def new_job(message_id: int = 10, user_id: int = 1, chat_id: int = 1) -> NewJob:
    """A private chat's photo, as the handlers would record it."""
    return NewJob(
        chat_id=chat_id,
        user_id=user_id,
        chat_type="private",
        trigger_message_id=message_id,
        photo_message_id=message_id,
        thread_id=None,
        file_id=f"file-{message_id}",
        file_unique_id=f"u-{message_id}",
        file_size=1000,
        mime_type="image/jpeg",
    )


def job_row(state: JobState, reason: Reason | None = None, job_id: int = 1) -> Job:
    """A ledger row in ``state``, as a backend would return it (nothing else set)."""
    return Job(
        **asdict(new_job()),
        id=job_id,
        options=VideoOptions(),
        state=state,
        reason=reason,
        keyboard_message_id=None,
        request_id=None,
        output_url=None,
        video_file_id=None,
        retry_of=None,
        poll_count=0,
        created_at=0.0,
        generate_at=None,
        submitted_at=None,
        completed_at=None,
        finished_at=None,
        notified_at=None,
    )
