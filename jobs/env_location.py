"""Where the environment marimo and its kernels run from lives: local disk, or the state volume.

Quix's state volume is shared between replicas, so it is a network filesystem on which every
file operation is a round trip: a venv there makes every start and every kernel's imports
slower (bench/RESULTS.md, "environment on fast disk"). So when the state folder is such a
volume, the venv lives on the container's own disk (``--env-dir``) and the volume keeps a
snapshot of it (jobs/snapshot.py). When the state folder is itself on local disk (or is a
temporary fallback), copying would only cost: the venv stays where it is, as before.

Invariants:
- the decision is taken once per start, before anything is built, and reported with its
  reason (``/-/status``'s ``environment``); it never raises: any doubt about the local disk
  (not writable, too small for the environment's known size) keeps the venv on the volume, with
  a warning that says why;
- only reads ``/proc/self/mountinfo`` and stats, and imports nothing beyond ``os`` at module
  level: the default folder is resolved before marimo is spawned (the warm start's path).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal, NamedTuple

EnvLocation = Literal["auto", "local", "volume"]
ENV_LOCATIONS: tuple[str, ...] = ("auto", "local", "volume")

LOCAL_FILESYSTEMS = frozenset(
    {
        "ext2",
        "ext3",
        "ext4",
        "xfs",
        "btrfs",
        "bcachefs",
        "f2fs",
        "jfs",
        "zfs",
        "tmpfs",
        "ramfs",
        "overlay",
        "vfat",
    }
)
"""Filesystems on a disk of the machine itself: a venv on them runs at local speed. Anything
else (nfs, nfs4, cifs, smb3, fuse.*, 9p, ceph, virtiofs, …) or unknown is taken for a network
volume: copying a venv that was local after all costs a little at start, running one from a
network volume costs at every import."""

HEADROOM = 256 * 1024 * 1024
"""Free bytes kept beyond the environment's size on local disk (installs grow it)."""


def default_env_dir(state_dir: Path) -> Path:
    """``<temp dir>/marimo-orchestrator-env-<hash of the state folder's path>``: stable across
    restarts and container replacements (a restored venv must land on the path it was taken
    from), and distinct for two state folders on one machine. The temp dir is ``$TMPDIR``
    (``$TEMP``, ``$TMP``) or ``/tmp``, as ``tempfile`` picks it, without importing it."""
    temp = next(
        (os.environ[name] for name in ("TMPDIR", "TEMP", "TMP") if os.environ.get(name)), "/tmp"
    )
    return Path(temp) / f"marimo-orchestrator-env-{_fnv1a(str(state_dir)):016x}"


def _fnv1a(text: str) -> int:
    """64-bit FNV-1a: a stable name, not a secret (hashlib is not loaded before the spawn)."""
    value = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


class Placement(NamedTuple):
    """``local``: the folder the environment runs from, or ``None`` for the state volume."""

    local: Path | None
    reason: str
    warning: str | None = None


def filesystem_type(path: Path) -> str:
    """The type of the filesystem ``path`` is on (``mountinfo``'s longest matching mount
    point), or ``""`` when it cannot be told."""
    try:
        target = os.path.realpath(path)
        best, kind = "", ""
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields, _, rest = line.partition(" - ")
                parts = fields.split()
                if len(parts) < 5 or not rest:
                    continue
                mount = parts[4].replace("\\040", " ")
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, rest.split()[0]
        return kind
    except OSError:
        return ""


def _device(path: Path) -> int | None:
    """``st_dev`` of ``path`` or of its nearest existing parent."""
    for candidate in (path, *path.parents):
        with contextlib.suppress(OSError):
            return os.stat(candidate).st_dev
    return None


def is_network_volume(state_dir: Path, env_dir: Path) -> tuple[bool, str]:
    """Whether running the venv from ``state_dir`` would be slower than from ``env_dir``, and
    the filesystem type that says so."""
    kind = filesystem_type(state_dir) or "an unknown filesystem"
    if _device(state_dir) == _device(env_dir):
        return False, kind
    return kind not in LOCAL_FILESYSTEMS, kind


def probably_local(choice: EnvLocation, state_dir: Path, env_dir: Path) -> Path | None:
    """What :func:`decide` most likely says, from the filesystem types alone (no writes): the
    warm start's guess, checked by the pipeline before it serves that marimo."""
    if choice == "local" or (choice == "auto" and is_network_volume(state_dir, env_dir)[0]):
        return env_dir
    return None


def decide(
    choice: EnvLocation,
    state_dir: Path,
    env_dir: Path,
    persistent: bool,
    needed_bytes: int | None = None,
) -> Placement:
    """Where this start runs the environment from (see the module docstring).

    ``needed_bytes``: the environment's size when known (a snapshot's unpacked size), checked
    against the local disk's free space."""
    if not persistent:
        return Placement(None, f"in the temporary state folder {state_dir}")
    if choice == "volume":
        return Placement(None, f"on the state volume {state_dir} (--env-location volume)")
    if choice == "auto":
        network, kind = is_network_volume(state_dir, env_dir)
        if not network:
            return Placement(None, f"on the state volume {state_dir} ({kind}, a local disk)")
        why = f"the state volume is {kind}, a network filesystem"
    else:
        why = "--env-location local"
    import shutil
    import tempfile

    try:
        env_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=env_dir, prefix=".writable-")  # noqa: SIM115
        probe.close()
    except OSError as error:
        return Placement(
            None,
            f"on the state volume {state_dir}",
            f"cannot write the local environment folder {env_dir} "
            f"({error.strerror or error}): Python packages run from the state volume, slower",
        )
    if needed_bytes is not None:
        free = shutil.disk_usage(env_dir).free
        if free < needed_bytes + HEADROOM:
            return Placement(
                None,
                f"on the state volume {state_dir}",
                f"local disk too small: {env_dir} has {_size(free)} free, the Python packages "
                f"need {_size(needed_bytes + HEADROOM)}; they run from the state volume, slower",
            )
    return Placement(env_dir, f"on local disk at {env_dir} ({why}); a snapshot is kept there")


def _size(count: int) -> str:
    return f"{count / 1_000_000:.0f} MB"
