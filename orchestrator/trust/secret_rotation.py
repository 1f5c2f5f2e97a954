"""A logout that could not be recorded still ends the session for good: the secret rotates.

A logout is remembered in ``<state>/sessions-revoked`` (orchestrator/trust/revocations.py) so the
cookie stays refused after a restart. When that record cannot be written (a full or failing
state volume), the session would come back with the next start. Instead, when the signing
secret in force is the one kept on the volume, it is rotated:

1. a new secret is written in the old one's place (atomically,
   :func:`jobs.atomic.write_atomically`);
2. when that fails too (no space for even 48 bytes), the old secret's file is deleted: removing
   a file needs no free space, and the next start, finding none, makes a new secret;
3. only when the old secret is off the volume does this process sign with the new one: every
   session ends at once (the logged-out one with them), here and after any restart.

When even the deletion fails (a read-only volume), nothing is rotated: the logout holds until
the process ends, and the caller says so. A secret that is not on the volume (this run's own,
before a state folder is known) dies with the process: the logout kept in memory is enough.

Invariant: :func:`rotate` answers ``"everyone"`` only when no file on the volume holds the old
secret any more; the new secret is never logged nor shown.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from pathlib import Path
from typing import Literal

from orchestrator.trust.signing import SigningSecret

log = logging.getLogger("orchestrator")

SignOut = Literal["here", "everyone", "until-restart"]
"""How far a logout went: this session only (recorded, or nothing to record it against);
every session (the secret rotated); this session until the process ends (nothing durable)."""


def _holds(path: Path, secret: bytes) -> bool:
    """Whether ``path`` holds ``secret`` (an unreadable file is taken to hold it: fail closed)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4096) == secret
    except FileNotFoundError:
        return False
    except OSError:
        return True


def rotate(secret: SigningSecret, path: Path) -> SignOut:
    """End every session for good because a logout could not be recorded (see the module)."""
    old = secret.current()
    if not _holds(path, old):
        return "here"  # the secret dies with this process; the logout is kept in memory
    new = secrets.token_bytes(48)
    from jobs.atomic import fsync_folder, write_atomically

    try:
        write_atomically(path, new, mode=0o600)
        kept = True
    except OSError as error:
        kept = False
        log.warning(
            "cannot write a new session secret to %s (%s): deleting the old one instead",
            path,
            error.strerror,
        )
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as unlink_error:
            if _holds(path, old):
                log.error(
                    "a logout could not be recorded and %s cannot be deleted (%s): that "
                    "session is refused until the orchestrator restarts, and accepted again "
                    "after",
                    path,
                    unlink_error.strerror,
                )
                return "until-restart"
        with contextlib.suppress(OSError):
            fsync_folder(path.parent)
    secret.replace(new)
    log.warning(
        "a logout could not be recorded on the state volume: every session was ended so that "
        "it stays ended after a restart (the session secret was %s); everyone signs in again",
        "replaced" if kept else "deleted, a new one is made at the next start",
    )
    return "everyone"
