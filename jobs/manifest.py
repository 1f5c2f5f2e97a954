"""The manifest: what the venv is and what was last installed into it *successfully*.

Invariants: the file is replaced atomically (write to a temporary file, fsync, rename, fsync the
directory), so a reader sees the old or the new content, never a mix. ``install`` is recorded only
after the installer exited 0, and cleared before an install starts, so a crash mid-install is
never mistaken for success. A missing or unreadable manifest means "nothing is known": the jobs
then verify or rebuild, they never trust it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class VenvRecord:
    python_version: str
    base_executable: str
    created_at: float


@dataclass
class InstallRecord:
    fingerprint: str
    installer: str
    finished_at: float
    duration: float


@dataclass
class Manifest:
    venv: VenvRecord | None = None
    install: InstallRecord | None = None
    pending_install: str | None = None
    """Set while an install runs: still set at the next start means it was interrupted."""
    history: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            venv = VenvRecord(**raw["venv"]) if raw.get("venv") else None
            install = InstallRecord(**raw["install"]) if raw.get("install") else None
            history = raw.get("history") or {}
            pending = raw.get("pending_install")
            return cls(venv=venv, install=install, pending_install=pending, history=dict(history))
        except (OSError, ValueError, TypeError, KeyError):
            return cls()

    def save(self, path: Path) -> None:
        write_atomically(path, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` so that a crash at any moment leaves old or new content."""
    import tempfile  # not on the warm start's path (the manifest is only read there)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
