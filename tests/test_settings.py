from pathlib import Path

import pytest
from pydantic import ValidationError

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
    assert settings.telegram_bot_token.get_secret_value() == TOKEN
    assert settings.segmind_api_key.get_secret_value() == "from-env"
    assert settings.poll_interval_seconds == 3


def test_repr_never_shows_secrets():
    settings = Settings(telegram_bot_token=TOKEN, segmind_api_key=KEY)
    assert TOKEN not in repr(settings)
    assert KEY not in repr(settings)


def test_secrets_are_plain_strings_for_log_redaction_and_settings_stay_frozen():
    settings = Settings(telegram_bot_token=TOKEN, segmind_api_key=KEY)
    assert settings.secrets == (TOKEN, KEY)
    assert settings.job_deadline_seconds == 15 * 60
    with pytest.raises(ValidationError):
        settings.log_level = "DEBUG"  # type: ignore[misc]


@pytest.mark.parametrize("name", ["POLL_INTERVAL_SECONDS", "JOB_DEADLINE_MINUTES"])
@pytest.mark.parametrize("value", ["inf", "Infinity", "-inf", "nan", "NaN"])
def test_float_settings_must_be_finite(name, value):
    with pytest.raises(SettingsError) as caught:
        load({"TELEGRAM_BOT_TOKEN": TOKEN, "SEGMIND_API_KEY": KEY, name: value})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(name)


def test_empty_or_blank_values_mean_the_default():
    settings = load(
        {
            "TELEGRAM_BOT_TOKEN": f"  {TOKEN} ",
            "SEGMIND_API_KEY": KEY,
            "LOG_LEVEL": "",
            "DATABASE_PATH": "   ",
            "ADMIN_IDS": "",
        }
    )
    assert settings.telegram_bot_token.get_secret_value() == TOKEN
    assert settings.log_level == "INFO"
    assert settings.database_path == Path("data/bot.sqlite3")
    assert settings.admin_ids == frozenset()


def test_env_file_inline_comment_after_two_spaces_is_dropped(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"TELEGRAM_BOT_TOKEN={TOKEN}\n"
        f"SEGMIND_API_KEY={KEY}\n"
        "LOG_LEVEL=INFO  # was DEBUG\n"
        "ADMIN_IDS=1,2  # ops\n"
        "DATABASE_PATH=${HOME}/bot.sqlite3\n"
    )
    assert read_env_file(env_file)["LOG_LEVEL"] == "INFO"
    settings = load({}, env_file=env_file)
    assert settings.log_level == "INFO"
    assert settings.admin_ids == frozenset({1, 2})
    # Taken literally, as before: no ${VAR} expansion.
    assert settings.database_path == Path("${HOME}/bot.sqlite3")


def test_missing_env_file_is_no_error(tmp_path):
    assert read_env_file(tmp_path / "absent.env") == {}
    settings = load({"TELEGRAM_BOT_TOKEN": TOKEN, "SEGMIND_API_KEY": KEY}, tmp_path / "absent")
    assert settings.log_level == "INFO"


@pytest.mark.parametrize(
    "secret",
    [
        "not-a-token-but-secret",
        "12:ABCdefGHIjklMNOpqrSTUvwxYZ012345",  # too few digits
        "123456:short_secret",  # too short after the colon
        "123456:ABCdef GHIjklMNOpqrSTUvwxYZ012345",  # a space inside
        "123456:ABCdefGHIjklMNOpqrSTUvwxYZ01234€",  # a character outside the set
        "123456;ABCdefGHIjklMNOpqrSTUvwxYZ012345",  # wrong separator
    ],
)
def test_a_malformed_secret_never_appears_in_any_problem(secret):
    with pytest.raises(SettingsError) as caught:
        load(
            {
                "TELEGRAM_BOT_TOKEN": secret,
                "SEGMIND_API_KEY": "",
                "POLL_INTERVAL_SECONDS": secret,
                "ADMIN_IDS": secret,
                "TELEGRAM_API_URL": secret,
                "LOG_LEVEL": secret,
            }
        )
    error = caught.value
    assert [line.split()[0] for line in error.problems] == [
        "TELEGRAM_BOT_TOKEN",
        "SEGMIND_API_KEY",
        "TELEGRAM_API_URL",
        "POLL_INTERVAL_SECONDS",
        "ADMIN_IDS",
        "LOG_LEVEL",
    ]
    assert error.problems[0].startswith("TELEGRAM_BOT_TOKEN is malformed")
    for text in (*error.problems, str(error), repr(error), str(error.__context__)):
        assert secret not in text
        assert secret[7:] not in text
    # The pydantic error (which knows the input) is not chained into tracebacks.
    assert error.__cause__ is None
    assert error.__suppress_context__


def test_several_bad_settings_give_one_line_each_naming_it():
    with pytest.raises(SettingsError) as caught:
        load(
            {
                "TELEGRAM_BOT_TOKEN": TOKEN,
                "POLL_INTERVAL_SECONDS": "inf",
                "IMAGE_URL_MODE": "s3",
                "ADMIN_IDS": "1,x,y",
                "MAX_ACTIVE_JOBS_PER_USER": "0",
                "SEGMIND_UPLOAD_URL": "nowhere",
            }
        )
    assert caught.value.problems == [
        "SEGMIND_API_KEY is missing: your API key from segmind.com (Console → API keys)",
        "SEGMIND_UPLOAD_URL must be an http(s) URL",
        "POLL_INTERVAL_SECONDS must be a finite number (at least 0.01)",
        "IMAGE_URL_MODE must be one of: upload, telegram",
        "ADMIN_IDS must be comma-separated Telegram ids (numbers)",
        "MAX_ACTIVE_JOBS_PER_USER must be at least 1",
    ]


def test_unknown_and_lowercase_names_are_ignored():
    settings = load(
        {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "SEGMIND_API_KEY": KEY,
            "PATH": "/usr/bin",
            "SOMETHING_ELSE": "x",
            "log_level": "LOUD",
            "telegram_bot_token": "lowercase",
        }
    )
    assert settings.log_level == "INFO"
    assert settings.telegram_bot_token.get_secret_value() == TOKEN


def test_a_given_environ_replaces_the_process_environment(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    monkeypatch.setenv("ADMIN_IDS", "5")
    settings = load({"TELEGRAM_BOT_TOKEN": TOKEN, "SEGMIND_API_KEY": KEY})
    assert settings.log_level == "INFO"
    assert settings.admin_ids == frozenset()


def test_without_environ_the_process_environment_is_read(monkeypatch):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SEGMIND_API_KEY", KEY)
    monkeypatch.setenv("ADMIN_IDS", "5")
    settings = load_settings(env_file=None)
    assert settings.segmind_api_key.get_secret_value() == KEY
    assert settings.admin_ids == frozenset({5})
