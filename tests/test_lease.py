"""The build lease on a real folder (jobs/lease.py): exclusive, kept by its heartbeat, taken
over once the heartbeat stops, broken by one waiter only; no flock anywhere."""

from __future__ import annotations

import time
from pathlib import Path

from jobs.lease import Lease, LeaseWaiter


def take_within(waiter: LeaseWaiter, seconds: float) -> Lease | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (lease := waiter.try_take()) is not None:
            return lease
        time.sleep(0.02)
    return None


def test_a_held_lease_is_exclusive_while_its_heartbeat_runs(tmp_path: Path) -> None:
    path = tmp_path / "build.lease"
    holder = LeaseWaiter(path, ttl=0.5).try_take()
    assert holder is not None
    waiter = LeaseWaiter(path, ttl=0.5)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert holder.beat(), "the holder keeps its lease"
        assert waiter.try_take() is None, "a live lease is never taken over"
        time.sleep(0.05)
    assert waiter.holder().endswith(f"pid {holder.holder.split(':')[1]}")
    holder.release()
    assert not path.exists()
    assert take_within(waiter, 1.0) is not None, "a released lease is free at once"


def test_a_silent_holder_loses_the_lease_to_exactly_one_waiter(tmp_path: Path) -> None:
    path = tmp_path / "build.lease"
    silent = LeaseWaiter(path, ttl=0.3).try_take()
    assert silent is not None
    first, second = LeaseWaiter(path, ttl=0.3), LeaseWaiter(path, ttl=0.3)
    assert first.try_take() is None and second.try_take() is None  # both saw the record
    started = time.monotonic()
    winner = take_within(first, 5.0)
    assert winner is not None
    assert time.monotonic() - started >= 0.25, "not before the heartbeat was silent for ttl"
    assert second.try_take() is None, "the new holder's lease is not stale"
    assert not silent.beat(), "the old holder learns it lost the lease"
    assert winner.beat()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.lease"], "no leftovers"
