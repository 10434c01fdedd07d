from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bot.core.options import VideoOptions
from bot.core.prices import PriceTable
from bot.settings import Settings, SettingsError, load_settings, read_env_file

REPO = Path(__file__).resolve().parent.parent

TOKEN = "123456:ABCdefGHIjklMNOpqrSTUvwxYZ012345"
HISTORY_URL = "https://api.spotprod.segmind.com/inference-request/request-history"
KEY = "sg_secret_key_value"


def load(env, env_file=None):
    return load_settings(env, env_file=env_file)


def test_two_secrets_are_enough_and_defaults_match_the_contract():
    settings = load({"TELEGRAM_BOT_TOKEN": TOKEN, "SEGMIND_API_KEY": KEY})
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert settings.segmind_api_url == "https://api.segmind.com"
    assert settings.segmind_upload_url == "https://workflows-api.segmind.com/upload-asset"
    assert settings.segmind_history_url == HISTORY_URL
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
    assert settings.price_stars == PriceTable.flat(0)
    assert settings.price_stars.is_free
    assert settings.free_videos_per_user == 0
    assert settings.paysupport_text.startswith("Questions about a payment?")
    assert "refunded" in settings.paysupport_text
    assert len(settings.paysupport_text) <= 1000
    assert settings.webhook_url == ""
    assert not settings.webhook_mode
    assert settings.webhook_secret is None
    assert settings.http_address is None  # polling without HTTP_LISTEN: no server


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
        ("SEGMIND_HISTORY_URL", "api.segmind.com/history"),
        ("PRICE_STARS", "-1"),
        ("PRICE_STARS", "*=50,1080p/8s=90"),
        ("FREE_VIDEOS_PER_USER", "-1"),
        ("FREE_VIDEOS_PER_USER", "1.5"),
        ("FREE_VIDEOS_PER_USER", "three"),
        ("PAYSUPPORT_TEXT", "x" * 1001),
        ("WEBHOOK_URL", "http://bot.example/hook"),
        ("WEBHOOK_URL", "https://bot.example:8080/hook"),
        ("WEBHOOK_URL", "https://bot.example/healthz"),
        ("WEBHOOK_URL", "bot.example/hook"),
        ("HTTP_LISTEN", "8080"),
        ("HTTP_LISTEN", "0.0.0.0:http"),
        ("HTTP_LISTEN", "0.0.0.0:70000"),
        ("HTTP_LISTEN", ":8080"),
        ("DEFAULT_LANGUAGE", "xx"),
        ("DEFAULT_LANGUAGE", "Klingon"),
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


def test_prices_free_videos_and_paysupport_text_parse():
    settings = load(
        {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "SEGMIND_API_KEY": KEY,
            "PRICE_STARS": " *=50, 720p/8s=90 ,1080p/5s=120",
            "FREE_VIDEOS_PER_USER": "3",
            "PAYSUPPORT_TEXT": "  Write to @support.  ",
        }
    )
    assert settings.price_stars == PriceTable.parse("*=50,720p/8s=90,1080p/5s=120")
    assert settings.price_stars.price(VideoOptions(quality="720p", duration=8)) == 90
    assert settings.price_stars.price(VideoOptions(quality="540p", duration=5)) == 50
    assert settings.free_videos_per_user == 3
    assert settings.paysupport_text == "Write to @support."


def test_a_flat_price_and_a_paysupport_text_of_exactly_1000_characters_are_fine():
    settings = load(
        {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "SEGMIND_API_KEY": KEY,
            "PRICE_STARS": "25",
            "PAYSUPPORT_TEXT": "y" * 1000,
        }
    )
    assert settings.price_stars == PriceTable.flat(25)
    assert settings.paysupport_text == "y" * 1000


def test_a_malformed_price_gives_one_line_with_its_reason_and_not_the_whole_value():
    value = "*=50,720p/8s=90,900p/5s=120"
    with pytest.raises(SettingsError) as caught:
        load({"TELEGRAM_BOT_TOKEN": TOKEN, "SEGMIND_API_KEY": KEY, "PRICE_STARS": value})
    assert caught.value.problems == [
        "PRICE_STARS must be a number of Stars, or quality/duration=stars pairs like"
        " *=50,720p/8s=90: unknown quality '900p' (use 360p, 540p, 720p, 1080p)"
    ]
    assert value not in str(caught.value)
    assert "720p/8s=90," not in str(caught.value)


def test_a_price_without_a_default_names_the_missing_combinations():
    with pytest.raises(SettingsError) as caught:
        load({"TELEGRAM_BOT_TOKEN": TOKEN, "SEGMIND_API_KEY": KEY, "PRICE_STARS": "720p/8s=90"})
    [line] = caught.value.problems
    assert line.startswith("PRICE_STARS must be a number of Stars")
    assert line.endswith(
        ": no price for 360p/5s, 360p/8s, 540p/5s, 540p/8s, 720p/5s, 1080p/5s"
        " (list each, or add *=stars)"
    )


def test_new_settings_problems_name_their_setting_with_its_rule():
    with pytest.raises(SettingsError) as caught:
        load(
            {
                "TELEGRAM_BOT_TOKEN": TOKEN,
                "SEGMIND_API_KEY": KEY,
                "PRICE_STARS": "lots",
                "FREE_VIDEOS_PER_USER": "-2",
                "PAYSUPPORT_TEXT": "z" * 1001,
            }
        )
    assert caught.value.problems == [
        "PRICE_STARS must be a number of Stars, or quality/duration=stars pairs like"
        " *=50,720p/8s=90: Stars must be a whole number: 'lots'",
        "FREE_VIDEOS_PER_USER must be at least 0",
        "PAYSUPPORT_TEXT must be text of 1 to 1000 characters",
    ]
    assert "z" * 30 not in str(caught.value)


def test_settings_built_directly_take_a_price_table_a_number_or_text():
    def build(**fields: Any) -> Settings:
        return Settings(telegram_bot_token=TOKEN, segmind_api_key=KEY, **fields)

    table = PriceTable.parse("*=5,360p/5s=1")
    assert build(price_stars=table).price_stars is table
    assert build(price_stars=7).price_stars == PriceTable.flat(7)
    assert build(price_stars=" 8 ").price_stars == PriceTable.flat(8)
    assert build(paysupport_text=" Hi. ").paysupport_text == "Hi."
    with pytest.raises(ValidationError):
        build(price_stars=True)
    with pytest.raises(ValidationError):
        build(price_stars=["50"])
    with pytest.raises(ValidationError):
        build(paysupport_text="   ")


def test_env_example_gives_the_defaults_of_the_payment_settings():
    example = read_env_file(REPO / ".env.example")
    assert example["PRICE_STARS"] == "0"
    assert example["FREE_VIDEOS_PER_USER"] == "0"
    assert example["PAYSUPPORT_TEXT"] == ""
    settings = load({**example, "TELEGRAM_BOT_TOKEN": TOKEN, "SEGMIND_API_KEY": KEY})
    defaults = load({"TELEGRAM_BOT_TOKEN": TOKEN, "SEGMIND_API_KEY": KEY})
    for field in ("price_stars", "free_videos_per_user", "paysupport_text"):
        assert getattr(settings, field) == getattr(defaults, field)
        assert getattr(settings, field) == Settings.model_fields[field].default


def test_the_history_url_is_the_contracts_default_unless_given():
    secrets = {"TELEGRAM_BOT_TOKEN": TOKEN, "SEGMIND_API_KEY": KEY}
    given = load({**secrets, "SEGMIND_HISTORY_URL": "http://127.0.0.1:9/history/"})
    assert given.segmind_history_url == "http://127.0.0.1:9/history"
    # One rule: the API root pointing elsewhere (a proxy) does not change it.
    elsewhere = load({**secrets, "SEGMIND_API_URL": "http://127.0.0.1:9"})
    assert elsewhere.segmind_history_url == HISTORY_URL
    example = load({**read_env_file(REPO / ".env.example"), **secrets})
    assert example.segmind_history_url == HISTORY_URL


# -- DATABASE_URL -------------------------------------------------------------------------

REQUIRED = {"TELEGRAM_BOT_TOKEN": TOKEN, "SEGMIND_API_KEY": KEY}


def test_database_url_is_optional_and_its_password_is_a_secret():
    plain = load_settings(REQUIRED, env_file=None)
    assert (plain.database_url, plain.ledger_url) == (None, None)
    assert plain.ledger_where == f"DATABASE_PATH {plain.database_path}"
    url = "postgresql://bot:p%40ss%2Fword@db.internal:5433/warmth"
    settings = load_settings({**REQUIRED, "DATABASE_URL": url}, env_file=None)
    assert settings.ledger_url == url
    assert settings.ledger_where == "DATABASE_URL postgresql://bot@db.internal:5433/warmth"
    assert "p@ss/word" in settings.secrets  # as typed and as decoded: both redacted
    assert "p%40ss%2Fword" in settings.secrets
    assert "p%40ss" not in repr(settings)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://bot:secretpw@db/warmth",
        "postgresql://bot:secretpw@db:port/warmth",
        "postgresql://bot:secretpw@db:5432",
        "postgresql://bot:secretpw@/warmth",
        "secretpw",
    ],
)
def test_a_malformed_database_url_is_named_without_its_value(url):
    with pytest.raises(SettingsError) as raised:
        load_settings({**REQUIRED, "DATABASE_URL": url}, env_file=None)
    assert raised.value.problems == [
        "DATABASE_URL is malformed: must be postgresql://user:password@host:port/database"
    ]
    assert "secretpw" not in str(raised.value)


# -- webhook mode ----------------------------------------------------------------------

SECRETS = {"TELEGRAM_BOT_TOKEN": TOKEN, "SEGMIND_API_KEY": KEY}


def test_webhook_mode_listens_on_8080_by_default_and_on_http_listen_when_given():
    hook = {
        **SECRETS,
        "WEBHOOK_URL": "https://bot.example:8443/tg/hook",
        "WEBHOOK_SECRET": "a-B_9",
    }
    settings = load(hook)
    assert settings.webhook_mode
    assert settings.webhook_path == "/tg/hook"
    assert settings.http_address == ("0.0.0.0", 8080)
    assert load({**hook, "HTTP_LISTEN": "127.0.0.1:9000"}).http_address == ("127.0.0.1", 9000)
    assert load({**hook, "HTTP_LISTEN": "[::]:9000"}).http_address == ("::", 9000)
    assert load({**hook, "WEBHOOK_URL": "https://bot.example"}).webhook_path == "/"
    # Polling with HTTP_LISTEN: health and metrics only.
    polling = load({**SECRETS, "HTTP_LISTEN": "127.0.0.1:9100"})
    assert (polling.webhook_mode, polling.http_address) == (False, ("127.0.0.1", 9100))


def test_webhook_url_without_a_secret_is_one_line_naming_the_secret():
    with pytest.raises(SettingsError) as caught:
        load({**SECRETS, "WEBHOOK_URL": "https://bot.example/hook"})
    [line] = caught.value.problems
    assert line.startswith("WEBHOOK_SECRET is missing")
    assert "WEBHOOK_URL" in line


@pytest.mark.parametrize("secret", ["has space", "x" * 257, "ünï", "semi;colon"])
def test_a_malformed_webhook_secret_is_named_and_never_echoed(secret):
    with pytest.raises(SettingsError) as caught:
        load({**SECRETS, "WEBHOOK_URL": "https://bot.example/hook", "WEBHOOK_SECRET": secret})
    [line] = caught.value.problems
    assert line.startswith("WEBHOOK_SECRET is malformed")
    assert secret not in line


def test_the_webhook_secret_is_a_secret():
    settings = load(
        {**SECRETS, "WEBHOOK_URL": "https://bot.example/h", "WEBHOOK_SECRET": "x" * 256}
    )
    assert "x" * 256 in settings.secrets  # so the log filter redacts it
    assert "x" * 256 not in repr(settings)


@pytest.mark.parametrize(
    ("value", "language"),
    [("en", "en"), ("pt-BR", "pt_BR"), ("pt", "pt_BR"), ("es-419", "es"), ("RU", "ru")],
)
def test_default_language_takes_any_tag_the_bot_has_texts_for(value, language):
    settings = load(
        {"TELEGRAM_BOT_TOKEN": TOKEN, "SEGMIND_API_KEY": KEY, "DEFAULT_LANGUAGE": value}
    )
    assert settings.default_language == language
    assert load({"TELEGRAM_BOT_TOKEN": TOKEN, "SEGMIND_API_KEY": KEY}).default_language == "en"
