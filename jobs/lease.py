"""A lease on a shared volume that needs no ``flock``: who may build the environment.

Network filesystems do not all honour ``flock`` (NFSv2/v3 without the lock manager, some SMB
mounts), and a lock that vanishes with a client's crash cannot be told from one that was never
taken. A lease is a file instead:

- **taken** by writing the holder's record to a private file and ``link(2)``-ing it to the lease
  name: ``link`` fails with ``EEXIST`` when the name exists, atomically, on local filesystems
  and on NFS alike (the open(2) manual's advice for exclusive creation over NFS); the record
  is complete before the name exists, so nobody ever reads half a lease;
- **kept** by a heartbeat: the holder rewrites the record atomically
  (:func:`jobs.atomic.write_atomically`) with a higher ``beat`` every ``ttl / 4`` seconds, first
  checking that the lease is still its own;
- **expired** when the record a waiter reads has not changed for ``ttl`` seconds of *the
  waiter's own* monotonic clock: no clock of two machines is ever compared, so clock skew
  between replicas cannot expire a live lease;
- **broken** by exactly one waiter per stale record: the breaker ``link``s a marker named after
  that record's digest (only one link succeeds), re-reads the lease, and removes it only when it
  still holds the very record seen stale; then it competes for the free name like anyone.

Invariants: at most one live holder per lease name (a holder that was paused for longer than
``ttl`` learns at its next heartbeat that it lost the lease, :meth:`Lease.beat` returns False);
a holder killed by SIGKILL blocks the others for at most ``ttl`` plus one poll.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from pathlib import Path

from jobs.atomic import link_exclusively, write_atomically, write_private


def holder_id() -> str:
    """host:pid:random, unique to one process."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(6).hex()}"


def read_record(path: Path) -> bytes | None:
    """The lease's record as stored, ``None`` when nobody holds it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def describe(record: bytes | None) -> str:
    """Who holds the lease, for messages ("host pid 12"); empty when unknown."""
    if not record:
        return ""
    try:
        data = json.loads(record)
        return f"{data['host']} pid {data['pid']}"
    except (ValueError, KeyError, TypeError):
        return ""


class Lease:
    """A lease this process holds."""

    __slots__ = ("_beat", "holder", "path", "ttl")

    def __init__(self, path: Path, holder: str, ttl: float) -> None:
        self.path = path
        self.holder = holder
        self.ttl = ttl
        self._beat = 0

    def __repr__(self) -> str:
        return f"Lease({str(self.path)!r}, holder={self.holder!r})"

    def record(self) -> bytes:
        host, pid, _ = self.holder.split(":")
        return json.dumps(
            {"holder": self.holder, "host": host, "pid": int(pid), "beat": self._beat}
        ).encode()

    def _ours(self) -> bool:
        current = read_record(self.path)
        if current is None:
            return False
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            return bool(json.loads(current).get("holder") == self.holder)
        return False

    def beat(self) -> bool:
        """Renew the lease; False (and nothing written) when it is no longer ours."""
        if not self._ours():
            return False
        self._beat += 1
        write_atomically(self.path, self.record())
        return True

    def release(self) -> None:
        """Give the lease up, if it is still ours."""
        if self._ours():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


class LeaseWaiter:
    """Tries to take one lease, remembering what it saw so a dead holder's lease expires."""

    __slots__ = ("_seen", "_seen_at", "path", "ttl")

    def __init__(self, path: Path, ttl: float) -> None:
        self.path = path
        self.ttl = ttl
        self._seen: bytes | None = None
        self._seen_at = 0.0

    def __repr__(self) -> str:
        return f"LeaseWaiter({str(self.path)!r}, ttl={self.ttl})"

    def holder(self) -> str:
        return describe(read_record(self.path))

    def try_take(self) -> Lease | None:
        """The lease when it was free (or its holder's heartbeat stopped), else ``None``."""
        lease = Lease(self.path, holder_id(), self.ttl)
        private = write_private(self.path, lease.record())
        try:
            if link_exclusively(private, self.path):
                return lease
            current = read_record(self.path)
            now = time.monotonic()
            if current is None or current != self._seen:
                self._seen, self._seen_at = current, now
                return None
            if now - self._seen_at < self.ttl:
                return None
            self._break(current, private)
            if link_exclusively(private, self.path):
                return lease
            return None
        finally:
            with contextlib.suppress(FileNotFoundError):
                private.unlink()

    def _break(self, stale: bytes, private: Path) -> None:
        digest = hashlib.sha256(stale).hexdigest()[:16]
        marker = self.path.with_name(f".{self.path.name}.break-{digest}")
        if not link_exclusively(private, marker):
            return  # another waiter breaks this very record
        try:
            if read_record(self.path) == stale:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        finally:
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()
