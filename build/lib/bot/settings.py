"""The bot's settings: one frozen dataclass, validated when loaded.

Names, defaults and meanings are the contract in ``shared/bot-contract.md``; keep them.
Real environment variables win over ``.env``. Every problem is reported as a
:class:`SettingsError` naming the setting and never quoting a secret's value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["ImageUrlMode", "SettingsError", "Settings", "load_settings", "read_env_file"]

ImageUrlMode = str  # "upload" | "telegram"

_TOKEN_RE = re.compile(r"^\d{3,20}:[A-Za-z0-9_-]{20,}$")
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


class SettingsError(ValueError):
    """One or more settings are missing or malformed; each line names one setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    telegram_bot_token: str = field(repr=False)
    segmind_api_key: str = field(repr=False)
    telegram_api_url: str = "https://api.telegram.org"
    segmind_api_url: str = "https://api.segmind.com"
    segmind_upload_url: str = "https://workflows-api.segmind.com/upload-asset"
    database_path: Path = Path("data/bot.sqlite3")
    poll_interval_seconds: float = 2.0
    image_url_mode: ImageUrlMode = "upload"
    admin_ids: frozenset[int] = frozenset()
    log_level: str = "INFO"
    job_deadline_minutes: float = 15.0
    allowed_user_ids: frozenset[int] = frozenset()
    allowed_chat_ids: frozenset[int] = frozenset()
    max_active_jobs_per_user: int = 2
    daily_jobs_per_user: int = 20

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never reach a log line."""
        return (self.telegram_bot_token, self.segmind_api_key)

    @property
    def job_deadline_seconds(self) -> float:
        return self.job_deadline_minutes * 60.0


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=VALUE`` lines, ``#`` comments, optional quotes, ``export``."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export ") :].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


class _Reader:
    """Collects every problem instead of stopping at the first one."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def required_secret(self, name: str, pattern: re.Pattern[str] | None, hint: str) -> str:
        value = self.raw(name)
        if value is None:
            self.problems.append(f"{name} is missing: {hint}")
            return ""
        if pattern is not None and not pattern.match(value):
            self.problems.append(f"{name} is malformed: {hint}")
            return ""
        return value

    def url(self, name: str, default: str) -> str:
        value = self.raw(name) or default
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.problems.append(f"{name} must be an http(s) URL")
            return default
        return value.rstrip("/")

    def number(self, name: str, default: float, *, minimum: float, integer: bool) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            self.problems.append(f"{name} must be {kind} (at least {minimum:g})")
            return default
        if number < minimum or number != number:  # NaN check
            self.problems.append(f"{name} must be at least {minimum:g}")
            return default
        return number

    def ids(self, name: str) -> frozenset[int]:
        value = self.raw(name)
        if value is None:
            return frozenset()
        result: set[int] = set()
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                result.add(int(part))
            except ValueError:
                self.problems.append(
                    f"{name} must be comma-separated Telegram ids (numbers), not {part[:20]!r}"
                )
                return frozenset()
        return frozenset(result)

    def choice(self, name: str, default: str, choices: tuple[str, ...], *, upper: bool) -> str:
        value = self.raw(name)
        if value is None:
            return default
        value = value.upper() if upper else value.lower()
        if value not in choices:
            self.problems.append(f"{name} must be one of: {', '.join(choices)}")
            return default
        return value


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> Settings:
    """Read settings from ``.env`` (if present) overlaid by the real environment."""
    merged: dict[str, str] = {}
    if env_file is not None:
        merged.update(read_env_file(env_file))
    merged.update(os.environ if environ is None else environ)
    r = _Reader(merged)
    settings = Settings(
        telegram_bot_token=r.required_secret(
            "TELEGRAM_BOT_TOKEN", _TOKEN_RE, "the token from @BotFather, like 123456:ABC-DEF…"
        ),
        segmind_api_key=r.required_secret(
            "SEGMIND_API_KEY", None, "your API key from segmind.com (Console → API keys)"
        ),
        telegram_api_url=r.url("TELEGRAM_API_URL", Settings.telegram_api_url),
        segmind_api_url=r.url("SEGMIND_API_URL", Settings.segmind_api_url),
        segmind_upload_url=r.url("SEGMIND_UPLOAD_URL", Settings.segmind_upload_url),
        database_path=Path(r.raw("DATABASE_PATH") or Settings.database_path),
        poll_interval_seconds=r.number(
            "POLL_INTERVAL_SECONDS", Settings.poll_interval_seconds, minimum=0.01, integer=False
        ),
        image_url_mode=r.choice(
            "IMAGE_URL_MODE", Settings.image_url_mode, ("upload", "telegram"), upper=False
        ),
        admin_ids=r.ids("ADMIN_IDS"),
        log_level=r.choice("LOG_LEVEL", Settings.log_level, _LOG_LEVELS, upper=True),
        job_deadline_minutes=r.number(
            "JOB_DEADLINE_MINUTES", Settings.job_deadline_minutes, minimum=0.01, integer=False
        ),
        allowed_user_ids=r.ids("ALLOWED_USER_IDS"),
        allowed_chat_ids=r.ids("ALLOWED_CHAT_IDS"),
        max_active_jobs_per_user=int(
            r.number(
                "MAX_ACTIVE_JOBS_PER_USER",
                Settings.max_active_jobs_per_user,
                minimum=1,
                integer=True,
            )
        ),
        daily_jobs_per_user=int(
            r.number("DAILY_JOBS_PER_USER", Settings.daily_jobs_per_user, minimum=0, integer=True)
        ),
    )
    if r.problems:
        raise SettingsError(r.problems)
    return settings
