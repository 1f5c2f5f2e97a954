"""Writing files so that no reader ever sees half of one: the one temp-file, fsync, rename (or
link), fsync-the-folder code path.

Every file the orchestrator rewrites in place of an older one (the manifest and ledger, the
environment-generation pointer, the lease's heartbeat, the ended-sessions list, the compressed
asset copies, …) goes through :func:`write_atomically`; a file created only when its name is free
(the lease, the session secret) is written whole with :func:`write_private` and put in place
with :func:`link_exclusively`; a file streamed to a temporary name (the environment's snapshot)
is put in place with :func:`replace_durably`. :mod:`proxy` is given :func:`write_atomically` by
the orchestrator (it never imports :mod:`jobs`).

Invariants: a reader (another process, or this one after a crash at any moment) sees the old
content or the new, never a mix nor an empty file; the new content is on disk (data and the
rename) before the call returns; a temporary file is private (``0600``) until it is complete
and only then given ``mode``, so a secret written with ``0o600`` is never readable by anyone
else, not even half-written; a failed write leaves ``path`` as it was and removes its temporary
file (a crash can leave ``.<name>.<random>.tmp`` beside it, never a partial ``path``).

This module is a leaf: it imports only the standard library, and no module of this project.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_private(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """``data`` in a new file beside ``path`` (a unique ``.<name>.<random>.tmp``), flushed to
    disk, then given ``mode``: the caller renames or links it into place and removes it. A
    failed write removes it and raises."""
    private = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(private)
        raise
    return private


def write_atomically(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` (UTF-8 when a string) so that a crash at any moment leaves
    old or new content; ``path``'s folder is created when missing."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    path.parent.mkdir(parents=True, exist_ok=True)
    private = write_private(path, data, mode)
    try:
        replace_durably(private, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(private)
        raise


def replace_durably(complete: Path, path: Path) -> None:
    """Rename the complete, fsynced file ``complete`` to ``path`` (same folder), and make the
    rename durable."""
    os.replace(complete, path)
    fsync_folder(path.parent)


def link_exclusively(source: Path, target: Path) -> bool:
    """Exclusive creation of ``target`` with ``source``'s content: True when this call made it,
    False when ``target`` exists (or the link failed). ``link(2)`` fails with ``EEXIST``
    atomically on local filesystems and on NFS alike (``O_EXCL`` is not honoured everywhere).

    On NFS a lost reply can make a successful ``link`` report an error; the link count of the
    private file then says what happened (the open(2) manual's recipe).
    """
    try:
        os.link(source, target)
    except FileExistsError:
        return False
    except OSError:
        try:
            return os.stat(source).st_nlink == 2
        except OSError:
            return False
    return True


def fsync_folder(folder: Path) -> None:
    """Make the entries of ``folder`` (a rename into it) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
