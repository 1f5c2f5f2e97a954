"""Keep the session secret on the state volume once the state directory is known.

At start the state directory may not exist yet (a volume mounting late, a first run), so the
app may begin with a secret for this run only. When the ``state`` step resolves a persistent
directory, that secret is written there (0600) if none exists, so the sessions already issued
stay valid and survive restarts; if one exists, it is adopted, when it is the orchestrator's own
(a file another user put there, marimo's for one, is replaced: it would let them forge sessions).
Replicas on one state folder end up with the same secret, so a cookie works on each of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import tornado.web

from jobs.layout import StateLayout

log = logging.getLogger("orchestrator")


def adopt_or_persist(app: tornado.web.Application, state: Path) -> None:
    path = StateLayout(state).session_secret
    current = app.settings["cookie_secret"]
    try:
        with open(path, "rb") as handle:
            owner = os.fstat(handle.fileno()).st_uid
            existing = handle.read() if owner == os.getuid() else b""
        if owner != os.getuid():
            log.warning("%s belongs to uid %d, not to the orchestrator: replaced", path, owner)
            path.unlink()
    except FileNotFoundError:
        existing = b""
    except OSError as error:
        log.warning("cannot read %s: %s; sessions will not survive a restart", path, error.strerror)
        return
    if len(existing) >= 32:
        app.settings["cookie_secret"] = existing
        return
    # Replicas sharing the folder may start together: the secret is written whole to a private
    # file first and linked into place, which fails when one is already there (link(2) is
    # atomic on NFS too, O_EXCL is not everywhere); the loser adopts the winner's.
    private = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(current)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(private, path)
        except FileExistsError:
            with open(path, "rb") as handle:
                winner = handle.read()
            if len(winner) >= 32:
                app.settings["cookie_secret"] = winner
    except OSError as error:
        log.warning("cannot keep %s: %s; sessions will not survive a restart", path, error.strerror)
    finally:
        with contextlib.suppress(OSError):
            private.unlink()
