"""Is marimo still answering? One ``GET /health``, and the watch that tells a hang from a pause.

A marimo whose process lives but no longer answers (a deadlocked event loop, a machine under
memory pressure, ``kill -STOP``) is no crash: nothing exits, so only asking notices it. The
watch asks ``/health`` every ``interval`` seconds, each time over a connection of its own
(never one of the proxy's pooled connections, so it never queues behind users' requests) with
the whole exchange bounded by ``timeout``; ``misses`` unanswered probes in a row make a hang.

Invariants:

* a probe never waits longer than its ``timeout`` (connect, send and the status line together)
  and leaves no connection behind;
* one answered probe forgets every earlier miss: a pause shorter than the detection time
  (:attr:`jobs.settings.Liveness.detection_seconds`) is a slow moment, never a hang;
* the watch only starts once marimo has answered ``/health`` (the supervisor starts it after
  the start is reported), and the supervisor cancels it before any restart or stop it makes,
  so a marimo being started or stopped on purpose is never taken for a hung one;
* probes go straight to marimo's port, not through the proxy: they are no user's activity;
* :func:`wait_ready` (a starting marimo) returns only once ``/health`` answered, and never
  leaves a marimo that did not answer in time running.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from jobs.errors import TransientError
from jobs.processes import ChildProcess, terminate_tree_async
from jobs.settings import Liveness


async def health_ok(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> bool:
    """One ``GET /health`` on a connection of its own; True on a 200 within ``timeout``."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            status = await reader.readline()
        return status.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                # Closing a socket does not wait on the peer: bounded all the same.
                await asyncio.wait_for(writer.wait_closed(), timeout=1.0)


BUSY_CPU_SECONDS = 0.1
"""CPU time marimo's server process spends between two unanswered probes that shows it is at
work (slow under load), not hung: a stopped or deadlocked process spends none."""


def cpu_seconds(pid: int) -> float | None:
    """CPU time the process has spent so far (user and system), or None when it is gone."""
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


async def until_hung(
    port: int, liveness: Liveness, host: str = "127.0.0.1", pid: int | None = None
) -> str:
    """Probe marimo at ``host:port`` until it is hung; returns why, in words for the log.

    Never returns while probes are answered; the caller cancels it when marimo goes for
    another reason. The first probe waits one ``interval``: marimo has just answered. With
    ``pid`` (marimo's server process), an unanswered probe while that process kept spending
    CPU time (:data:`BUSY_CPU_SECONDS` or more since the last probe) is a busy marimo, not a
    hung one, and counts as no miss: 200 clients at once must not get marimo killed. A marimo
    spinning in an endless loop on its event loop is therefore not noticed; stopped, deadlocked
    or starved ones are.
    """
    loop = asyncio.get_running_loop()
    missed = 0
    first_miss = 0.0
    began = loop.time()
    spent = cpu_seconds(pid) if pid is not None else None
    while True:
        await asyncio.sleep(max(0.0, began + liveness.interval - loop.time()))
        began = loop.time()
        answered = await health_ok(port, host, liveness.timeout)
        before, spent = spent, (cpu_seconds(pid) if pid is not None else None)
        if answered:
            missed = 0
            continue
        if before is not None and spent is not None and spent - before >= BUSY_CPU_SECONDS:
            missed = 0  # at work: slow, not hung
            continue
        missed += 1
        if missed == 1:
            first_miss = began
        if missed >= liveness.misses:
            return (
                f"no answer to /health within {liveness.timeout:g} s, {missed} times in a row "
                f"over {loop.time() - first_miss:.1f} s"
            )


async def wait_ready(
    process: ChildProcess,
    port: int,
    reader: asyncio.Task[None],
    timeout: float,
    output: Sequence[str],
) -> None:
    """Return once a starting marimo answers ``/health``. Raises :class:`TransientError` when
    it exits first (with the last lines of ``output``, once ``reader`` read them all) or does
    not answer within ``timeout`` (its tree ended first)."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        # Every 5 ms while a normal start could still be under way (a refused connection
        # costs microseconds, and every millisecond here is one users wait), then every
        # 100 ms.
        delay = 0.005 if time.monotonic() - started < 10.0 else 0.1
        if process.returncode is not None:
            await reader
            raise TransientError(
                f"marimo exited with code {process.returncode} before it was ready: "
                + " ".join(list(output)[-3:])
            )
        if await health_ok(port):
            return
        if time.monotonic() > deadline:
            await terminate_tree_async(process.pid)
            raise TransientError(f"marimo did not answer within {timeout:.0f} s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(process.wait()), timeout=delay)
