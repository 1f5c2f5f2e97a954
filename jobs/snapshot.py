"""The environment's snapshot on the state volume: one archive to restore a venv from, fast.

The venv marimo runs from lives on the container's own disk (jobs/env_location.py); the state
volume, a network filesystem where every file operation is a round trip, keeps one compressed
archive of it (tar, zstandard) and a small record naming it. Restoring is then a few large
sequential reads on the volume, not thousands of small-file operations.

Invariants:
- the volume is never without a valid snapshot once it had one: a new archive is written under
  a temporary name, fsynced and renamed to its final, content-derived name; only then is the
  record (``env-snapshot.json``) replaced atomically to name it, and only after that are older
  archives removed. A crash at any moment leaves the old record naming its complete archive, or
  the new record naming its complete archive;
- the record carries the archive's SHA-256; a restore hashes every byte it reads and keeps
  nothing it extracted when the hash does not match (:class:`CorruptSnapshot`);
- a restore extracts into a staging folder beside the target and renames it into place (or
  exchanges it atomically with a skeleton standing there, see jobs/local_env.py), so a venv
  path never holds half an environment, and it is written by a crash-safe caller before the
  manifest that says it is complete;
- a venv names its own absolute path only in ``bin/``: the scripts' shebangs (and pip's
  ``exec`` line for long ones) and the ``activate`` scripts. A snapshot restored to another
  path (another replica's ``--env-dir``, a changed temp dir) has exactly those rewritten, and
  nothing else: a compiled program in ``bin/`` is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

from jobs.atomic import fsync_folder, write_atomically
from jobs.errors import JobError

FORMAT = 1
CHUNK = 1 << 20
"""Bytes per read and write on the volume: large, so a network filesystem sees few operations."""
ZSTD_LEVEL = 3
TAR_FILES_CHANGED = 1
"""GNU tar's exit status when a file changed while it was read: the venv is being changed."""
EXTRACT = ("nice", "-n", "10", "tar", "--extract", "--file=-", "--no-same-owner")
READ_CHUNK = 4 << 20
READERS = 8
"""Reads in flight while a snapshot is restored (see :func:`read_ahead`)."""


class CorruptSnapshot(JobError):
    """The archive is missing, unreadable or does not match its recorded checksum."""


class SnapshotRecord(NamedTuple):
    """What ``env-snapshot.json`` says. ``manifest`` is the venv's manifest as it was when the
    archive was taken: it travels with the archive, so a restored venv is described by the
    record of *its* content, never by a newer install that the archive does not hold."""

    archive: str
    sha256: str
    size: int
    unpacked: int
    files: int
    venv_path: str
    python_version: str
    manifest: dict[str, Any]
    made_at: float
    seconds: float
    distributions: tuple[str, ...] | None = None
    """Canonical names of the distributions in the venv's own site-packages (``None``: a record
    from before they were kept); see :func:`site_contents`."""
    path_files: tuple[str, ...] | None = None
    """The ``.pth`` files in the venv's own site-packages (ours, the image layer, excepted)."""

    def as_json(self) -> dict[str, Any]:
        values = self._asdict()
        for name in _OPTIONAL:
            if values[name] is not None:
                values[name] = list(values[name])
        return {"format": FORMAT, **values}


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "archive": str,
    "sha256": str,
    "size": int,
    "unpacked": int,
    "files": int,
    "venv_path": str,
    "python_version": str,
    "manifest": dict,
    "made_at": (int, float),
    "seconds": (int, float),
}
_OPTIONAL = ("distributions", "path_files")
"""Fields a record may lack (older records): lists of strings."""


def load(record_path: Path) -> SnapshotRecord | None:
    """The record on the volume, or ``None`` when missing or not understood (never raises)."""
    try:
        raw = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        return None
    values = {}
    for name, kind in _FIELDS.items():
        value = raw.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return None
        values[name] = value
    archive = str(values["archive"])
    if "/" in archive or archive.startswith("."):
        return None
    for name in _OPTIONAL:
        listed = raw.get(name)
        if listed is None:
            values[name] = None
        elif isinstance(listed, list) and all(isinstance(item, str) for item in listed):
            values[name] = tuple(listed)
        else:
            return None
    return SnapshotRecord(**values)  # type: ignore[arg-type]


def archive_path(archives: Path, record: SnapshotRecord) -> Path:
    return archives / record.archive


def site_contents(venv: Path, ignore_pth: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The canonical names of the distributions in ``venv``'s own site-packages, and its
    ``.pth`` files but ``ignore_pth``: what a process that imported from the image before the
    venv was complete could have seen otherwise (jobs/local_env.py, serving while restoring)."""
    from jobs.dist_metadata import canonical

    names: set[str] = set()
    path_files: set[str] = set()
    for site_packages in venv.glob("lib/python*/site-packages"):
        for entry in _entries(site_packages):
            if entry.name.endswith(".dist-info"):
                names.add(canonical(entry.name.removesuffix(".dist-info").rpartition("-")[0]))
            elif entry.name.endswith(".pth") and entry.name != ignore_pth:
                path_files.add(entry.name)
    return tuple(sorted(names)), tuple(sorted(path_files))


def measure(venv: Path) -> tuple[int, int]:
    """Bytes and files under ``venv`` (symlinks counted, not followed)."""
    total = files = 0
    for folder, _dirs, names in os.walk(venv):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
                files += 1
    return total, files


class _HashingWriter:
    """A file object that hashes and counts what goes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)


def take(
    venv: Path,
    manifest: dict[str, Any],
    python_version: str,
    record_path: Path,
    archives: Path,
    unchanged: Callable[[], bool] = lambda: True,
    abort: threading.Event | None = None,
    ignore_pth: str = "",
) -> SnapshotRecord | None:
    """Archive ``venv`` onto the volume and make the record name it (blocking: run it in a
    worker thread, at low priority: ``tar`` is niced).

    ``unchanged`` is asked once the archive is complete: when the venv changed while it was
    read (an install ran meanwhile), the archive is thrown away, the record is left as it was,
    and ``None`` is returned; the caller takes a new one later. Setting ``abort`` abandons the
    archive within one chunk (the orchestrator stops), leaving the record as it was.
    """
    import zstandard

    started = time.monotonic()
    unpacked, files = measure(venv)
    distributions, path_files = site_contents(venv, ignore_pth)
    archives.mkdir(parents=True, exist_ok=True)
    tmp = archives / f".incoming-{os.getpid()}-{threading.get_ident()}.tmp"
    tar = subprocess.Popen(
        ["nice", "-n", "10", "tar", "--create", "--file=-", f"--directory={venv}", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert tar.stdout is not None and tar.stderr is not None
    try:
        with open(tmp, "wb", buffering=CHUNK) as raw:
            hashing = _HashingWriter(raw)
            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
            with compressor.stream_writer(hashing, closefd=False) as writer:  # type: ignore[arg-type]
                while chunk := tar.stdout.read(CHUNK):
                    if abort is not None and abort.is_set():
                        raise JobError("the snapshot was abandoned: the orchestrator stops")
                    writer.write(chunk)
            raw.flush()
            os.fsync(raw.fileno())
        errors = tar.stderr.read().decode("utf-8", "replace").strip()
        code = tar.wait()
        if code not in (0, TAR_FILES_CHANGED):
            raise JobError(f"could not archive {venv}: tar: {errors[-300:]}")
        if code == TAR_FILES_CHANGED or not unchanged():
            tmp.unlink()
            return None
        sha = hashing.digest.hexdigest()
        name = f"env-{sha[:32]}.tar.zst"
        os.replace(tmp, archives / name)
        fsync_folder(archives)
        record = SnapshotRecord(
            archive=name,
            sha256=sha,
            size=hashing.size,
            unpacked=unpacked,
            files=files,
            venv_path=str(venv),
            python_version=python_version,
            manifest=manifest,
            made_at=time.time(),
            seconds=round(time.monotonic() - started, 3),
            distributions=distributions,
            path_files=path_files,
        )
        write_atomically(record_path, json.dumps(record.as_json(), indent=2) + "\n")
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        if tar.poll() is None:
            tar.kill()
            tar.wait()
        tar.stdout.close()
        tar.stderr.close()
    remove_others(archives, keep=record.archive)
    return record


def remove_others(archives: Path, keep: str | None) -> list[Path]:
    """Remove every archive and leftover temporary file but ``keep`` (after the record names
    it, or when a crash left them behind). Another process's incoming file is left alone."""
    removed = []
    for path in _entries(archives):
        if path.name == keep:
            continue
        if path.name.startswith(".incoming-") and _writer_alive(path.name):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def _writer_alive(name: str) -> bool:
    return _pid_alive(name.removeprefix(".incoming-").split("-", 1)[0])


def _pid_alive(pid: str) -> bool:
    """Whether the process of that id (as written in a file name) still runs."""
    from jobs.scratch import alive

    return pid.isdigit() and alive(int(pid))


def _entries(folder: Path) -> Iterator[Path]:
    try:
        yield from folder.iterdir()
    except OSError:
        return


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
        if leftover == staging or not _pid_alive(leftover.name.rpartition("-")[2]):
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


def keep_aside(record_path: Path, archives: Path, record: SnapshotRecord | None) -> Path | None:
    """Move a snapshot that failed its checksum out of the way (``env-snapshot.broken/``, the
    previous one replaced), so it is neither used again nor lost before someone looked at it;
    returns where it went."""
    aside = record_path.with_name(f"{record_path.stem}.broken")
    try:
        shutil.rmtree(aside, ignore_errors=True)  # only the last broken one is kept
        aside.mkdir(parents=True, exist_ok=True)
        if record is not None and (archive := archive_path(archives, record)).exists():
            os.replace(archive, aside / archive.name)
        if record_path.exists():
            os.replace(record_path, aside / record_path.name)
    except OSError:
        return None
    return aside
