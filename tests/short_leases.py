"""Test-only entry point: ``python -m tests.short_leases`` is ``python -m bot`` with leases
of ``WARMTH_TEST_LEASE_SECONDS`` seconds (renewed every third of that, scanned every
sixth), so that a multi-instance test can stall an instance past its lease for less
than its HTTP read timeout (30 s). Not a setting of the bot: the variable is read here
only, and nothing in ``bot/`` knows of it.
"""

from __future__ import annotations

import functools
import os
import sys

from bot.__main__ import main
from bot.core import leases, refunds, tracker

#: The environment variable this test-only entry point reads (seconds, > 0).
LEASE_ENV = "WARMTH_TEST_LEASE_SECONDS"


def shorten_leases(seconds: float) -> None:
    """Every lease this process makes lasts ``seconds``; renewals and scans keep pace."""
    # The modules bound these names at import: they are replaced where they are read.
    short = functools.partial(leases.Lease, seconds=seconds)
    for module, name, value in [
        (tracker, "Lease", short),
        (refunds, "Lease", short),
        (tracker, "RENEW_SECONDS", seconds / 3),
        (tracker, "TAKEOVER_SCAN_SECONDS", seconds / 6),
    ]:
        assert hasattr(module, name), name  # renamed in bot/: this entry point must follow
        setattr(module, name, value)


if __name__ == "__main__":
    shorten_leases(float(os.environ[LEASE_ENV]))
    sys.exit(main(sys.argv[1:]))
