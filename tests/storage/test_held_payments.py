"""The side file that keeps held payments (bot.storage.held): durable, deduplicated, and
written to the spare folder when the ledger's own folder cannot take it."""

from __future__ import annotations

from pathlib import Path

from bot.core.payments import NewPayment
from bot.storage.held import HeldPayments


def payment(n: int) -> NewPayment:
    return NewPayment(
        charge_id=f"charge-{n}",
        provider_charge_id="",
        user_id=100 + n,
        chat_id=100 + n,
        payload=f"warmth:{n}:1",
        amount=50,
    )


def held(tmp_path: Path) -> HeldPayments:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "spare").mkdir(exist_ok=True)
    return HeldPayments(tmp_path / "data" / "bot.sqlite3", spare_folder=tmp_path / "spare")


def test_held_payments_come_back_once_each_in_order_and_clear_removes_them(tmp_path):
    side = held(tmp_path)
    assert side.load() == []
    for n in (1, 2, 1):
        assert side.add(payment(n)) == tmp_path / "data" / "bot.sqlite3.held-payments"
    # Another process (the next start) reads what this one wrote.
    assert held(tmp_path).load() == [payment(1), payment(2)]
    side.clear()
    assert held(tmp_path).load() == []
    assert not any(path.exists() for path in side.paths)


def test_a_folder_that_cannot_take_it_sends_it_to_the_spare_folder(tmp_path):
    side = held(tmp_path)
    # The ledger's folder is gone (or full, or read-only): any OSError counts.
    (tmp_path / "data").rmdir()
    where = side.add(payment(3))
    assert where is not None
    assert where.parent == tmp_path / "spare"
    assert held(tmp_path).load() == [payment(3)]


def test_two_ledgers_never_share_a_spare_file(tmp_path):
    one = HeldPayments(tmp_path / "a.sqlite3", spare_folder=tmp_path)
    other = HeldPayments(tmp_path / "b.sqlite3", spare_folder=tmp_path)
    assert one.paths[1] != other.paths[1]


def test_no_file_at_all_is_reported_and_nothing_raises(tmp_path):
    side = HeldPayments(tmp_path / "gone" / "bot.sqlite3", spare_folder=tmp_path / "gone too")
    assert side.add(payment(4)) is None
    assert side.load() == []


def test_a_line_cut_short_is_skipped_and_the_rest_is_read(tmp_path):
    side = held(tmp_path)
    side.add(payment(5))
    with side.paths[0].open("ab") as file:
        file.write(b'{"amount": 50, "charge_id": "charge-')  # a crash mid-write
    # The next process's payment starts a line of its own, not glued onto the cut one.
    side.add(payment(6))
    assert held(tmp_path).load() == [payment(5), payment(6)]
