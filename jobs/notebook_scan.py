"""Which files of the notebook folder are synced, and a cheap way to notice their changes.

Invariants: the walk never descends into an excluded folder (the state directory, wherever it
is), a virtual environment (a folder holding ``pyvenv.cfg``), a hidden folder or a cache, and
never follows a symbolic link; a file is read and hashed only when its stat key (mtime, size,
inode) differs from the previous walk's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

SYNCED_SUFFIXES = (".py", ".md", ".qmd")
SYNCED_NAMES = ("requirements.txt",)
SKIPPED_DIRS = frozenset({"__pycache__", "__marimo__", "node_modules", "site-packages"})
MAX_BYTES = 5 * 1024 * 1024


def _synced_name(name: str) -> bool:
    return name.endswith(SYNCED_SUFFIXES) or name in SYNCED_NAMES


def read_notebook(path: Path) -> bytes:
    """The file's bytes, or a ``ValueError`` saying why it cannot be synced."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES // (1024 * 1024)} MB, not saved to Quix")
        data = path.read_bytes()
    except PermissionError:
        raise ValueError("cannot be read (permission denied), not saved to Quix") from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text, not saved to Quix") from None
    return data


class Scanner:
    """Walks the notebook folder; hashes a file only when its stat key changed."""

    def __init__(self, root: Path, excluded: Iterable[Path] = ()) -> None:
        self.root = Path(os.path.realpath(root))
        self.excluded = tuple(excluded)
        self._cache: dict[str, tuple[tuple[int, int, int], str | None, str | None]] = {}
        self.hashed = 0
        """Files read and hashed so far (for tests and the benchmark)."""

    def _skip_dirs(self) -> set[str]:
        return {os.path.realpath(path) for path in self.excluded}

    def scan(self) -> tuple[dict[str, str], dict[str, str]]:
        """(relative path → SHA-256 of synced files, relative path → why it cannot be synced)."""
        skip = self._skip_dirs()
        digests: dict[str, str] = {}
        errors: dict[str, str] = {}
        cache: dict[str, tuple[tuple[int, int, int], str | None, str | None]] = {}
        stack = [str(self.root)]
        prefix = len(str(self.root)) + 1
        while stack:
            directory = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            if directory != str(self.root) and any(e.name == "pyvenv.cfg" for e in entries):
                continue  # a virtual environment, wherever it is
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if name not in SKIPPED_DIRS and entry.path not in skip:
                            stack.append(entry.path)
                        continue
                    if not _synced_name(name) or not entry.is_file(follow_symlinks=False):
                        continue
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                relative = entry.path[prefix:]
                key = (info.st_mtime_ns, info.st_size, info.st_ino)
                known = self._cache.get(relative)
                if known is None or known[0] != key:
                    self.hashed += 1
                    try:
                        digest: str | None = hashlib.sha256(
                            read_notebook(Path(entry.path))
                        ).hexdigest()
                        error: str | None = None
                    except ValueError as problem:
                        digest, error = None, str(problem)
                    except OSError:
                        continue  # vanished while we looked
                    known = (key, digest, error)
                cache[relative] = known
                if known[1] is not None:
                    digests[relative] = known[1]
                elif known[2] is not None:
                    errors[relative] = known[2]
        self._cache = cache
        return digests, errors
