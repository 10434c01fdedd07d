"""Small builders shared by tests: the photo a job is made from."""

from __future__ import annotations

from bot.core.jobs import NewJob


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
