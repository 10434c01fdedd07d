from pathlib import Path

import pytest

from bot.settings import Settings, SettingsError, load_settings, read_env_file

TOKEN = "123456:ABCdefGHIjklMNOpqrSTUvwxYZ012345"
KEY = "sg_secret_key_value"


def load(env, env_file=None):
    return load_settings(env, env_file=env_file)


def test_two_secrets_are_enough_and_defaults_match_the_contract():
    settings = load({"TELEGRAM_BOT_TOKEN": TOKEN, "SEGMIND_API_KEY": KEY})
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert settings.segmind_api_url == "https://api.segmind.com"
    assert settings.segmind_upload_url == "https://workflows-api.segmind.com/upload-asset"
    assert settings.database_path == Path("data/bot.sqlite3")
    assert settings.poll_interval_seconds == 2
    assert settings.image_url_mode == "upload"
    assert settings.admin_ids == frozenset()
    assert settings.log_level == "INFO"
    assert settings.job_deadline_minutes == 15
    assert settings.allowed_user_ids == frozenset()
    assert settings.allowed_chat_ids == frozenset()
    assert settings.max_active_jobs_per_user == 2
    assert settings.daily_jobs_per_user == 20


def test_missing_secrets_are_each_named():
    with pytest.raises(SettingsError) as caught:
        load({})
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("TELEGRAM_BOT_TOKEN is missing")
    assert problems[1].startswith("SEGMIND_API_KEY is missing")


def test_malformed_token_is_named_without_echoing_it():
    secret = "not-a-token-but-secret"
    with pytest.raises(SettingsError) as caught:
        load({"TELEGRAM_BOT_TOKEN": secret, "SEGMIND_API_KEY": KEY})
    assert "TELEGRAM_BOT_TOKEN is malformed" in str(caught.value)
    assert secret not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POLL_INTERVAL_SECONDS", "soon"),
        ("POLL_INTERVAL_SECONDS", "0"),
        ("JOB_DEADLINE_MINUTES", "-1"),
        ("MAX_ACTIVE_JOBS_PER_USER", "two"),
        ("MAX_ACTIVE_JOBS_PER_USER", "0"),
        ("DAILY_JOBS_PER_USER", "1.5"),
        ("ADMIN_IDS", "12,abc"),
        ("ALLOWED_USER_IDS", "@someone"),
        ("ALLOWED_CHAT_IDS", "-100x"),
        ("IMAGE_URL_MODE", "s3"),
        ("LOG_LEVEL", "LOUD"),
        ("TELEGRAM_API_URL", "api.telegram.org"),
        ("SEGMIND_API_URL", "ftp://x"),
        ("SEGMIND_UPLOAD_URL", "nowhere"),
    ],
)
def test_each_malformed_setting_is_named(name, value):
    with pytest.raises(SettingsError) as caught:
        load({"TELEGRAM_BOT_TOKEN": TOKEN, "SEGMIND_API_KEY": KEY, name: value})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(name)


def test_ids_and_numbers_parse():
    settings = load(
        {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "SEGMIND_API_KEY": KEY,
            "ADMIN_IDS": " 1, 2 ,",
            "ALLOWED_CHAT_IDS": "-1001234",
            "DAILY_JOBS_PER_USER": "0",
            "POLL_INTERVAL_SECONDS": "0.5",
            "LOG_LEVEL": "debug",
            "TELEGRAM_API_URL": "http://127.0.0.1:8081/",
        }
    )
    assert settings.admin_ids == frozenset({1, 2})
    assert settings.allowed_chat_ids == frozenset({-1001234})
    assert settings.daily_jobs_per_user == 0
    assert settings.poll_interval_seconds == 0.5
    assert settings.log_level == "DEBUG"
    assert settings.telegram_api_url == "http://127.0.0.1:8081"


def test_env_file_is_read_and_real_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\n"
        f"TELEGRAM_BOT_TOKEN='{TOKEN}'\n"
        'export SEGMIND_API_KEY="from-file"\n'
        "POLL_INTERVAL_SECONDS=3 # inline comment\n"
    )
    assert read_env_file(env_file)["SEGMIND_API_KEY"] == "from-file"
    settings = load({"SEGMIND_API_KEY": "from-env"}, env_file=env_file)
    assert settings.telegram_bot_token == TOKEN
    assert settings.segmind_api_key == "from-env"
    assert settings.poll_interval_seconds == 3


def test_repr_never_shows_secrets():
    settings = Settings(telegram_bot_token=TOKEN, segmind_api_key=KEY)
    assert TOKEN not in repr(settings)
    assert KEY not in repr(settings)
