"""Child processes we own: each in its own process group, gone when we are.

Invariant: every child is started through :func:`spawn`, so it leads a new session (its own
process group) and, on Linux, receives SIGKILL if the orchestrator dies without cleaning up
(``PR_SET_PDEATHSIG``). :func:`terminate_tree` ends a child and all its descendants;
:func:`kill_tree` does so at once, for a child that cannot be asked (a stopped or hung one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
from asyncio import Future
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from jobs.parent_death import die_with_parent
from jobs.settings import RunAs, as_user


class ChildProcess(Protocol):
    """What the jobs use of a child: an :class:`asyncio.subprocess.Process` or an
    :class:`AdoptedProcess`."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    @property
    def stdout(self) -> asyncio.StreamReader | None: ...

    async def wait(self) -> int: ...


_children: set[ChildProcess] = set()


def live_children() -> list[ChildProcess]:
    """Children started by :func:`spawn` that have not been reaped yet."""
    for process in [p for p in _children if p.returncode is not None]:
        _children.discard(process)
    return list(_children)


async def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    user: RunAs | None = None,
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
        preexec_fn=die_with_parent,
        limit=1024 * 1024,
        user=as_user(user).user,
        group=as_user(user).group,
        extra_groups=as_user(user).extra_groups,
    )
    _children.add(process)
    return process


class AdoptedProcess:
    """A child started with :class:`subprocess.Popen` before the event loop existed (see
    jobs/head_start.py), driven from asyncio like the children of :func:`spawn`.

    Its exit is awaited by a daemon thread blocked in ``waitpid`` on that one pid (never on any
    child), the way asyncio's own threaded child watcher does.
    """

    def __init__(
        self, popen: subprocess.Popen[bytes], stdout: asyncio.StreamReader, exited: Future[int]
    ) -> None:
        self._popen = popen
        self._stdout = stdout
        self._exited = exited

    @classmethod
    async def adopt(cls, popen: subprocess.Popen[bytes]) -> AdoptedProcess:
        assert popen.stdout is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1024 * 1024, loop=loop)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), popen.stdout)
        exited: Future[int] = loop.create_future()

        def settle(code: int) -> None:
            if not exited.done():
                exited.set_result(code)

        def wait_for_exit() -> None:
            code = popen.wait()
            with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody waits
                loop.call_soon_threadsafe(settle, code)

        threading.Thread(target=wait_for_exit, name=f"wait-{popen.pid}", daemon=True).start()
        process = cls(popen, reader, exited)
        _children.add(process)
        return process

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    @property
    def stdout(self) -> asyncio.StreamReader:
        return self._stdout

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)


async def lines(process: ChildProcess) -> AsyncIterator[str]:
    """The child's output, line by line, decoded leniently, without line endings."""
    assert process.stdout is not None
    while True:
        raw = await process.stdout.readline()
        if not raw:
            return
        yield raw.decode("utf-8", "replace").rstrip("\r\n")


def _family(pid: int, with_root: bool = True) -> list[Any]:
    """The process (with ``with_root``) and every descendant, as psutil sees them now."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)] if with_root else root.children(True)
    except psutil.NoSuchProcess:
        return []


def _kill(pid: int, processes: list[Any], timeout: float) -> None:
    """SIGKILL ``pid``'s group and each of ``processes``; wait up to ``timeout`` for them."""
    import psutil

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(processes, timeout=timeout)


def terminate_tree(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM (then SIGCONT, as a shell's ``kill`` does for a stopped job) the process, its
    group and every descendant; SIGKILL what outlives ``timeout``."""
    import psutil

    family = _family(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
        os.killpg(pid, signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued
    for proc in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
            proc.resume()
    _, alive = psutil.wait_procs(family, timeout=timeout)
    _kill(pid, alive, timeout)


async def terminate_tree_async(pid: int, timeout: float = 5.0) -> None:
    """:func:`terminate_tree` without blocking the event loop."""
    await asyncio.get_running_loop().run_in_executor(None, terminate_tree, pid, timeout)


def kill_tree(pid: int, timeout: float = 5.0) -> None:
    """SIGKILL the process, its group and every descendant at once (no SIGTERM first: a hung or
    stopped process would never act on it); wait up to ``timeout`` for the descendants to go.

    The process itself is not waited for here (reaping it is its parent's, so asyncio's child
    watcher still gets its exit status): its group and its descendants are, so whatever held
    its sockets (kernels inherit its listening one) is gone when this returns.
    """
    descendants = _family(pid, with_root=False)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    _kill(pid, descendants, timeout)


async def kill_tree_async(pid: int, timeout: float = 5.0) -> None:
    """:func:`kill_tree` without blocking the event loop."""
    await asyncio.get_running_loop().run_in_executor(None, kill_tree, pid, timeout)
