"""The bot's settings: one frozen pydantic-settings model, validated when loaded.

Names, defaults and meanings are the contract in ``shared/bot-contract.md``; keep them.
Real environment variables win over ``.env``. Every problem is reported as a
:class:`SettingsError` line naming the setting and never quoting its value (a
``PRICE_STARS`` line adds the reason, which quotes at most the offending piece, cut short).

The model's only source is its init values: :func:`load_settings` merges ``.env`` (read by
python-dotenv) and the environment itself and passes the result in. pydantic-settings' own
environment source always reads ``os.environ``, so a caller's mapping could not replace it;
its sources also match names case-insensitively and JSON-decode set fields (so
``ADMIN_IDS=1,2`` would fail). One merged mapping keeps the outside as it was, and a
``Settings(...)`` built directly never picks up the process environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from dotenv import dotenv_values
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    SecretStr,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .core.prices import PriceTable
from .i18n.catalogues import LANGUAGES, match_language
from .segmind.client import DEFAULT_HISTORY_URL
from .storage.urls import redact_database_url

__all__ = [
    "DEFAULT_WEBHOOK_LISTEN",
    "HEALTH_PATH",
    "METRICS_PATH",
    "ImageUrlMode",
    "SettingsError",
    "Settings",
    "load_settings",
    "read_env_file",
]

ImageUrlMode = Literal["upload", "telegram"]
LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]

_TOKEN_RE = re.compile(r"^\d{3,20}:[A-Za-z0-9_-]{20,}$")
_WEBHOOK_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_SECRETS = ("telegram_bot_token", "segmind_api_key", "webhook_secret", "database_url")
#: Ports Telegram delivers webhooks to (Bot API ``setWebhook``).
WEBHOOK_PORTS = (443, 80, 88, 8443)
#: Where the HTTP server listens in webhook mode when ``HTTP_LISTEN`` is not set.
DEFAULT_WEBHOOK_LISTEN = "0.0.0.0:8080"
#: Paths the HTTP server answers itself; the webhook's path must be another one.
HEALTH_PATH, METRICS_PATH = "/healthz", "/metrics"
# Their validator's reason follows the rule: it quotes at most the offending piece.
_EXPLAINED = ("price_stars",)
PAYSUPPORT_TEXT_MAX = 1000
DEFAULT_PAYSUPPORT_TEXT = (
    "Questions about a payment? Write here and an operator will answer. "
    "Paid videos that can't be made are refunded automatically."
)


class SettingsError(ValueError):
    """One or more settings are missing or malformed; each line names one setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _bot_token(value: SecretStr) -> SecretStr:
    if not _TOKEN_RE.match(value.get_secret_value()):
        raise ValueError("malformed")  # never the value: it is the secret
    return value


def _database_url(value: SecretStr) -> SecretStr:
    """``postgresql://user:password@host:port/db``; the reason never quotes it (the
    password is in it)."""
    try:
        parts = urlsplit(value.get_secret_value())
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a port that is not a number
        raise ValueError("malformed") from None
    if (
        parts.scheme not in ("postgresql", "postgres")
        or not parts.hostname
        or not port_ok
        or not parts.path.strip("/")
    ):
        raise ValueError("malformed")
    return value


def _database_url_or_none(value: SecretStr | None) -> SecretStr | None:
    return None if value is None else _database_url(value)


def _http_url(value: str) -> str:
    """Clients append paths to these roots, so a trailing slash would double up."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("not an http(s) URL")
    return value.rstrip("/")


def _webhook_url(value: str) -> str:
    """Telegram posts only to HTTPS on a few ports; the path is where the bot listens."""
    if not value:
        return value  # long polling
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("bad port") from None
    if parts.scheme != "https" or not parts.hostname or (port or 443) not in WEBHOOK_PORTS:
        raise ValueError("not an https URL on a port Telegram posts to")
    if parts.path.rstrip("/") in (HEALTH_PATH, METRICS_PATH):
        raise ValueError("path taken by /healthz or /metrics")
    return value


def _webhook_secret(value: SecretStr | None) -> SecretStr | None:
    if value is not None and not _WEBHOOK_SECRET_RE.match(value.get_secret_value()):
        raise ValueError("malformed")  # never the value: it is the secret
    return value


def _listen_address(value: str) -> str:
    """``host:port`` (``[::]:8080`` for IPv6); checked here, split by ``http_address``."""
    if not value:
        return value  # the default for the mode
    host, _, port = value.rpartition(":")
    if not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("not host:port")
    return value


def _id_list(value: object) -> object:
    """``" 1, 2 ,"`` → ``["1", "2"]``; pydantic then makes each an int."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _price_table(value: object) -> PriceTable:
    """``PRICE_STARS`` text (or a number, or a table) → the :class:`PriceTable`."""
    if isinstance(value, PriceTable):
        return value
    if isinstance(value, int):  # True becomes "True", which parse refuses
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("not text")
    return PriceTable.parse(value)


def _language(value: object) -> str:
    """``pt-BR``, ``pt_br`` or ``pt`` → ``pt_BR``: a language the bot has texts for."""
    language = match_language(value) if isinstance(value, str) else None
    if language is None:
        raise ValueError("not a language the bot speaks")
    return language


_Url = Annotated[str, AfterValidator(_http_url), Field(description="must be an http(s) URL")]
_Ids = Annotated[
    frozenset[int],
    BeforeValidator(_id_list),
    Field(description="must be comma-separated Telegram ids (numbers)"),
]
# Finite too: POLL_INTERVAL_SECONDS=inf would otherwise pass "at least 0.01" and never poll.
_FiniteFloat = Annotated[
    float,
    Field(ge=0.01, allow_inf_nan=False, description="must be a finite number (at least 0.01)"),
]


class Settings(BaseSettings):
    """Frozen: the running bot keeps exactly what was checked at start."""

    # hide_input_in_errors: a ValidationError from Settings(...) built directly shows no secret.
    model_config = SettingsConfigDict(frozen=True, hide_input_in_errors=True)

    telegram_bot_token: Annotated[SecretStr, AfterValidator(_bot_token)] = Field(
        description="the token from @BotFather, like 123456:ABC-DEF…"
    )
    segmind_api_key: SecretStr = Field(
        description="your API key from segmind.com (Console → API keys)"
    )
    telegram_api_url: _Url = "https://api.telegram.org"
    segmind_api_url: _Url = "https://api.segmind.com"
    segmind_upload_url: _Url = "https://workflows-api.segmind.com/upload-asset"
    segmind_history_url: _Url = DEFAULT_HISTORY_URL
    database_path: Path = Path("data/bot.sqlite3")
    database_url: Annotated[SecretStr | None, AfterValidator(_database_url_or_none)] = Field(
        default=None, description="must be postgresql://user:password@host:port/database"
    )
    poll_interval_seconds: _FiniteFloat = 2.0
    image_url_mode: Annotated[
        ImageUrlMode,
        BeforeValidator(lambda value: value.lower() if isinstance(value, str) else value),
        Field(description="must be one of: upload, telegram"),
    ] = "upload"
    admin_ids: _Ids = frozenset()
    log_level: Annotated[
        LogLevel,
        BeforeValidator(lambda value: value.upper() if isinstance(value, str) else value),
        Field(description="must be one of: CRITICAL, ERROR, WARNING, INFO, DEBUG"),
    ] = "INFO"
    job_deadline_minutes: _FiniteFloat = 15.0
    allowed_user_ids: _Ids = frozenset()
    allowed_chat_ids: _Ids = frozenset()
    max_active_jobs_per_user: int = Field(
        default=2, ge=1, description="must be a whole number (at least 1)"
    )
    daily_jobs_per_user: int = Field(
        default=20, ge=0, description="must be a whole number (at least 0)"
    )
    price_stars: Annotated[
        PriceTable,
        PlainValidator(_price_table),
        Field(
            description="must be a number of Stars, or quality/duration=stars pairs"
            " like *=50,720p/8s=90"
        ),
    ] = PriceTable.flat(0)
    free_videos_per_user: int = Field(
        default=0, ge=0, description="must be a whole number (at least 0)"
    )
    paysupport_text: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=PAYSUPPORT_TEXT_MAX),
        Field(description=f"must be text of 1 to {PAYSUPPORT_TEXT_MAX} characters"),
    ] = DEFAULT_PAYSUPPORT_TEXT
    webhook_url: Annotated[
        str,
        AfterValidator(_webhook_url),
        Field(
            description="must be an https URL on port 443, 80, 88 or 8443 (Telegram posts"
            " nowhere else) whose path is not /healthz or /metrics"
        ),
    ] = ""
    webhook_secret: Annotated[SecretStr | None, AfterValidator(_webhook_secret)] = Field(
        default=None, description="must be 1 to 256 characters of A-Z, a-z, 0-9, _ and -"
    )
    http_listen: Annotated[
        str,
        AfterValidator(_listen_address),
        Field(description="must be host:port, like 0.0.0.0:8080 or 127.0.0.1:8080"),
    ] = ""

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> Settings:
        """Without a secret anyone who learns the URL could post forged updates."""
        if self.webhook_url and self.webhook_secret is None:
            raise ValueError(
                "WEBHOOK_SECRET is missing: it is required with WEBHOOK_URL"
                f" ({Settings.model_fields['webhook_secret'].description})"
            )
        return self

    default_language: Annotated[
        str,
        PlainValidator(_language),
        Field(description=f"must be one of the bot's languages: {', '.join(LANGUAGES)}"),
    ] = "en"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Init values only: :func:`load_settings` does the reading (see the module docstring)."""
        return (init_settings,)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never reach a log line."""
        found = [
            self.telegram_bot_token.get_secret_value(),
            self.segmind_api_key.get_secret_value(),
        ]
        if self.webhook_secret:
            found.append(self.webhook_secret.get_secret_value())
        if self.database_url is not None:
            url = self.database_url.get_secret_value()
            password = urlsplit(url).password
            found += [url, *([password, unquote(password)] if password else [])]
        return tuple(found)

    @property
    def ledger_url(self) -> str | None:
        """``DATABASE_URL`` (with its password) when the ledger is PostgreSQL, else None."""
        return None if self.database_url is None else self.database_url.get_secret_value()

    @property
    def ledger_where(self) -> str:
        """The setting that names the ledger and its value, never a password: the
        start of an operator's line about the ledger."""
        if self.database_url is None:
            return f"DATABASE_PATH {self.database_path}"
        return f"DATABASE_URL {redact_database_url(self.database_url.get_secret_value())}"

    @property
    def webhook_mode(self) -> bool:
        """Updates come by webhook (``WEBHOOK_URL`` set) instead of long polling."""
        return bool(self.webhook_url)

    @property
    def webhook_path(self) -> str:
        """The path the webhook is served at: ``WEBHOOK_URL``'s (a proxy passes it on)."""
        return urlsplit(self.webhook_url).path or "/"

    @property
    def http_address(self) -> tuple[str, int] | None:
        """(host, port) of the HTTP server; None when none runs (polling, no HTTP_LISTEN)."""
        listen = self.http_listen or (DEFAULT_WEBHOOK_LISTEN if self.webhook_mode else "")
        if not listen:
            return None
        host, _, port = listen.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def job_deadline_seconds(self) -> float:
        return self.job_deadline_minutes * 60.0


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a ``.env`` file, as python-dotenv parses them; none if absent.

    No ``${VAR}`` interpolation: values are taken literally, as they always were.
    """
    values = dotenv_values(path, interpolate=False, encoding="utf-8")
    return {key: value for key, value in values.items() if value is not None}


def _problem(error: ErrorDetails) -> str:
    """One line built from where and what went wrong, never from the input (maybe a secret)."""
    if not error["loc"]:  # a check across settings: its own words name them
        return str(error.get("ctx", {}).get("error", error["msg"]))
    field = str(error["loc"][0])
    name, rule = field.upper(), Settings.model_fields[field].description
    if field in _SECRETS:
        return f"{name} is {'missing' if error['type'] == 'missing' else 'malformed'}: {rule}"
    if error["type"] == "greater_than_equal":
        return f"{name} must be at least {error.get('ctx', {})['ge']:g}"
    reason = error.get("ctx", {}).get("error")
    if field in _EXPLAINED and error["type"] == "value_error" and reason is not None:
        return f"{name} {rule}: {reason}"
    return f"{name} {rule}"


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> Settings:
    """Read settings from ``env_file`` (if any) overlaid by ``environ`` (default: os.environ).

    An empty or blank value counts as unset, and names the bot does not use are ignored.
    """
    merged = {
        **(read_env_file(env_file) if env_file is not None else {}),
        **(os.environ if environ is None else environ),
    }
    given = {field: merged.get(field.upper(), "").strip() for field in Settings.model_fields}
    # Any: pydantic turns these strings into each field's type; only field names get in.
    values: dict[str, Any] = {field: value for field, value in given.items() if value}
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems: dict[str, str] = {}  # one line per setting, in field order
        for error in exc.errors(include_url=False, include_input=False):
            where = str(error["loc"][0]) if error["loc"] else ""
            problems.setdefault(where, _problem(error))
        raise SettingsError(list(problems.values())) from None
