"""``python -m bot copy-ledger``: move what the SQLite ledger still owes into PostgreSQL."""

from __future__ import annotations

import sys

from .core.errors import LedgerError
from .settings import Settings
from .storage import LedgerLocked, LedgerUnusable, SqliteLedger

__all__ = ["run_copy_ledger"]


async def run_copy_ledger(settings: Settings) -> int:
    """Copy DATABASE_PATH's unfinished jobs and owed payments into DATABASE_URL; one
    line of outcome. Exit 0 when done (also when everything was there already)."""
    url = settings.ledger_url
    if url is None:
        print(
            "error: DATABASE_URL is not set: it names the PostgreSQL ledger to copy into",
            file=sys.stderr,
        )
        return 2
    path = settings.database_path
    if not path.is_file():
        print(
            f"error: DATABASE_PATH {path} does not exist: there is nothing to copy",
            file=sys.stderr,
        )
        return 1
    from .storage.copying import CopyClash, copy_ledger  # the driver only when asked
    from .storage.postgres import PostgresLedger

    source = SqliteLedger(path, exclusive=True)  # no bot may drive these jobs meanwhile
    target = PostgresLedger(url)
    try:
        await source.open()
    except LedgerLocked:
        print(
            f"error: a bot is running on DATABASE_PATH {path}; stop it before copying",
            file=sys.stderr,
        )
        return 1
    except LedgerUnusable as exc:
        print(f"error: DATABASE_PATH {path} {exc}", file=sys.stderr)
        return 1
    try:
        await target.open()
        report = await copy_ledger(source, target)
    except (LedgerUnusable, CopyClash) as exc:
        print(f"error: {settings.ledger_where} {exc}", file=sys.stderr)
        return 1
    except LedgerError as exc:
        print(f"error: {settings.ledger_where} {exc} (nothing was copied)", file=sys.stderr)
        return 1
    finally:
        await target.close()
        await source.close()
    print(
        f"ok: copied {report.jobs_copied} unfinished jobs, {report.payments_copied}"
        f" payments and {report.users_copied} users' language and options"
        f" from DATABASE_PATH {path} to {settings.ledger_where}"
        f" ({report.jobs_present} jobs and {report.payments_present} payments were there"
        " already)"
    )
    return 0
