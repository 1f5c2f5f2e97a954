"""Running blocking file-system work (scans, fsynced writes) off the event loop.

The jobs share the loop with the proxy and every ``/-/events`` stream, so a scan of the image's
packages or an fsync of the manifest done in place stalls every open page for its duration.

Invariant: when the awaiting task is cancelled, :func:`off_loop` still waits for the work to end
before the cancellation goes on (a thread cannot be stopped half-way), so nothing that follows a
cancelled job races with the files it was writing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def off_loop(work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``work(*args, **kwargs)`` in the loop's default executor."""
    loop = asyncio.get_running_loop()
    return await _to_the_end(loop.run_in_executor(None, functools.partial(work, *args, **kwargs)))


async def _to_the_end(future: asyncio.Future[T]) -> T:
    """``future``'s result; a cancellation of the awaiting task waits for the work to end first
    (a thread cannot be stopped half-way), then goes on."""
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result


async def at_low_priority(work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``work(*args, **kwargs)`` in a thread of its own, niced by 10 (Linux nices threads one by
    one, and threads it starts inherit it), so what runs beside it (marimo booting) comes first
    when the CPU is short. Cancellation waits for the work, as :func:`off_loop`'s does."""
    import contextlib
    import os
    import threading

    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def run() -> None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        try:
            result = work(*args, **kwargs)
        except BaseException as error:  # handed to the awaiting task, whatever it is
            loop.call_soon_threadsafe(deliver, functools.partial(future.set_exception, error))
        else:
            loop.call_soon_threadsafe(deliver, functools.partial(future.set_result, result))

    threading.Thread(target=run, name="low-priority", daemon=True).start()
    return await _to_the_end(future)
