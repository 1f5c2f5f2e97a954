"""Restoring the environment's snapshot (jobs/snapshot.py) into place: the archive read from
the volume several chunks at a time, checked, extracted beside the target and put in place.

Invariants:
- a restore hashes every byte it reads and keeps nothing it extracted when the hash or the size
  does not match the record (:class:`jobs.snapshot.CorruptSnapshot`);
- a restore extracts into a staging folder beside the target and renames it into place (or
  exchanges it atomically with a skeleton standing there, see jobs/local_env.py), so a venv
  path never holds half an environment, and it is written by a crash-safe caller before the
  manifest that says it is complete; staging folders of killed restores are swept;
- a venv names its own absolute path only in ``bin/``: the scripts' shebangs (and pip's
  ``exec`` line for long ones) and the ``activate`` scripts. A snapshot restored to another
  path (another replica's ``--env-dir``, a changed temp dir) has exactly those rewritten, and
  nothing else: a compiled program in ``bin/`` is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from jobs.errors import JobError
from jobs.snapshot import CorruptSnapshot, SnapshotRecord, archive_path, pid_alive

EXTRACT = ("nice", "-n", "10", "tar", "--extract", "--file=-", "--no-same-owner")
READ_CHUNK = 4 << 20
READERS = 8
"""Reads in flight while a snapshot is restored (see :func:`read_ahead`)."""


def read_ahead(path: Path, size: int, parallel: int = READERS) -> Iterator[bytes]:
    """``path``'s bytes in order, read ``parallel`` chunks at a time (``pread`` from worker
    threads): on a network filesystem each read is a round trip, and several in flight keep the
    link busy instead of waiting for each in turn. Reads until the end of the file, whatever
    ``size`` says, so a file longer or shorter than recorded is noticed by the caller's count."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    def whole(offset: int) -> bytes:
        """``READ_CHUNK`` bytes from ``offset``, fewer only at the end of the file (a short
        read elsewhere is read on)."""
        parts, got = [], 0
        while got < READ_CHUNK:
            part = os.pread(fd, READ_CHUNK - got, offset + got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    fd = os.open(path, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(parallel, thread_name_prefix="snapshot-read") as pool:
            pending: deque[Future[bytes]] = deque()
            next_offset = 0
            while len(pending) < parallel and next_offset <= size:
                pending.append(pool.submit(whole, next_offset))
                next_offset += READ_CHUNK
            while pending:
                chunk = pending.popleft().result()
                if chunk:
                    yield chunk
                if len(chunk) < READ_CHUNK:  # the end of the file
                    for future in pending:
                        future.cancel()
                    return
                pending.append(pool.submit(whole, next_offset))
                next_offset += READ_CHUNK
    finally:
        os.close(fd)


def restore(record: SnapshotRecord, archives: Path, venv: Path) -> float:
    """Extract the snapshot into ``venv`` (which must not exist, or be a skeleton: see
    :func:`_put_in_place`), checking its checksum; returns the seconds it took. Blocking: run
    it in a worker thread.

    Raises :class:`CorruptSnapshot` when the archive is missing, unreadable or not what the
    record says; ``venv`` is left as it was then.
    """
    import zstandard

    started = time.monotonic()
    source = archive_path(archives, record)
    staging = venv.with_name(f".{venv.name}.restoring-{os.getpid()}")
    for leftover in venv.parent.glob(f".{venv.name}.restoring-*"):  # of killed processes
        if leftover == staging or not pid_alive(leftover.name.rpartition("-")[2]):
            shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir(parents=True)
    tar = subprocess.Popen(
        # Niced as the snapshot's tar is: marimo boots meanwhile (jobs/local_env.py) and the
        # editor's first answer matters more than the last file written.
        [*EXTRACT, f"--directory={staging}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert tar.stdin is not None and tar.stderr is not None
    digest = hashlib.sha256()
    read = 0
    problem: str | None = None
    try:
        try:
            decompressor = zstandard.ZstdDecompressor().decompressobj()
            for chunk in read_ahead(source, record.size):
                digest.update(chunk)
                read += len(chunk)
                tar.stdin.write(decompressor.decompress(chunk))
        except OSError as error:
            problem = f"cannot read {source}: {error.strerror or error}"
        except zstandard.ZstdError as error:
            problem = f"{source} is not a valid archive: {error}"
        with contextlib.suppress(BrokenPipeError):
            tar.stdin.close()
        errors = tar.stderr.read().decode("utf-8", "replace").strip()
        code = tar.wait()
        if problem is None and (read != record.size or digest.hexdigest() != record.sha256):
            problem = f"{source} does not match its checksum"
        if problem is None and code != 0:
            problem = f"{source} could not be extracted: tar: {errors[-300:]}"
        if problem is not None:
            raise CorruptSnapshot(problem)
        if record.venv_path != str(venv):
            relocate(staging, record.venv_path, str(venv))
        _put_in_place(staging, venv)
    finally:
        if tar.poll() is None:
            tar.kill()
            tar.wait()
        tar.stderr.close()
        shutil.rmtree(staging, ignore_errors=True)
    return time.monotonic() - started


SKELETON_MARK = ".orchestrator-skeleton"
"""A file in a venv that holds no packages yet (jobs/local_env.py): the one thing a restore may
replace at its target."""


def _put_in_place(staging: Path, venv: Path) -> None:
    """Rename ``staging`` to ``venv``. A skeleton standing there is exchanged with it in one
    atomic step (``renameat2(RENAME_EXCHANGE)``: a process running from the skeleton never sees
    the path missing) and ends up at ``staging``, which the caller removes; anything else at
    ``venv`` is an error."""
    if not venv.exists() and not venv.is_symlink():
        os.replace(staging, venv)
        return
    if not (venv / SKELETON_MARK).is_file():
        raise JobError(f"{venv} appeared while the snapshot was restored")
    if exchange(staging, venv):
        return
    # No atomic exchange on this filesystem: two renames, and a moment without a venv.
    aside = venv.with_name(f".{venv.name}.skeleton-{os.getpid()}")
    os.replace(venv, aside)
    os.replace(staging, venv)
    shutil.rmtree(aside, ignore_errors=True)


def exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``). False when
    the C library or the filesystem does not offer it; other failures raise ``OSError``."""
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def relocate(venv: Path, old: str, new: str) -> None:
    """Point the scripts of a venv moved from ``old`` to ``new`` at their new home (see the
    module docstring): text files in ``bin/`` that start with ``#!`` or are ``activate*``."""
    before, after = old.encode(), new.encode()
    for path in (venv / "bin").iterdir():
        if path.is_symlink() or not path.is_file():
            continue
        with open(path, "rb") as handle:
            head = handle.read(2)
        if head != b"#!" and not path.name.startswith("activate"):
            continue
        content = path.read_bytes()
        if before in content:
            mode = path.stat().st_mode
            path.write_bytes(content.replace(before, after))
            path.chmod(mode)
