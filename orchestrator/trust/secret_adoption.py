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

from jobs.atomic import link_exclusively, write_private
from jobs.layout import StateLayout
from orchestrator.trust.signing import MIN_LENGTH, SigningSecret

log = logging.getLogger("orchestrator")


def adopt_or_persist(secret: SigningSecret, state: Path) -> None:
    """Adopt the secret kept in ``state`` (the orchestrator's own), or keep ``secret``'s there."""
    path = StateLayout(state).session_secret
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
    if len(existing) >= MIN_LENGTH:
        secret.replace(existing)
        return
    # Replicas sharing the folder may start together: the secret is written whole to a private
    # file first and linked into place, which fails when one is already there; the loser adopts
    # the winner's.
    private: Path | None = None
    try:
        private = write_private(path, secret.current(), mode=0o600)
        if not link_exclusively(private, path):
            with open(path, "rb") as handle:
                winner = handle.read()
            if len(winner) >= MIN_LENGTH:
                secret.replace(winner)
    except OSError as error:
        log.warning("cannot keep %s: %s; sessions will not survive a restart", path, error.strerror)
    finally:
        if private is not None:
            with contextlib.suppress(OSError):
                private.unlink()
