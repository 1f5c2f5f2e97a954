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
- the record carries the archive's SHA-256, which a restore checks (jobs/snapshot_restore.py);
  a snapshot that fails it is kept aside (:func:`keep_aside`), never used again nor lost.

Restoring a snapshot into place is jobs/snapshot_restore.py's.
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
    return pid_alive(name.removeprefix(".incoming-").split("-", 1)[0])


def pid_alive(pid: str) -> bool:
    """Whether the process of that id (as written in a file name) still runs."""
    from jobs.scratch import alive

    return pid.isdigit() and alive(int(pid))


def _entries(folder: Path) -> Iterator[Path]:
    try:
        yield from folder.iterdir()
    except OSError:
        return


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
