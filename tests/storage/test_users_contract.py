"""The Ledger contract for what the bot remembers of users, and each job's language.

Typed against :class:`bot.core.ports.Ledger` only; runs once per backend (conftest.py).
"""

from dataclasses import replace

from bot.core.jobs import JobState, Reason
from bot.core.limits import Limits, StartOutcome
from bot.core.options import VideoOptions
from bot.core.users import UserPreferences
from tests.builders import new_job

LIMITS = Limits(max_active_per_user=2, daily_per_user=10)


async def test_a_user_never_seen_has_no_preferences(ledger):
    assert await ledger.user_preferences(42) == UserPreferences()
    assert (await ledger.user_preferences(42)).next_options() == VideoOptions()


async def test_the_chosen_language_is_remembered_across_a_reopen(open_ledger):
    ledger = await open_ledger()
    await ledger.set_language(7, "pt_BR")
    await ledger.set_language(7, "es")  # a later choice wins
    await ledger.set_language(8, "ru")
    await ledger.close()
    reopened = await open_ledger()
    assert (await reopened.user_preferences(7)).language == "es"
    assert (await reopened.user_preferences(8)).language == "ru"


async def test_the_last_options_are_remembered_without_the_seed(ledger):
    await ledger.remember_options(7, VideoOptions("720p", 8, "clay", seed=1234))
    preferences = await ledger.user_preferences(7)
    assert preferences.options == VideoOptions("720p", 8, "clay")
    assert preferences.next_options() == VideoOptions("720p", 8, "clay")
    await ledger.remember_options(7, VideoOptions("1080p", 5, None))
    assert (await ledger.user_preferences(7)).next_options() == VideoOptions("1080p", 5, None)


async def test_language_and_options_are_kept_apart(ledger):
    await ledger.remember_options(7, VideoOptions("360p", 8))
    await ledger.set_language(7, "fr")
    await ledger.remember_options(7, VideoOptions("720p", 5, "anime"))
    preferences = await ledger.user_preferences(7)
    assert preferences.language == "fr"
    assert preferences.options == VideoOptions("720p", 5, "anime")
    await ledger.set_language(9, "ru")  # a language alone: no options yet
    assert (await ledger.user_preferences(9)).options is None


async def test_a_job_keeps_its_askers_language_and_a_retry_inherits_it(ledger):
    job, _ = await ledger.create_draft(replace(new_job(), language="pt_BR"), VideoOptions())
    assert job.language == "pt_BR"
    assert (await ledger.get(job.id)).language == "pt_BR"
    assert (await ledger.start(job.id, 1, LIMITS)).outcome is StartOutcome.STARTED
    await ledger.transition(job.id, JobState.PREPARING, JobState.REJECTED, reason=Reason.BUSY)
    await ledger.set_language(1, "ru")  # a later choice does not rewrite a job
    retry = await ledger.start_retry(job.id, 1, LIMITS, status_message_id=None)
    assert retry.outcome is StartOutcome.STARTED
    assert retry.job is not None
    assert retry.job.language == "pt_BR"
    assert [j.language for j in await ledger.unfinished()] == ["pt_BR", "pt_BR"]


async def test_jobs_default_to_english(ledger):
    job, _ = await ledger.create_draft(new_job(), VideoOptions())
    assert job.language == "en"
