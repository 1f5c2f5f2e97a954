"""The ``state`` step: a writable state directory, locked for this orchestrator alone."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import IO

from jobs import scratch
from jobs.errors import PermanentError, TransientError
from jobs.layout import StateLayout


class StateLock:
    """An exclusive ``flock`` on the layout's lock file, held until :meth:`release` or exit.

    Invariant: at most one orchestrator mutates a state directory; the kernel drops the lock when
    the holder dies, even by SIGKILL, so a crash never leaves the directory locked.
    """

    __slots__ = ("handle",)

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle

    def __repr__(self) -> str:
        return f"StateLock({self.handle.name!r}, held={not self.handle.closed})"

    def release(self) -> None:
        if not self.handle.closed:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()


def check_directory(path: Path, create: bool) -> None:
    """Raise unless ``path`` is a directory we can write, creating it when ``create``."""
    if not path.exists():
        if not create:
            raise TransientError(f"waiting for the state directory {path} to appear")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PermanentError(
                f"cannot create the state directory {path}: {error.strerror}"
            ) from None
    if not path.is_dir():
        raise PermanentError(f"the state path {path} exists but is not a directory")
    import tempfile  # not on the warm start's path

    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-") as probe:
            probe.write(b"ok")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise PermanentError(
                f"the state directory {path} is not writable ({error.strerror})"
            ) from None
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise PermanentError(f"the state directory {path} is full ({error.strerror})") from None
        raise TransientError(f"cannot write to the state directory {path}: {error}") from None


def try_lock(layout: StateLayout) -> StateLock | None:
    """The lock, or ``None`` when another process holds it."""
    handle = open(layout.lock, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return StateLock(handle)


def lock_holder(layout: StateLayout) -> str:
    """The pid written by the current holder, for messages; empty when unknown."""
    try:
        return layout.lock.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def ephemeral_layout() -> StateLayout:
    """A private temporary state directory (0700), used when the real one cannot be had.

    Named after this process (jobs/scratch.py): the pipeline removes it at an orderly exit, and
    the next orchestrator's sweep removes it after a kill."""
    root = scratch.temp_root() / scratch.owned_name(scratch.FALLBACK_STATE)
    root.mkdir(mode=0o700)
    return StateLayout(root)
