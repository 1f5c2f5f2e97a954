"""Child processes we own: each in its own process group, gone when we are.

Invariant: every child is started through :func:`spawn`, so it leads a new session (its own
process group) and, on Linux, receives SIGKILL if the orchestrator dies without cleaning up
(``PR_SET_PDEATHSIG``). :func:`terminate_tree` ends a child and all its descendants.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
# Resolved once in the parent: the child, between fork and exec, only calls a function pointer
# (loading a library there could deadlock on a lock another thread held at fork time).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_children: set[asyncio.subprocess.Process] = set()


def live_children() -> list[asyncio.subprocess.Process]:
    """Children started by :func:`spawn` that have not been reaped yet."""
    for process in [p for p in _children if p.returncode is not None]:
        _children.discard(process)
    return list(_children)


async def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> asyncio.subprocess.Process:
    """Start ``argv`` with stdin from /dev/null and stdout+stderr merged into one pipe."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_die_with_parent,
        limit=1024 * 1024,
    )
    _children.add(process)
    return process


async def lines(process: asyncio.subprocess.Process) -> AsyncIterator[str]:
    """The child's output, line by line, decoded leniently, without line endings."""
    assert process.stdout is not None
    while True:
        raw = await process.stdout.readline()
        if not raw:
            return
        yield raw.decode("utf-8", "replace").rstrip("\r\n")


def terminate_tree(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM the process, its group and every descendant; SIGKILL what outlives ``timeout``."""
    import psutil

    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    for proc in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(family, timeout=timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout)


async def terminate_tree_async(pid: int, timeout: float = 5.0) -> None:
    """:func:`terminate_tree` without blocking the event loop."""
    await asyncio.get_running_loop().run_in_executor(None, terminate_tree, pid, timeout)
