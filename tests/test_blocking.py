"""Blocking work runs beside the loop, and a cancelled job never leaves it running behind."""

from __future__ import annotations

import asyncio
import threading

import pytest

from jobs.blocking import off_loop


def test_the_loop_keeps_serving_while_blocking_work_runs() -> None:
    asyncio.run(_loop_keeps_serving())


def test_a_cancelled_job_waits_for_its_blocking_work_to_end() -> None:
    asyncio.run(_cancelled_job_waits())


async def _loop_keeps_serving() -> None:
    release = threading.Event()
    work = asyncio.create_task(off_loop(release.wait, 30))
    # The loop turns while the work is blocked: a plain coroutine completes meanwhile.
    assert await asyncio.wait_for(asyncio.sleep(0, result="served"), 5) == "served"
    assert not work.done()
    release.set()
    assert await asyncio.wait_for(work, 30) is True


async def _cancelled_job_waits() -> None:
    started, release = threading.Event(), threading.Event()
    written: list[str] = []

    def write() -> None:
        started.set()
        release.wait(30)
        written.append("manifest")

    job = asyncio.create_task(off_loop(write))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 30)
    job.cancel()
    await asyncio.sleep(0)  # the cancellation is delivered
    job.cancel()  # a second one is absorbed the same way
    await asyncio.sleep(0)
    assert not job.done(), "the cancellation went on while the write was half-way"
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(job, 30)
    assert written == ["manifest"]
