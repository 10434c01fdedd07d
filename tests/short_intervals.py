"""Test-only entry point: ``python -m tests.short_intervals`` is ``python -m bot`` with
some of its long waits shortened, so that a subprocess test sees the same behaviour in
seconds instead of half a minute. Each wait is shortened only when its environment
variable is set; the variables are read here only, and nothing in ``bot/`` knows of them
(they are not settings of the bot):

- ``WARMTH_TEST_LEASE_SECONDS``: every lease (jobs, refunds, stored updates) lasts that
  long, renewed every third of it and scanned for every sixth. A multi-instance test
  can then stall an instance past its lease for less than its HTTP read timeout (30 s),
  and see a dead instance's work taken over within seconds.
- ``WARMTH_TEST_CONFLICT_STOP_SECONDS``: how long getUpdates must keep answering 409
  Conflict before the bot stops (the line it prints keeps the production wording).
- ``WARMTH_TEST_LEDGER_CHECK_SECONDS``: how often the bot checks that DATABASE_PATH
  still names the file it opened.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from bot.__main__ import main
from bot.core import leases, refunds, tracker
from bot.telegram import inbox, runtime

__all__ = ["CONFLICT_STOP_ENV", "LEASE_ENV", "LEDGER_CHECK_ENV", "MODULE", "shortened"]

#: What BotProcess runs instead of ``bot``.
MODULE = "tests.short_intervals"
#: The environment variables this entry point reads (seconds, > 0).
LEASE_ENV = "WARMTH_TEST_LEASE_SECONDS"
CONFLICT_STOP_ENV = "WARMTH_TEST_CONFLICT_STOP_SECONDS"
LEDGER_CHECK_ENV = "WARMTH_TEST_LEDGER_CHECK_SECONDS"
_REPO = Path(__file__).resolve().parents[1]


def shortened(
    *,
    lease: float | None = None,
    conflict_stop: float | None = None,
    ledger_check: float | None = None,
) -> dict[str, str]:
    """The environment that makes ``python -m tests.short_intervals`` shorten these."""
    env = {"PYTHONPATH": str(_REPO)}  # the child runs in a temporary folder
    for name, seconds in [
        (LEASE_ENV, lease),
        (CONFLICT_STOP_ENV, conflict_stop),
        (LEDGER_CHECK_ENV, ledger_check),
    ]:
        if seconds is not None:
            assert seconds > 0, name
            env[name] = str(seconds)
    return env


def _replace(module: object, name: str, value: object) -> None:
    # The modules bound these names at import: they are replaced where they are read.
    assert hasattr(module, name), name  # renamed in bot/: this entry point must follow
    setattr(module, name, value)


def shorten_leases(seconds: float) -> None:
    """Every lease this process makes lasts ``seconds``; renewals and scans keep pace."""
    short = functools.partial(leases.Lease, seconds=seconds)
    for module in (tracker, refunds, inbox):
        _replace(module, "Lease", short)
    for module in (tracker, inbox):
        _replace(module, "RENEW_SECONDS", seconds / 3)
        _replace(module, "TAKEOVER_SCAN_SECONDS", seconds / 6)


if __name__ == "__main__":
    if LEASE_ENV in os.environ:
        shorten_leases(float(os.environ[LEASE_ENV]))
    if CONFLICT_STOP_ENV in os.environ:
        _replace(runtime, "CONFLICT_STOP_SECONDS", float(os.environ[CONFLICT_STOP_ENV]))
    if LEDGER_CHECK_ENV in os.environ:
        _replace(runtime, "LEDGER_CHECK_SECONDS", float(os.environ[LEDGER_CHECK_ENV]))
    sys.exit(main(sys.argv[1:]))
