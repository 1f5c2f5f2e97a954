"""Replacing a file atomically: the one temp-file, fsync, rename, fsync-the-folder write.

Every file the orchestrator rewrites in place of an older one (the manifest and ledger, the
environment-generation pointer, the lease's heartbeat, the ended-sessions list, the compressed
asset copies, …) goes through :func:`write_atomically`; :mod:`proxy` is given it by the
orchestrator (it never imports :mod:`jobs`).

Invariants: a reader (another process, or this one after a crash at any moment) sees the old
content or the new, never a mix nor an empty file; the new content is on disk (data and the
rename) before the call returns; the temporary file is private (``0600``) until it is complete
and only then given ``mode``, so a secret written with ``0o600`` is never readable by anyone
else, not even half-written; a failed write leaves ``path`` as it was and removes its temporary
file (a crash can leave ``.<name>.<random>.tmp`` beside it, never a partial ``path``).

This module is a leaf: it imports only the standard library (``tempfile`` lazily: it is not
on the warm start's path, where files are only read), and no module of this project.
Exclusive creation (``link(2)``: the lease, the session secret) is not a replacement and is not
done here.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomically(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` (UTF-8 when a string) so that a crash at any moment leaves
    old or new content; ``path``'s folder is created when missing."""
    import tempfile  # not on the warm start's path (the manifest is only read there)

    data = text.encode("utf-8") if isinstance(text, str) else text
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Make the entries of ``folder`` (a rename into it) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
