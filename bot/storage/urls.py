"""``DATABASE_URL`` as an operator may see it: without its password."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_database_url"]


def redact_database_url(url: str) -> str:
    """The URL without its password and options (which may carry one), for log lines."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "postgresql://…"
    user = f"{parts.username}@" if parts.username else ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}{host}" + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
