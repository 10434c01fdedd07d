"""The ledger's schema as numbered SQL files: ``NNNN_what.sql``, applied in order.

A ledger records the number it was last migrated to; opening it applies the files
after that number, each in its own transaction. Files are never edited once released:
a change is a new file. SQLite's files are here; PostgreSQL's dialect of each, with the
same number and name, is in ``postgres/`` (a test holds the two lists equal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["Migration", "load_migrations", "split_statements"]

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(script: str) -> tuple[str, ...]:
    """Statements of a migration script (no semicolons inside its comments or strings).

    One at a time, because ``executescript`` would commit first and a migration must be
    one transaction.
    """
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return tuple(part.strip() for part in "\n".join(lines).split(";") if part.strip())


def load_migrations(package: str = __package__) -> tuple[Migration, ...]:
    """Every migration shipped with the bot in ``package`` (SQLite's by default),
    numbered 1, 2, … without gaps."""
    found: list[Migration] = []
    for entry in resources.files(package).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(
                Migration(
                    int(match.group(1)),
                    entry.name,
                    split_statements(entry.read_text(encoding="utf-8")),
                )
            )
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations are not numbered 1..n: {versions}")
    return tuple(found)
