"""The ``state`` step: wait for the state folder, take what guards it, or fall back.

Invariants:
- edit mode returns holding the state lock (``flock``), taken here or by the head start before
  marimo was started early (jobs/head_start.py) and never released in between; it waits as long
  as another orchestrator edits from the folder: a second one must never touch the venv;
- run mode takes no lock (replicas share the folder; jobs/lease.py guards building);
- a folder that never becomes usable within ``--state-timeout`` falls back to a temporary one
  named after this process (removed at exit, or by the next start's sweep after a kill), the
  head start is ended first and its lock released, and the step fails with a warning saying
  that installed packages will not persist.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

from tenacity import wait_exponential

from jobs.backoff import pause
from jobs.blocking import off_loop
from jobs.errors import JobError
from jobs.head_start import HeadStart
from jobs.layout import StateLayout
from jobs.reporting import StepTracker
from jobs.retry import POLICIES, RetryPolicy, run_step
from jobs.settings import JobSettings
from jobs.state import StateLock, check_directory, ephemeral_layout, lock_holder, try_lock

LOCK_POLL = wait_exponential(multiplier=0.2, max=5.0)
"""Trying the state lock again while another orchestrator edits from the folder."""


class StateFolder(NamedTuple):
    """Where this run keeps its state. ``fallback`` is set (to ``layout.root``) when the folder
    asked for could not be used: the step failed and said so."""

    layout: StateLayout
    lock: StateLock | None
    fallback: Path | None = None


async def resolve(
    settings: JobSettings,
    reporter: StepTracker,
    head_start: HeadStart | None,
    drop_head_start: Callable[[str], Awaitable[None]],
) -> StateFolder:
    """The state folder to use (the step is left running when it is the one asked for: the
    caller places the environment and finishes it)."""
    reporter.step_running("state", f"Waiting for the state directory {settings.state_dir}")
    wanted = StateLayout(settings.state_dir)
    policy = POLICIES["state"]
    policy = RetryPolicy(policy.attempts, policy.initial, policy.maximum, settings.state_timeout)

    async def attempt() -> None:
        check_directory(wanted.root, create=not settings.wait_for_state)

    try:
        await run_step("state", attempt, reporter, policy)
        if settings.marimo_mode == "run":
            return StateFolder(wanted, None)
        if head_start is not None and head_start.lock is not None:
            return StateFolder(wanted, head_start.lock)  # taken before marimo was started early
        return StateFolder(wanted, await acquire_lock(wanted, reporter))
    except JobError as error:
        if head_start is not None:
            await drop_head_start(str(error))
            if head_start.lock is not None:
                head_start.lock.release()
        layout = await off_loop(ephemeral_layout)
        warning = f"{error}; using {layout.root}: installed packages will not persist"
        reporter.step_finished("state", "failed", warning)
        reporter.state_resolved(layout.root, persistent=False, warning=warning)
        return StateFolder(layout, None, fallback=layout.root)


async def acquire_lock(layout: StateLayout, reporter: StepTracker) -> StateLock:
    """Wait as long as it takes: a second orchestrator must never touch the venv."""
    tries = 0
    while (lock := try_lock(layout)) is None:
        holder = lock_holder(layout)
        reporter.step_progress(
            "state",
            f"Another orchestrator{f' (pid {holder})' if holder else ''} is editing from "
            f"{layout.root}: edit mode serves from one replica per state folder, so this "
            "one stands by and takes over when that one stops",
        )
        tries += 1
        await asyncio.sleep(pause(LOCK_POLL, tries))
    return lock
