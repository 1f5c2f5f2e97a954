"""Runs the startup steps in order, each under its own tenacity retry policy.

A step raises :class:`TransientError` to be retried (exponential backoff with jitter, bounded
attempts, each retry reported) and :class:`PermanentError` to fail at once. What a failure means
for the steps after it is decided here, in one place:

- ``state`` failing falls back to an ephemeral directory (packages will not persist);
- ``venv`` failing runs marimo from the image's interpreter (no Install button);
- ``requirements`` failing still starts marimo (the user can get in and fix things);
- ``marimo`` failing is the only failure that leaves nothing to serve.

Edit mode holds the state lock (``flock``) for its whole run: one replica edits a state folder.
Run mode on a persistent state folder shares it between replicas: the build lease
(jobs/lease.py, no ``flock``) guards building the environment, never using it, so every
replica serves as soon as a finished environment for its requirements exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from jobs import generations, ledger, scratch
from jobs import requirements as requirements_job
from jobs import venv as venv_job
from jobs.backoff import pause
from jobs.blocking import off_loop
from jobs.errors import JobError, PermanentError, TransientError
from jobs.head_start import HeadStart
from jobs.installers import Installer, resolve_installer
from jobs.interpreter import Interpreter
from jobs.layout import StateLayout
from jobs.lease import Lease, LeaseWaiter, holder_id
from jobs.manifest import Manifest
from jobs.marimo import MarimoSupervisor
from jobs.reporting import STEP_NAMES, Reporter, StepName, StepTracker
from jobs.settings import JobSettings
from jobs.state import StateLock, check_directory, ephemeral_layout, lock_holder, try_lock

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    initial: float
    maximum: float
    deadline: float | None = None

    def stop(self) -> stop_base:
        rule: stop_base = stop_after_attempt(self.attempts)
        if self.deadline is not None:
            rule = rule | stop_after_delay(self.deadline)
        return rule


POLICIES: dict[StepName, RetryPolicy] = {
    "state": RetryPolicy(attempts=10_000, initial=0.2, maximum=5.0),
    "venv": RetryPolicy(attempts=3, initial=1.0, maximum=10.0),
    "requirements": RetryPolicy(attempts=5, initial=2.0, maximum=30.0),
    "marimo": RetryPolicy(attempts=5, initial=1.0, maximum=15.0),
}


_PUBLISHED_POLL = wait_exponential(multiplier=0.2, max=0.5)
"""Looking again for the environment another replica builds: reading the pointer is cheap."""
_LOCK_POLL = wait_exponential(multiplier=0.2, max=5.0)
"""Trying the state lock again while another orchestrator edits from the folder."""


def visible_marimo(layout: StateLayout) -> str | None:
    """The marimo version the venv's interpreter imports: its own copy's, else the image's."""
    from jobs.image import image_distributions

    return ledger.scan(layout.venv).get("marimo") or image_distributions().get("marimo")


async def run_step(
    step: StepName,
    work: Callable[[], Awaitable[T]],
    reporter: Reporter,
    policy: RetryPolicy,
) -> T:
    """``work()`` until it succeeds, raises :class:`PermanentError`, or the policy gives up."""

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        reporter.step_retrying(step, state.attempt_number + 1, policy.attempts, delay, str(error))

    retrying = AsyncRetrying(
        stop=policy.stop(),
        wait=wait_exponential_jitter(multiplier=policy.initial, max=policy.maximum),
        retry=retry_if_exception_type(TransientError),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await work()
    raise AssertionError("unreachable: tenacity reraises the last error")


class Pipeline:
    """The startup sequence and what it leaves behind: the state lock and marimo's supervisor."""

    def __init__(
        self, settings: JobSettings, reporter: Reporter, head_start: HeadStart | None = None
    ) -> None:
        self.settings = settings
        self._head_start = head_start
        self.reporter = StepTracker(reporter)
        self.layout: StateLayout | None = None
        self.lock: StateLock | None = None
        self.installer: Installer | None = None
        self.supervisor: MarimoSupervisor | None = None
        self._env = dict(settings.env)
        self._venv_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._marimo_task: asyncio.Task[None] | None = None
        self._gave_up = False
        self._watching = False
        self._venv_watch: asyncio.Task[None] | None = None
        self._marimo_version: str | None = None
        self._persistent = False
        self._root: StateLayout | None = None
        self._image_key = ""
        self._holder = holder_id()
        self._failed_build: bytes | None = None
        self._settled: tuple[StateLayout | None, bytes | None] | None = None

    async def run(self) -> None:
        """The startup sequence, then marimo until it is given up or replaced.

        Invariant: an unexpected exception (a bug, a state file nobody foresaw) never leaves the
        page saying "starting": it becomes a failed step with its message, the marimo started
        early is ended, and "restart marimo" can still try again.
        """
        try:
            loop = asyncio.get_running_loop()
            for path in await loop.run_in_executor(None, scratch.remove_stale):
                self.reporter.log(None, "orchestrator", f"Removed {path}: its orchestrator died")
            layout = await self._state()
            installer = await self._installer()
            if self._shared:
                python = await self._shared_environment(layout, installer)
            else:
                python = await self._build_environment(layout, installer)
            if python is None:
                await self._drop_head_start("the venv cannot be used")
            task = self._start_marimo(python or Path(sys.executable))
        except Exception as error:
            await self._crashed(error)
            return
        await asyncio.wait({task})

    @property
    def _shared(self) -> bool:
        """Run mode on a persistent state folder: replicas share it (module docstring)."""
        return self.settings.marimo_mode == "run" and self._persistent

    async def _build_environment(
        self, layout: StateLayout, installer: Installer, force: bool = False
    ) -> Path | None:
        """The venv checked (rebuilt if needed) and the requirements installed into it."""
        python, rebuilt = await self._venv(layout, installer)
        if python is not None:
            await self._requirements(layout, installer, restore=rebuilt, force=force)
        return python

    def _environment_ready(self, layout: StateLayout, installer: Installer) -> bool:
        """A finished environment for this Python and these requirements is on the volume."""
        manifest = Manifest.load(layout.manifest)
        return (
            Interpreter.current().matches(manifest.venv)
            and layout.venv_python.exists()
            and requirements_job.is_installed(
                self.settings.requirements, layout, installer, self._env
            )
        )

    async def _ready_generation(
        self, root: StateLayout, installer: Installer
    ) -> StateLayout | None:
        """The published generation for this image when it is finished for these requirements
        and its interpreter answers, else ``None``."""
        loop = asyncio.get_running_loop()
        generation = await loop.run_in_executor(None, generations.current, root, self._image_key)
        if generation is None:
            return None
        if not await loop.run_in_executor(None, self._environment_ready, generation, installer):
            return None
        if await venv_job.why_unusable(generation, Interpreter.current(), self._env):
            return None
        return generation

    def _use(self, generation: StateLayout) -> None:
        """Serve from ``generation`` from now on, recording it as in use (and the previous one
        as no longer used by this replica)."""
        previous, self.layout = self.layout, generation
        generations.register(generation, self._holder)
        if previous is not None and previous.env is not None and previous.env != generation.env:
            generations.unregister(previous, self._holder)

    async def _shared_environment(self, root: StateLayout, installer: Installer) -> Path | None:
        """Run mode on a shared volume: use the published generation when it is finished (no
        lease, no installer), else build one under the build lease, else wait for the replica
        that builds it. A dead builder's lease expires and this replica takes over."""
        loop = asyncio.get_running_loop()
        if not self._image_key:
            self._image_key = await loop.run_in_executor(None, generations.image_key)
        waiter = LeaseWaiter(root.build_lease, self.settings.lease_seconds)
        self.reporter.step_running("venv", f"Looking for a finished environment in {root.envs}")
        tries = 0
        while True:
            generation = await self._ready_generation(root, installer)
            if generation is None and (lease := await loop.run_in_executor(None, waiter.try_take)):
                async with self._holding(lease):
                    generation = await self._ready_generation(root, installer)
                    if generation is None:
                        await self._drop_head_start("a new environment is being built")
                        built, python = await self._build_generation(root, installer)
                        self._use(built)
                        return python
            if generation is not None:
                head = self._head_start
                if head is not None and head.python != generation.venv_python:
                    await self._drop_head_start("another environment was published")
                self._use(generation)
                self.reporter.step_finished("venv", "done", f"Using the venv at {generation.venv}")
                self.reporter.step_finished(
                    "requirements",
                    "skipped",
                    f"{self.settings.requirements.name} is installed in the shared environment",
                )
                return generation.venv_python
            await self._drop_head_start("another replica is building the environment")
            holder = await loop.run_in_executor(None, waiter.holder)
            self.reporter.step_progress(
                "venv",
                f"Another replica{f' ({holder})' if holder else ''} is building the environment "
                f"in {root.envs}; this one serves as soon as it is finished",
            )
            tries += 1
            await asyncio.sleep(pause(_PUBLISHED_POLL, tries))

    async def _build_generation(
        self, root: StateLayout, installer: Installer, force: bool = False
    ) -> tuple[StateLayout, Path | None]:
        """A new generation built beside the current one (call with the build lease held),
        published when its requirements installed."""
        loop = asyncio.get_running_loop()
        generation = await loop.run_in_executor(
            None, generations.create, root, self._image_key, self._holder
        )
        python = await self._build_environment(generation, installer, force=force)
        if python is not None and self.reporter.status("requirements") != "failed":
            await loop.run_in_executor(None, generations.publish, root, self._image_key, generation)
            self._failed_build = None
            assert generation.env is not None
            self.reporter.log(
                None, "orchestrator", f"Published the environment {generation.env.name}"
            )
        else:
            self._failed_build = requirements_job.read_requirements_quietly(
                self.settings.requirements
            )
        return generation, python

    async def watch_generations(self, interval: float = 2.0) -> None:
        """Run mode on a shared volume: keep this replica's use record fresh; build a new
        generation when the requirements changed (one replica, under the build lease); move
        marimo to a newly published generation (one replica at a time)."""
        root, installer = self._root, self.installer
        assert root is not None and installer is not None
        loop = asyncio.get_running_loop()
        refreshed = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - refreshed > self.settings.lease_seconds / 2 and self.layout:
                await loop.run_in_executor(None, generations.register, self.layout, self._holder)
                refreshed = time.monotonic()
            # Cheap first: the full checks (fingerprint, interpreter probe) only run when the
            # published pointer or the requirements changed since things last settled.
            seen = (
                await loop.run_in_executor(None, generations.current, root, self._image_key),
                requirements_job.read_requirements_quietly(self.settings.requirements),
            )
            if seen == self._settled or self._venv_lock.locked():
                continue
            async with self._venv_lock:
                if await self._follow_generation(root, installer):
                    self._settled = seen

    async def _follow_generation(self, root: StateLayout, installer: Installer) -> bool:
        """One step towards serving the current generation; True when nothing is left to do
        until the pointer or the requirements change."""
        generation = await self._ready_generation(root, installer)
        if generation is not None:
            if self.layout is None or generation.env != self.layout.env:
                await self._move_to(root, generation)
            return True
        loop = asyncio.get_running_loop()
        wanted = requirements_job.read_requirements_quietly(self.settings.requirements)
        if self._failed_build is not None and wanted == self._failed_build:
            return True  # this replica's build of these requirements failed: wait for a change
        waiter = LeaseWaiter(root.build_lease, self.settings.lease_seconds)
        lease = await loop.run_in_executor(None, waiter.try_take)
        if lease is None:
            return False  # another replica builds it; it is followed once published
        async with self._holding(lease):
            if await self._ready_generation(root, installer) is not None:
                return False
            self.reporter.log(
                "requirements",
                "orchestrator",
                f"{self.settings.requirements.name} changed: building a new environment "
                "beside the one marimo runs from",
            )
            await self._build_generation(root, installer)
        return False

    async def _move_to(self, root: StateLayout, generation: StateLayout) -> None:
        """Restart marimo on ``generation``, holding the move lease so that replicas move one
        at a time (the others keep serving); then remove generations nobody uses."""
        loop = asyncio.get_running_loop()
        waiter = LeaseWaiter(root.move_lease, self.settings.lease_seconds)
        while (lease := await loop.run_in_executor(None, waiter.try_take)) is None:
            await asyncio.sleep(0.2)
        async with self._holding(lease):
            assert generation.env is not None
            self.reporter.log(
                "marimo",
                "orchestrator",
                f"Moving marimo to the environment {generation.env.name}",
            )
            await self._end_marimo()
            self._use(generation)
            self._start_marimo(generation.venv_python)
            deadline = time.monotonic() + self.settings.marimo_ready_timeout + 30
            while self.reporter.status("marimo") in ("pending", "running"):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            stale_after = 10 * self.settings.lease_seconds
            for path in await loop.run_in_executor(None, generations.collect, root, stale_after):
                self.reporter.log(None, "orchestrator", f"Removed {path}: no replica uses it")

    @contextlib.asynccontextmanager
    async def _holding(self, lease: Lease) -> AsyncIterator[None]:
        """Keep ``lease`` alive with its heartbeat for the block, then give it up."""
        loop = asyncio.get_running_loop()

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(lease.ttl / 4)
                if not await loop.run_in_executor(None, lease.beat):
                    self.reporter.log(
                        None, "orchestrator", f"Lost the lease {lease.path} (expired)"
                    )
                    return

        task = asyncio.create_task(heartbeat(), name="lease-heartbeat")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await loop.run_in_executor(None, lease.release)

    async def _building(self, layout: StateLayout) -> Lease:
        """Run mode: wait for the build lease (a change to the shared venv)."""
        waiter = LeaseWaiter(layout.build_lease, self.settings.lease_seconds)
        loop = asyncio.get_running_loop()
        while (lease := await loop.run_in_executor(None, waiter.try_take)) is None:
            await asyncio.sleep(0.5)
        return lease

    async def _crashed(self, error: BaseException) -> None:
        self._gave_up = True
        message = f"the startup jobs crashed: {type(error).__name__}: {error}"
        self.reporter.log(None, "orchestrator", message)
        await self._drop_head_start("the startup jobs crashed")
        if self.supervisor is not None:
            await self.supervisor.stop()
        for step in STEP_NAMES:
            if self.reporter.status(step) in ("pending", "running"):
                self.reporter.step_finished(step, "failed", message)
        if self.reporter.status("marimo") != "failed":
            self.reporter.step_finished("marimo", "failed", f"marimo was not started: {message}")

    def _start_marimo(self, python: Path) -> asyncio.Task[None]:
        assert self.layout is not None and self.installer is not None
        layout, installer = self.layout, self.installer

        async def serve() -> None:
            try:
                await self._marimo(layout, installer, python)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                await self._crashed(error)

        self.reporter.step_running("marimo", "Starting marimo")  # before the task runs
        self._marimo_task = asyncio.create_task(serve(), name="marimo")
        return self._marimo_task

    async def _end_marimo(self) -> None:
        """Stop the supervised marimo and its watch, if any (before it is replaced)."""
        task, supervisor = self._marimo_task, self.supervisor
        self._marimo_task = None
        if supervisor is not None:
            await supervisor.stop()
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.supervisor = None

    @property
    def can_restart_marimo(self) -> bool:
        """True once the start reached marimo (or gave up before it): a restart then always
        means something, whatever state marimo is in."""
        return (
            self.layout is not None
            and self.installer is not None
            and (self._marimo_task is not None or self._gave_up)
        )

    async def restart_marimo(self) -> None:
        """Restart marimo from any state: a running one, one given up after a crash loop, one
        that failed to start, or none after a crash of the jobs. A venv that no longer works
        is repaired (rebuilt, requirements and the user's packages reinstalled) first."""
        layout, installer = self.layout, self.installer
        if layout is None or installer is None:
            raise JobError("the environment is still being prepared")
        async with self._venv_lock:
            python = await self._repair_venv(layout, installer)
            supervisor, task = self.supervisor, self._marimo_task
            alive = task is not None and not task.done() and supervisor is not None
            if alive and supervisor is not None and supervisor.python == python and supervisor.pid:
                await supervisor.restart()
                return
            await self._end_marimo()
            self._start_marimo(python)

    async def _repair_venv(self, layout: StateLayout, installer: Installer) -> Path:
        """The venv's interpreter once the venv works again; the image's when it cannot."""
        reason = await venv_job.why_unusable(layout, Interpreter.current(), self._env)
        if not reason:
            return layout.venv_python
        if self._shared and self._root is not None:  # its generation is gone: use the current
            await self._end_marimo()
            return await self._shared_environment(self._root, installer) or Path(sys.executable)
        self.reporter.step_running("venv", f"Repairing the venv: {reason}")
        await self._end_marimo()  # nothing runs from a venv while it is replaced
        try:
            await venv_job.create(
                layout, installer, self._env, self.reporter, self.settings.requirements
            )
        except JobError as error:
            self.reporter.step_finished(
                "venv", "failed", f"{error}; marimo runs from the image's Python without Install"
            )
            return Path(sys.executable)
        self.reporter.step_finished("venv", "done", f"Rebuilt the venv at {layout.venv} ({reason})")
        await self._requirements(layout, installer, restore=True, force=True)
        return layout.venv_python

    async def _drop_head_start(self, reason: str) -> None:
        """End the marimo started early (jobs/head_start.py) before anything it runs from
        changes; the ordinary start follows."""
        head, self._head_start = self._head_start, None
        if head is None:
            return
        self.reporter.log(
            None,
            "orchestrator",
            f"Stopping the marimo started early (pid {head.popen.pid}): {reason}",
        )
        await asyncio.get_running_loop().run_in_executor(None, head.end)

    async def reinstall(self, rebuild: bool = False, force: bool = True) -> None:
        """Run the install again (after the venv is rebuilt, when asked), serialised with every
        other change to the venv. marimo keeps serving during a plain reinstall; a rebuild
        stops it first (nothing may run from a venv being deleted) and always ends with marimo
        started again on the new venv, whatever the install's outcome."""
        if self.layout is None or self.installer is None:
            return
        layout, installer = self.layout, self.installer
        async with self._venv_lock:
            if self._shared and self._root is not None:
                root = self._root
                async with self._holding(await self._building(root)):
                    generation, python = await self._build_generation(root, installer, force)
                if python is not None and self.can_restart_marimo:
                    await self._move_to(root, generation)
            else:
                await self._reinstall(layout, installer, rebuild, force)

    async def _reinstall(
        self, layout: StateLayout, installer: Installer, rebuild: bool, force: bool
    ) -> None:
        if not rebuild:
            await self._requirements(layout, installer, restore=False, force=force)
            await self._follow_marimo_version(layout)
            return
        started = self.can_restart_marimo  # else the start-up sequence starts marimo itself
        await self._end_marimo()
        python = Path(sys.executable)
        self.reporter.step_running("venv", "Rebuilding the venv")
        try:
            await venv_job.create(
                layout, installer, self._env, self.reporter, self.settings.requirements
            )
        except JobError as error:
            self.reporter.step_finished(
                "venv", "failed", f"{error}; marimo runs from the image's Python"
            )
        else:
            self.reporter.step_finished("venv", "done", f"Rebuilt the venv at {layout.venv}")
            await self._requirements(layout, installer, restore=True, force=force)
            python = layout.venv_python
        if started:
            self._start_marimo(python)

    async def _follow_marimo_version(self, layout: StateLayout) -> None:
        """After an install under a running marimo: if the marimo the venv now provides is
        another version (a pin added, changed or removed), restart marimo on it, saying so."""
        supervisor, task = self.supervisor, self._marimo_task
        if supervisor is None or task is None or task.done() or supervisor.pid is None:
            return
        if supervisor.python != layout.venv_python:
            return
        now = await off_loop(visible_marimo, layout)
        if now == self._marimo_version:
            return
        reason = f"marimo {self._marimo_version} → {now} after the install"
        self.reporter.log("marimo", "orchestrator", f"{reason}: restarting marimo")
        self._marimo_version = now
        await supervisor.restart(f"{reason} (restart requested)")

    async def watch_requirements(self, interval: float = 2.0) -> None:
        """Re-run the install in the background whenever the requirements file changes."""
        path = self.settings.requirements
        last = requirements_job.read_requirements_quietly(path)
        while True:
            await asyncio.sleep(interval)
            current = requirements_job.read_requirements_quietly(path)
            if current != last:
                last = current
                self.reporter.log(
                    "requirements", "orchestrator", f"{path.name} changed: installing"
                )
                await self.reinstall(force=False)

    async def watch_ledger(self, interval: float = 5.0) -> None:
        """Keep the ledger in step with packages installed from marimo's UI or a terminal."""
        assert self.layout is not None
        seen = 0.0
        while True:
            await asyncio.sleep(interval)
            mtime = ledger.site_packages_mtime(self.layout)
            if mtime != seen and not self._venv_lock.locked():
                seen = mtime
                await asyncio.get_running_loop().run_in_executor(
                    None, ledger.sync, self.layout, self.settings.requirements
                )
                await self._install_what_ui_packages_need()

    async def _install_what_ui_packages_need(self) -> None:
        """A package from marimo's Install button that truly needs another version of an image
        package gets it in the venv, and the requirements step's message says which and why."""
        layout, installer = self.layout, self.installer
        if layout is None or installer is None or self._venv_lock.locked():
            return
        async with self._venv_lock:
            try:
                replaced = await requirements_job.install_what_ui_packages_need(
                    layout, installer, self._env, self.reporter
                )
            except JobError as error:
                replaced = f"could not install what your packages need: {error}"
        if replaced:
            previous = self.reporter.message("requirements")
            self.reporter.step_progress(
                "requirements", f"{previous}; {replaced}" if previous else replaced
            )

    async def watch_venv(self, python: Path, interval: float = 2.0) -> None:
        """Notice a venv that vanished or broke under a running marimo (``rm -rf``, a full disk
        that truncated it): say so, repair it and restart marimo on it."""
        layout = self.layout
        assert layout is not None
        while True:
            await asyncio.sleep(interval)
            intact = python.exists() and layout.venv.joinpath("pyvenv.cfg").is_file()
            if intact or self._venv_lock.locked():
                continue
            self.reporter.step_running(
                "venv", f"The venv at {layout.venv} vanished while marimo ran: repairing it"
            )
            self.reporter.log("venv", "orchestrator", f"{python} is gone: repairing the venv")
            await self.restart_marimo()
            return  # the marimo started on the repaired venv watches it anew

    async def _state(self) -> StateLayout:
        self.reporter.step_running(
            "state", f"Waiting for the state directory {self.settings.state_dir}"
        )
        wanted = StateLayout(self.settings.state_dir)
        policy = POLICIES["state"]
        policy = RetryPolicy(
            policy.attempts, policy.initial, policy.maximum, self.settings.state_timeout
        )

        async def attempt() -> None:
            check_directory(wanted.root, create=not self.settings.wait_for_state)

        try:
            await run_step("state", attempt, self.reporter, policy)
            if self.settings.marimo_mode == "run":
                pass  # replicas share the folder: the build lease guards building (module doc)
            elif self._head_start is not None and self._head_start.lock is not None:
                self.lock = self._head_start.lock  # taken before marimo was started early
            else:
                self.lock = await self._acquire_lock(wanted)
        except JobError as error:
            if (head := self._head_start) is not None:
                await self._drop_head_start(str(error))
                if head.lock is not None:
                    head.lock.release()
            self.layout = ephemeral_layout()
            warning = f"{error}; using {self.layout.root}: installed packages will not persist"
            self.reporter.step_finished("state", "failed", warning)
            self.reporter.state_resolved(self.layout.root, persistent=False, warning=warning)
            return self.layout
        self.layout = self._root = wanted
        self._persistent = True  # the folder asked for, not the temporary fallback
        lost = self.settings.not_persistent
        self.reporter.state_resolved(wanted.root, persistent=lost is None, warning=lost)
        kept = "" if lost is None else " (not persistent: see the warning)"
        self.reporter.step_finished("state", "done", f"State in {wanted.root}{kept}")
        return wanted

    async def _acquire_lock(self, layout: StateLayout) -> StateLock:
        """Wait as long as it takes: a second orchestrator must never touch the venv."""
        tries = 0
        while (lock := try_lock(layout)) is None:
            holder = lock_holder(layout)
            self.reporter.step_progress(
                "state",
                f"Another orchestrator{f' (pid {holder})' if holder else ''} is editing from "
                f"{layout.root}: edit mode serves from one replica per state folder, so this "
                "one stands by and takes over when that one stops",
            )
            tries += 1
            await asyncio.sleep(pause(_LOCK_POLL, tries))
        return lock

    async def _installer(self) -> Installer:
        try:
            self.installer = resolve_installer(self.settings.installer)
        except PermanentError as error:
            self.reporter.log(None, "orchestrator", f"{error}; falling back to pip")
            self.installer = resolve_installer("pip")
        return self.installer

    async def _venv(self, layout: StateLayout, installer: Installer) -> tuple[Path | None, bool]:
        self.reporter.step_running("venv", f"Checking the venv at {layout.venv}")
        rebuilt = False

        async def attempt() -> str:
            nonlocal rebuilt
            reason = await venv_job.why_unusable(layout, Interpreter.current(), self._env)
            if not reason:
                return f"Reusing the venv at {layout.venv}"
            await self._drop_head_start(f"the venv must be rebuilt ({reason})")
            rebuilt = True
            self.reporter.step_progress("venv", f"Building the venv: {reason}", 0.0)
            history = Manifest.load(layout.manifest).history
            if (expected := history.get("venv_seconds")) is not None:
                self.reporter.step_expected("venv", float(expected))
            started = time.monotonic()
            await venv_job.create(
                layout, installer, self._env, self.reporter, self.settings.requirements
            )
            manifest = Manifest.load(layout.manifest)
            manifest.history["venv_seconds"] = round(time.monotonic() - started, 3)
            manifest.save(layout.manifest)
            return (
                f"Built the venv at {layout.venv} in {time.monotonic() - started:.1f} s ({reason})"
            )

        try:
            message = await run_step("venv", attempt, self.reporter, POLICIES["venv"])
        except JobError as error:
            self.reporter.step_finished(
                "venv", "failed", f"{error}; marimo runs from the image's Python without Install"
            )
            self.reporter.step_finished("requirements", "skipped", "no venv to install into")
            return None, False
        self.reporter.step_finished("venv", "done", message)
        return layout.venv_python, rebuilt

    async def _requirements(
        self, layout: StateLayout, installer: Installer, restore: bool, force: bool = False
    ) -> bool:
        path = self.settings.requirements
        self.reporter.step_running("requirements", f"Checking {path}")

        async def attempt() -> requirements_job.InstallOutcome:
            return await requirements_job.install(
                path,
                layout,
                installer,
                self._env,
                self.reporter,
                force=force,
                before_change=lambda: self._drop_head_start(f"{path.name} must be installed"),
            )

        async def restore_attempt() -> str:
            return await requirements_job.restore_user_packages(
                layout, installer, self._env, self.reporter
            )

        failure: JobError | None = None
        outcome: requirements_job.InstallOutcome | None = None
        try:
            outcome = await run_step(
                "requirements", attempt, self.reporter, POLICIES["requirements"]
            )
        except JobError as error:
            failure = error
        restored = ""
        if restore:  # even when the requirements failed: the user's own packages come back
            try:
                restored = await run_step(
                    "requirements", restore_attempt, self.reporter, POLICIES["requirements"]
                )
            except JobError as error:
                failure = failure or JobError(f"could not restore your packages: {error}")
        if failure is not None or outcome is None:
            self.reporter.step_finished("requirements", "failed", str(failure))
            return False
        if restored:  # the installer ran, if only for the user's packages
            base = outcome.message if outcome.kind == "installed" else "Requirements unchanged"
            self.reporter.step_finished("requirements", "done", f"{base}{restored}")
        else:
            self.reporter.step_finished(
                "requirements",
                "done" if outcome.kind == "installed" else "skipped",
                outcome.message,
            )
        return True

    async def _marimo(self, layout: StateLayout, installer: Installer, python: Path) -> None:
        self.reporter.step_running("marimo", "Starting marimo")
        supervisor = MarimoSupervisor(
            notebook_dir=self.settings.notebook_dir,
            mode=self.settings.marimo_mode,
            python=python,
            layout=layout,
            installer=installer,
            base_env=self._env,
            reporter=self.reporter,
            ready_timeout=self.settings.marimo_ready_timeout,
            stable_after=self.settings.marimo_crash_window,
            head_start=self._head_start,
            user=self.settings.marimo_user,
        )
        if (head := self._head_start) is not None:
            self._head_start = None  # the supervisor owns it now
            self.reporter.log(
                "marimo",
                "orchestrator",
                f"Serving the marimo started early (pid {head.popen.pid}): nothing changed",
            )
        self.supervisor = supervisor
        self._marimo_version = (
            await off_loop(visible_marimo, layout) if python == layout.venv_python else None
        )
        try:
            await run_step("marimo", supervisor.launch, self.reporter, POLICIES["marimo"])
        except JobError as error:
            self._gave_up = True
            self.reporter.step_finished("marimo", "failed", str(error))
            return
        self.reporter.step_finished("marimo", "done", f"marimo is running (pid {supervisor.pid})")
        if not self._watching:
            self._watching = True
            if self.lock is not None:  # edit mode on a persistent state: the Install button
                self._spawn(self.watch_ledger())
            if self._shared:
                self._spawn(self.watch_generations())
            else:
                self._spawn(self.watch_requirements())
        if self._venv_watch is not None:
            self._venv_watch.cancel()
        if python == layout.venv_python:
            self._venv_watch = self._spawn(self.watch_venv(python))
        try:
            await supervisor.watch()
        except JobError as error:
            self._gave_up = True
            self.reporter.step_finished("marimo", "failed", str(error))

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a watcher must never take marimo down with it
                self.reporter.log(None, "orchestrator", f"background job failed: {error!r}")

        task = asyncio.create_task(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        await self._drop_head_start("stopping")
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self._marimo_task is not None:
            self._marimo_task.cancel()
        if self.lock is not None:
            self.lock.release()
        if self._shared and self.layout is not None and self.layout.env is not None:
            generations.unregister(self.layout, self._holder)
