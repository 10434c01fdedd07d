"""Leases: which running instance drives a job (or works a refund) right now.

Several bot instances may share one ledger (PostgreSQL). Each job is driven by one live
instance at a time: the instance *claims* it (the ledger row names it as ``owner`` until
``lease_until``), *renews* all its leases in one statement every
:data:`RENEW_SECONDS`, and *releases* them at a clean stop. An instance that dies stops
renewing; once its leases lapse (:data:`LEASE_SECONDS`) any other instance claims its
jobs and carries on from the ledger, as a restart would.

A lease alone cannot stop an instance that was paused past it (SIGSTOP, a stalled VM)
from acting on what it read before the pause. So every paid step is *fenced*: the
statement that records it (SUBMITTING with the seed, the request_id, DELIVERED, a job's
end with its refund due, a refund confirmed) only writes while the row still names this
instance with a lease not yet lapsed, and extends the lease as it writes. A refused
write raises :class:`LeaseLost`, and the instance stops driving that job: it sends no
second submit and no second video. Right before a video (or an outcome) goes out, the
lease is checked and extended the same way (``Ledger.hold_job``).

What already happened outside is the exception (:func:`record_done`): a submit Segmind
accepted, a video or a message Telegram took, a refund Telegram made. Its record is
fenced too, but when the lease lapsed meanwhile it is written all the same, guarded by
the row's state alone, before LeaseLost: refused, it would leave the job looking
undone, and its next driver would do it again (a second video). Two instances can still
both act in the moment between a lease check and the outside world (a pause right
after ``hold_job``); nothing can fence Telegram itself.

With SQLite only one process may open the ledger (an OS lock), so leases there are
never contested; they run through the same code all the same.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "CLAIM_BATCH",
    "LEASE_SECONDS",
    "RENEW_SECONDS",
    "TAKEOVER_SCAN_SECONDS",
    "Lease",
    "LeaseLost",
    "instance_id",
    "record_done",
]

T = TypeVar("T")

#: How long a claim holds without renewal: a dead instance's jobs wait this long.
LEASE_SECONDS = 30.0
#: Every lease of an instance is renewed this often (one statement): two renewals may
#: fail or be late before a lease lapses.
RENEW_SECONDS = 10.0
#: Jobs nobody holds (their instance died, or a handler's start was never driven) are
#: looked for this often: a dead instance's jobs are taken over 30-35 s after its last
#: renewal.
TAKEOVER_SCAN_SECONDS = 5.0
#: At most this many jobs are claimed by one statement (the scan repeats while full).
CLAIM_BATCH = 200


@dataclass(frozen=True)
class Lease:
    """What an instance claims with: its id, and how long a claim or renewal lasts."""

    owner: str
    seconds: float = LEASE_SECONDS

    def until(self, now: float) -> float:
        """When a claim or renewal made at ``now`` lapses."""
        return now + self.seconds


class LeaseLost(Exception):
    """A fenced write found that this instance no longer holds the row's lease: another
    instance has taken it over (or it lapsed). Nothing was written; stop driving it."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: the lease is held by another instance, or lapsed")
        self.what = what


def instance_id() -> str:
    """This process's id as an owner of leases: host, pid and a random part (a pid is
    reused across restarts and containers; the random part never is)."""
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


async def record_done(write: Callable[[Lease | None], Awaitable[T]], lease: Lease) -> T:
    """Record something that already happened outside: ``write(lease)``, fenced; when
    the lease was lost meanwhile, ``write(None)`` (guarded by the row's state alone) and
    then LeaseLost, so the caller stops driving the row (see the module's docstring)."""
    try:
        return await write(lease)
    except LeaseLost:
        await write(None)
        raise
