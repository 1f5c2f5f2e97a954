"""A pool of the compressed copies of marimo's assets, shared by one run's browser tests.

The proxy compresses each content-hashed asset a browser asks for once (brotli 11 and gzip 9,
proxy/precompressed.py) and keeps the copy on the state volume, so a user's later visits, after
restarts and replacements, are served from it. Every browser test starts on a fresh volume, so
without this pool each one compressed the same editor assets again: about a fifth of a browser
test's CPU, on a machine where the suite is CPU-bound.

So a browser test's state volume starts with the copies earlier tests made, as a returning
user's volume does; the copies are still checked by the orchestrator itself at start (each file
re-hashed, a wrong one removed). What the compressing path does on a fresh volume is tested in
tests/test_proxy_precompressed.py, and a browser module that must see first visits on a fresh
volume sets ``FRESH_ASSET_COPIES = True``.

Invariants: only a file whose name carries its own content's digest enters the pool or a volume
(a test that damaged a copy cannot poison later ones); a file enters the pool by rename, whole
or not at all, so pytest-xdist workers sharing it never see half a file; a volume is seeded only
when it exists already and holds no copies (a test that waits for its volume to appear, or
brings its own copies, is left alone).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from jobs.layout import StateLayout
from proxy.precompressed import COPY_NAME


def asset_folder(state_dir: Path) -> Path:
    """Where the orchestrator keeps the copies on ``state_dir`` (state_layout.md)."""
    return StateLayout(state_dir).asset_cache


def _whole(path: Path) -> bool:
    match = COPY_NAME.fullmatch(path.name)
    if match is None or not path.is_file():
        return False
    with contextlib.suppress(OSError):
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16] == match["digest"]
    return False


class AssetCopies:
    """The pool in ``folder`` (created on first use)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def seed(self, state_dir: Path) -> None:
        """Copies the pool onto ``state_dir``'s volume (see the invariants for when not)."""
        target = asset_folder(state_dir)
        if not state_dir.is_dir() or target.exists() or not self.folder.is_dir():
            return
        copies = [path for path in self.folder.iterdir() if COPY_NAME.fullmatch(path.name)]
        if copies:
            target.mkdir(parents=True)
            for path in copies:
                shutil.copyfile(path, target / path.name)

    def harvest(self, state_dir: Path) -> None:
        """Adds the copies on ``state_dir``'s volume the pool lacks. A volume that cannot be
        read (a test's mount already gone) adds nothing and fails nothing: the pool only saves
        time."""
        with contextlib.suppress(OSError):
            source = asset_folder(state_dir)
            if not source.is_dir():
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            for path in source.iterdir():
                if (self.folder / path.name).exists() or not _whole(path):
                    continue
                part = self.folder / f".{path.name}.{os.getpid()}.part"
                shutil.copyfile(path, part)
                os.replace(part, self.folder / path.name)
