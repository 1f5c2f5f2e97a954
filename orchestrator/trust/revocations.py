"""Ended sessions, remembered across restarts in ``<state>/sessions-revoked``.

One line per ended session: ``<session id> <unix time it would have expired>``. Lines are
appended (and fsynced) as sessions end; the file is rewritten without the expired ones when the
state folder is adopted (atomically, ``0600``: :func:`jobs.atomic.write_atomically`). Before a
persistent state folder is known, ended sessions are kept in memory and written once it is.

Invariant: a session id found here is refused whatever its cookie says; the file holds no
secret (ids are random and useless without the signing secret).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from jobs.atomic import write_atomically

log = logging.getLogger("orchestrator")

MAX_ENTRIES = 100_000


REFRESH_SECONDS = 1.0
"""How stale this process's view of the file may be: replicas sharing the state folder append
their logouts to it, and each one's become effective on the others within this time."""


class Revocations:
    def __init__(self) -> None:
        self._ended: dict[str, float] = {}
        self._path: Path | None = None
        self._read_up_to = 0
        self._refreshed_at = 0.0

    def __contains__(self, sid: str) -> bool:
        if self._path is not None and time.monotonic() - self._refreshed_at >= REFRESH_SECONDS:
            self._refresh(self._path)
        return sid in self._ended

    def _refresh(self, path: Path) -> None:
        """Read what other processes appended since the last look (one stat when nothing did)."""
        self._refreshed_at = time.monotonic()
        try:
            size = path.stat().st_size
            if size == self._read_up_to:
                return
            start = self._read_up_to if size > self._read_up_to else 0  # rewritten: read it all
            with open(path, "rb") as handle:
                handle.seek(start)
                data = handle.read(size - start)
        except OSError:
            return
        complete = data.rfind(b"\n") + 1  # a line being appended right now is read next time
        self._read_up_to = start + complete
        self._merge(data[:complete].decode("ascii", errors="replace").splitlines())

    def _merge(self, lines: list[str]) -> None:
        for line in lines:
            sid, _, expires = line.partition(" ")
            try:
                self._ended.setdefault(sid, float(expires))
            except ValueError:
                continue
        if len(self._ended) >= MAX_ENTRIES:
            self._prune()

    def add(self, sid: str, expires: float) -> bool:
        """Remember ``sid`` as ended; True when that is on the volume (appended and fsynced),
        or was already known. False: in this process only (no state folder yet, or the write
        failed); the caller decides what else makes it last (trust/secret_rotation.py)."""
        if sid in self._ended:
            return True
        if len(self._ended) >= MAX_ENTRIES:
            self._prune()
        self._ended[sid] = expires
        if self._path is None:
            return False
        try:
            with open(self._path, "a", encoding="ascii") as handle:
                handle.write(f"{sid} {int(expires) + 1}\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            log.warning("cannot record an ended session in %s: %s", self._path, error.strerror)
            return False
        return True

    def attach(self, path: Path) -> None:
        """Merge what ``path`` holds, then keep it up to date (rewritten without expired ids)."""
        try:
            lines = path.read_text(encoding="ascii", errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        except OSError as error:
            log.warning("cannot read %s: %s; logouts will not survive a restart", path, error)
            return
        self._merge(lines)
        self._prune()
        try:
            text = "".join(f"{sid} {int(exp) + 1}\n" for sid, exp in self._ended.items())
            write_atomically(path, text.encode("ascii"), mode=0o600)
            self._read_up_to = path.stat().st_size
        except OSError as error:
            log.warning("cannot keep %s: %s; logouts will not survive a restart", path, error)
            return
        self._path = path
        self._refreshed_at = time.monotonic()

    def _prune(self) -> None:
        now = time.time()
        self._ended = {sid: exp for sid, exp in self._ended.items() if exp > now}
