"""Run mode on a shared state folder: immutable environment generations.

A generation is a folder ``envs/<image key>-<id>/`` holding a venv, its manifest and ledger.
It is built once, by the replica holding the build lease, beside the generation in use; it is
published by replacing the pointer ``envs/current-<image key>`` atomically
(:func:`jobs.atomic.write_atomically`), and never changed after. The image key is a hash of the
interpreter and the image's packages, so during a rolling image update a replica of the old
image never follows a pointer written for the new one. A replica records that it runs from a
generation in ``<generation>/users/<holder>`` (refreshed while it does, removed when it moves
away or stops), and a generation that no pointer names and no live user records is removed.

Invariant: no file under a published generation is written after its publication, except its
``users/`` records; an environment in use is never modified.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from jobs.atomic import write_atomically
from jobs.layout import StateLayout

USERS = "users"


def image_key() -> str:
    """Short hash of what makes an environment fit this image: interpreter and packages."""
    from jobs.image import image_distributions
    from jobs.interpreter import Interpreter

    interpreter = Interpreter.current()
    material = [
        interpreter.version,
        interpreter.base_executable,
        sorted(image_distributions().items()),
    ]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:16]


def pointer(root: StateLayout, key: str) -> Path:
    return root.envs / f"current-{key}"


def current(root: StateLayout, key: str) -> StateLayout | None:
    """The generation published for ``key``, ``None`` when there is none (or it vanished)."""
    try:
        name = pointer(root, key).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not name or "/" in name or name.startswith("."):
        return None
    folder = root.envs / name
    return root._replace(env=folder) if folder.is_dir() else None


def create(root: StateLayout, key: str, holder: str) -> StateLayout:
    """A new, empty generation folder for ``key`` (unique name), already recorded as used by
    ``holder`` (its builder), so it is never collected while it is built."""
    folder = root.envs / f"{key}-{time.time_ns():x}-{os.urandom(3).hex()}"
    staging = root.envs / f".{folder.name}.tmp"
    (staging / USERS).mkdir(parents=True)
    (staging / USERS / holder).touch()
    staging.rename(folder)
    return root._replace(env=folder)


def publish(root: StateLayout, key: str, generation: StateLayout) -> None:
    """Make ``generation`` the current one for ``key``, atomically."""
    assert generation.env is not None
    write_atomically(pointer(root, key), generation.env.name + "\n")


def register(generation: StateLayout, holder: str) -> None:
    """Record (or refresh) that ``holder`` runs from ``generation``."""
    assert generation.env is not None
    record = generation.env / USERS / holder
    record.parent.mkdir(parents=True, exist_ok=True)
    record.touch()


def unregister(generation: StateLayout, holder: str) -> None:
    assert generation.env is not None
    with contextlib.suppress(FileNotFoundError):
        (generation.env / USERS / holder).unlink()


def collect(root: StateLayout, stale_after: float) -> list[Path]:
    """Remove generations that no pointer names and no user refreshed within ``stale_after``
    seconds (a replica killed without unregistering); returns what was removed."""
    if not root.envs.is_dir():
        return []
    named: set[str] = set()
    for entry in root.envs.glob("current-*"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            named.add(entry.read_text(encoding="utf-8").strip())
    now = time.time()
    removed = []
    for folder in root.envs.iterdir():
        if not folder.is_dir() or folder.name in named or folder.name.startswith("."):
            continue
        try:
            users = list((folder / USERS).iterdir())
            if any(now - user.stat().st_mtime < stale_after for user in users):
                continue
        except FileNotFoundError:
            pass
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
