"""Is there memory for a second marimo beside the running one?

Run mode moves marimo to a new environment by starting the new marimo beside the old one and
switching to it once it answers (:meth:`jobs.marimo.MarimoSupervisor.switch`), so for a
moment both run. The new one is taken to need as much as the old one's whole process tree
uses now (its kernels included): a fresh marimo needs less at first, but the sessions that
reconnect to it grow it back. Both run side by side only when that much plus a margin is
available; otherwise marimo is stopped before the new one starts, as it always was.

"Available" is the smaller of what the machine has available (``MemAvailable``) and what the
container's memory limit (cgroup v2 ``memory.max``, or v1 ``memory.limit_in_bytes``) still
leaves: inside a container the machine's figure alone says nothing about the limit that the
kernel's OOM killer enforces.

Invariant: a figure that cannot be read counts as no room (fail closed: stopping first costs
a short outage, running out of memory costs both marimos).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

MIB = 1024 * 1024

_CGROUP_LIMITS = (
    (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
    (
        Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ),
)
_NO_LIMIT = 1 << 60
"""cgroup v1 says "no limit" with a huge number (a page-aligned ``LONG_MAX``)."""


def _cgroup_room() -> int | None:
    """What the container's memory limit still leaves, or None without a limit."""
    for limit_path, usage_path in _CGROUP_LIMITS:
        with contextlib.suppress(OSError, ValueError):
            limit_text = limit_path.read_text(encoding="ascii").strip()
            if limit_text == "max":
                return None
            limit = int(limit_text)
            if limit >= _NO_LIMIT:
                return None
            return max(0, limit - int(usage_path.read_text(encoding="ascii").strip()))
    return None


def available_memory() -> int:
    """Bytes a new process may still use here (see the module's docstring)."""
    import psutil

    available = int(psutil.virtual_memory().available)
    room = _cgroup_room()
    return available if room is None else min(available, room)


def tree_rss(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, in bytes."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def why_no_room(
    pid: int, margin: int, available: Callable[[], int] = available_memory
) -> str | None:
    """Why a second marimo as large as the tree of ``pid`` may not start beside it (in words
    for the log and the board), or None when there is room for it and ``margin`` more."""
    import psutil

    try:
        needed = tree_rss(pid)
        free = available()
    except (OSError, psutil.Error) as error:
        return f"the memory in use could not be measured ({error})"
    if free >= needed + margin:
        return None
    return (
        f"not enough memory to run the new marimo beside the running one: {free // MIB} MiB "
        f"available, {needed // MIB} MiB used by the running one, and {margin // MIB} MiB "
        "to keep free (--marimo-switch-margin)"
    )
