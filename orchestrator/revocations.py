"""Ended sessions, remembered across restarts in ``<state>/sessions-revoked``.

One line per ended session: ``<session id> <unix time it would have expired>``. Lines are
appended (and fsynced) as sessions end; the file is rewritten without the expired ones when the
state folder is adopted. Before a persistent state folder is known, ended sessions are kept in
memory and written once it is.

Invariant: a session id found here is refused whatever its cookie says; the file holds no
secret (ids are random and useless without the signing secret).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger("orchestrator")

MAX_ENTRIES = 100_000


class Revocations:
    def __init__(self) -> None:
        self._ended: dict[str, float] = {}
        self._path: Path | None = None

    def __contains__(self, sid: str) -> bool:
        return sid in self._ended

    def add(self, sid: str, expires: float) -> None:
        if sid in self._ended:
            return
        if len(self._ended) >= MAX_ENTRIES:
            self._prune()
        self._ended[sid] = expires
        if self._path is not None:
            try:
                with open(self._path, "a", encoding="ascii") as handle:
                    handle.write(f"{sid} {int(expires) + 1}\n")
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as error:
                log.warning(
                    "cannot record an ended session in %s: %s; it stays ended until a restart",
                    self._path,
                    error.strerror,
                )

    def attach(self, path: Path) -> None:
        """Merge what ``path`` holds, then keep it up to date (rewritten without expired ids)."""
        try:
            lines = path.read_text(encoding="ascii", errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        except OSError as error:
            log.warning("cannot read %s: %s; logouts will not survive a restart", path, error)
            return
        for line in lines:
            sid, _, expires = line.partition(" ")
            try:
                self._ended.setdefault(sid, float(expires))
            except ValueError:
                continue
        self._prune()
        try:
            temporary = path.with_name(path.name + ".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.writelines(f"{sid} {int(exp) + 1}\n" for sid, exp in self._ended.items())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except OSError as error:
            log.warning("cannot keep %s: %s; logouts will not survive a restart", path, error)
            return
        self._path = path

    def _prune(self) -> None:
        now = time.time()
        self._ended = {sid: exp for sid, exp in self._ended.items() if exp > now}
