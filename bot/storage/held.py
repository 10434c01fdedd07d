"""Payments Telegram confirmed while the ledger could not record them, kept on disk.

Telegram sends a ``successful_payment`` once. If the ledger cannot take it (disk full,
read-only) the bot holds it in memory and records it when writes work again; a process
that died before then would leave the payment only at Telegram. So each held payment is
also appended, as one JSON line, to a small file beside the ledger and fsync'd before
the user is answered. The ledger's own disk may be the full one, so when that write
fails the same line goes to a file in the system's temp folder. The next start reads
both, records every payment (recording is idempotent: keyed on the charge id), and only
then removes the files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from ..core.payments import NewPayment

__all__ = ["HeldPayments"]

log = logging.getLogger(__name__)

SUFFIX = ".held-payments"


class HeldPayments:
    """An append-only file of held payments (beside the ledger, else in the temp folder)."""

    def __init__(self, database_path: Path, *, spare_folder: Path | None = None) -> None:
        # The spare file's name is unique to this ledger, so two bots (two ledgers) on
        # one machine never record each other's payments.
        digest = hashlib.sha256(str(database_path.resolve()).encode()).hexdigest()[:16]
        spare = Path(spare_folder or tempfile.gettempdir())
        self.paths = (
            database_path.with_name(database_path.name + SUFFIX),
            spare / f"warmth-bot-{digest}{SUFFIX}",
        )

    def add(self, payment: NewPayment) -> Path | None:
        """Append ``payment`` durably; where it went, or None if no file could take it."""
        line = (json.dumps(asdict(payment), sort_keys=True) + "\n").encode()
        for path in self.paths:
            try:
                _append_durably(path, line)
            except OSError as exc:
                log.warning("held payment %s not written to %s: %s", payment.charge_id, path, exc)
                continue
            return path
        log.error("held payment %s is in memory only: no file could take it", payment.charge_id)
        return None

    def load(self) -> list[NewPayment]:
        """Every payment in either file, once each, in the order they were held."""
        found: dict[str, NewPayment] = {}
        for path in self.paths:
            try:
                lines = path.read_bytes().splitlines()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.error("held payments in %s cannot be read: %s", path, exc)
                continue
            for line in lines:
                try:
                    payment = NewPayment(**json.loads(line))
                except (ValueError, TypeError):
                    # A line cut short by a full disk or a crash mid-write; the payment
                    # it was went to the other file, or is still in Telegram's list.
                    log.warning("skipped an unreadable held-payment line in %s", path)
                    continue
                found.setdefault(payment.charge_id, payment)
        return list(found.values())

    def clear(self) -> None:
        """Everything held is recorded in the ledger: the files are no longer needed."""
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _append_durably(path: Path, line: bytes) -> None:
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        start = os.fstat(fd).st_size
        if start and os.pread(fd, 1, start - 1) != b"\n":
            line = b"\n" + line  # a line cut short by a crash ends here, not in ours
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
            os.fsync(fd)
        except OSError:
            # No half line left behind for the next payment's line to be glued onto,
            # and no empty file of ours.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
                if created:
                    path.unlink()
            raise
    finally:
        os.close(fd)
    if created:  # the new name itself must survive a crash too
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
