"""Compressed copies of marimo's assets, made once per test run and handed to later tests.

Every browser test starts on a new state volume, so its orchestrator would compress marimo's
bundles again (brotli 11 and gzip 9, about 8 CPU seconds a test, proxy/asset_encoder.py): by far
the largest cost of a browser test that is not about compression. A test that uses the pool
starts on a volume that has served marimo before: the copies earlier tests of the same run made
are linked into its ``cache/marimo-assets`` (jobs/layout.py) before the orchestrator starts, and
the ones it made are linked back into the pool at its teardown.

Invariants: the pool only holds files the orchestrator itself wrote (whole, by its atomic
writer) under names it checks at start (the digest of the content is in the name, so a file
that does not match is removed by the store, never served); files are hard links, written once
and never changed in place (copied and renamed into place across filesystems), so tests (and
pytest-xdist workers, which share one pool folder) never see a file being written. Compression itself is tested on cold volumes
(tests/test_proxy_precompressed.py, and browser tests marked ``cold_assets``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

ASSETS = Path("cache") / "marimo-assets"
"""Where a state volume keeps the copies (``StateLayout.asset_cache``)."""


class AssetPool:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def seed(self, state_dir: Path) -> None:
        """Gives the volume at ``state_dir`` every copy the pool holds (it must exist: a test
        that makes its volume appear later starts cold)."""
        if not state_dir.is_dir():
            return
        target = state_dir / ASSETS
        target.mkdir(parents=True, exist_ok=True)
        _link_files(self.folder, target)

    def harvest(self, state_dir: Path) -> None:
        """Keeps the copies the volume at ``state_dir`` holds for the tests that follow."""
        source = state_dir / ASSETS
        if source.is_dir():
            _link_files(source, self.folder)


def _link_files(source: Path, target: Path) -> None:
    """Links each whole file of ``source`` (not its ``incoming/`` folder) into ``target``; across
    filesystems (a test's own volume mount) it is copied to a temporary name and renamed into
    place, so a reader never sees it half written (one name is one content: a rename over an
    existing file changes nothing it could read)."""
    for entry in os.scandir(source):
        if not entry.is_file(follow_symlinks=False) or (target / entry.name).exists():
            continue
        try:
            os.link(entry.path, target / entry.name)
        except (FileExistsError, FileNotFoundError):
            continue
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP):
                raise
            partial = target / f".{entry.name}.{os.getpid()}.part"
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(entry.path, partial)
                os.replace(partial, target / entry.name)
