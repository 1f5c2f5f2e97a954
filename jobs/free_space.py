"""Waiting for disk space to come back after an install failed for lack of it.

A full disk is no fault of the requirements: once someone frees space (deletes files, grows the
volume) the same install succeeds. The pipeline (jobs/runner.py) waits here after such a
failure and then installs again, with no click; meanwhile the step's message says which button
does it at once (:data:`RECOVERY`).

Invariants:
- the wait watches every filesystem the install writes to (the venv's, the installer's cache,
  ``$TMPDIR``): one ``statvfs`` each every ``interval`` seconds, off the event loop;
- it ends only when one of them has gained at least ``max(MIN_GAIN, a quarter of what it had)``
  over its free space when the wait began (right after the failure): a few freed kilobytes do
  not rerun an installer, and a rerun that fails again begins a new wait from the new level,
  so the reruns are bounded by space actually freed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path

from jobs.blocking import off_loop

RECHECK_SECONDS = 5.0
MIN_GAIN = 16 * 1024 * 1024

RECOVERY = (
    "once space is freed the install runs again by itself (checked every "
    f'{RECHECK_SECONDS:.0f} s); to run it at once, use "Reinstall requirements" in the '
    'Environment panel ("Retry the install" on the loading page, or POST /-/restart '
    '{"scope": "install"})'
)
"""What the failed step's message says: how it recovers, and the button that does it now."""


def _existing(path: Path) -> Path | None:
    """``path`` or its nearest existing parent (a cache folder may not exist yet)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None


def free_by_filesystem(paths: Iterable[Path]) -> dict[int, tuple[Path, int]]:
    """Device → (the first of ``paths`` on it, bytes free to us there). Blocking."""
    found: dict[int, tuple[Path, int]] = {}
    for path in paths:
        existing = _existing(path)
        if existing is None:
            continue
        try:
            device = os.stat(existing).st_dev
            stats = os.statvfs(existing)
        except OSError:
            continue
        found.setdefault(device, (existing, stats.f_bavail * stats.f_frsize))
    return found


def _mb(amount: int) -> str:
    return f"{amount / 1e6:.1f} MB"


async def wait_for_space(paths: Iterable[Path], interval: float = RECHECK_SECONDS) -> str:
    """Return once space was freed on one of the filesystems holding ``paths``; says where
    and how much ("92.1 MB free on the disk holding /app/state, was 20.3 MB")."""
    watched = list(paths)
    before = await off_loop(free_by_filesystem, watched)
    while True:
        await asyncio.sleep(interval)  # the recheck period itself, not a wait for an event
        now = await off_loop(free_by_filesystem, watched)
        for device, (path, amount) in now.items():
            had = before.setdefault(device, (path, amount))[1]
            if amount - had >= max(MIN_GAIN, had // 4):
                return f"{_mb(amount)} free on the disk holding {path}, was {_mb(had)}"
