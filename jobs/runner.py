"""The startup pipeline: state → venv → requirements → marimo, in order, each step under its own
retry policy (jobs/retry.py); then what changes under a running marimo (restart, reinstall,
repair). The venv and requirements steps themselves are jobs/environment.py's.

What a failure means for the steps after it is decided here, in one place:

- ``state`` failing falls back to an ephemeral directory (packages will not persist), named
  after this process in ``$TMPDIR`` and removed at exit (:meth:`Pipeline.remove_fallback`), or
  by the next start's sweep after a kill (jobs/scratch.py);
- ``venv`` failing runs marimo from the image's interpreter (no Install button);
- ``requirements`` failing still starts marimo (the user can get in and fix things); failing
  for a full disk, it is installed again by itself once space is freed (jobs/free_space.py);
- ``marimo`` failing is the only failure that leaves nothing to serve.

Edit mode holds the state lock (``flock``) for its whole run: one replica edits a state folder.
Run mode on a persistent state folder shares it between replicas: the build lease
(jobs/lease.py, no ``flock``) guards building the environment, never using it, so every
replica serves as soon as a finished environment for its requirements exists (which
environment, and when to build or move to another: jobs/replicas.py).

The ``marimo`` step itself is jobs/marimo_step.py's. Once marimo runs, background watchers
(jobs/watchers.py) hand changes back to the pipeline.
Invariant: every change to the venv in use (an install, a rebuild, a repair, a move to another
generation) happens under the pipeline's venv lock, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from jobs import local_env, marimo_step, scratch, state_step, watchers
from jobs import venv as venv_job
from jobs.blocking import off_loop
from jobs.environment import EnvironmentSteps
from jobs.errors import JobError, PermanentError
from jobs.head_start import HeadStart
from jobs.installers import Installer, resolve_installer
from jobs.interpreter import Interpreter
from jobs.layout import StateLayout
from jobs.marimo import MarimoSupervisor
from jobs.replicas import Replicas
from jobs.reporting import STEP_NAMES, Reporter, StepTracker
from jobs.settings import JobSettings
from jobs.sources import Declared
from jobs.state import StateLock


class Pipeline:
    """The startup sequence and what it leaves behind: the state lock and marimo's supervisor.

    ``layout`` is where the environment marimo runs from lives: the state folder, its ephemeral
    fallback, or (run mode on a persistent folder) the generation ``_replicas`` chose."""

    def __init__(
        self,
        settings: JobSettings,
        reporter: Reporter,
        head_start: HeadStart | None = None,
    ) -> None:
        self.settings = settings
        self._head_start = head_start
        self.reporter = StepTracker(reporter)
        self.layout: StateLayout | None = None
        self.lock: StateLock | None = None
        self.installer: Installer | None = None
        self.supervisor: MarimoSupervisor | None = None
        self._env = dict(settings.env)
        self._steps = EnvironmentSteps(
            settings,
            self.reporter,
            self.drop_head_start,
            lambda layout, installer: self._watchers.install_once_space_is_freed(layout, installer),
        )
        self._replicas: Replicas | None = None
        self._venv_lock = asyncio.Lock()
        self._watchers = watchers.Watchers(
            settings,
            self.reporter,
            self._steps,
            self._venv_lock,
            on_change=self._environment_changed,
            reinstall=lambda reason: self.reinstall(force=False, reason=reason),
            repair=self.restart_marimo,
        )
        self._marimo_task: asyncio.Task[None] | None = None
        self._gave_up = False
        self._marimo_version: str | None = None
        self._keeper: local_env.SnapshotKeeper | None = None
        self._built = asyncio.Event()
        """Set once the start-up build is over: marimo started early watches only then."""
        self._start_crashed = False
        self._fallback: Path | None = None
        """The temporary state folder this run fell back to, until it is removed."""

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
            if self._replicas is not None:
                self.layout, python = await self._replicas.environment(installer)
            else:
                python = await self._build(layout, installer)
                self._environment_changed(only_if_stale=True)
            if python is None:
                await self.drop_head_start("the venv cannot be used")
            task = await self._serving_from(python or Path(sys.executable))
            self._built.set()
        except Exception as error:
            await self._crashed(error)
            return
        await asyncio.wait({task})

    async def _build(self, layout: StateLayout, installer: Installer) -> Path | None:
        """The venv and the requirements steps. When the venv is restored from the volume's
        snapshot, marimo serves from a skeleton of it meanwhile and kernels wait until both
        steps end (jobs/local_env.py, proxy/hold.py): the requirements step brings back what
        the user installed after the snapshot was taken (the ledger), and a kernel started
        before that would not find it. Every change to the venv (a restart, a reinstall) waits
        for the whole build."""
        if not await self._serve_while_restoring(layout):
            return await self._steps.build(layout, installer)
        # before_rebuild is read only where the venv is built: by this venv step, or by a rebuild,
        # which waits for this lock; so it is cleared with the hold, once both steps are over.
        async with self._venv_lock:
            try:
                python, rebuilt = await self._steps.venv(layout, installer)
                if python is not None:
                    await self._steps.requirements(layout, installer, restore=rebuilt)
            finally:
                self._steps.before_rebuild = None
                self.reporter.kernels_held(False)
        return python

    async def _serve_while_restoring(self, layout: StateLayout) -> bool:
        """Start marimo from a skeleton of the venv, kernels held, when the venv is about to be
        restored from a snapshot that allows it (:func:`local_env.serves_early`)."""
        head = self._head_start
        if not await local_env.serves_early(self.settings.marimo_mode, layout, head, self.reporter):
            return False
        self.reporter.kernels_held(True)
        self._steps.before_rebuild = self._stop_early_marimo
        self._head_start = None  # adopted by this marimo task, never dropped by the venv step
        self._start_marimo(layout.venv_python, head_start=head)
        return True

    async def _stop_early_marimo(self, reason: str) -> None:
        """The snapshot could not be used: the venv is built anew, so the marimo serving from
        its skeleton stops first (and starts again on the new venv)."""
        if self._marimo_task is not None:
            self.reporter.log(
                "venv", "orchestrator", f"Stopping marimo until the venv is built: {reason}"
            )
            await self.end_marimo()

    async def _serving_from(self, python: Path) -> asyncio.Task[None]:
        """The marimo task, started on ``python`` unless the one started early (if any) still
        serves from it."""
        task, supervisor = self._marimo_task, self.supervisor
        if task is not None and not task.done() and supervisor and supervisor.python == python:
            return task
        await self.end_marimo()
        return self._start_marimo(python)

    @property
    def head_start_python(self) -> Path | None:
        """The interpreter of the marimo started early, until it is adopted or dropped."""
        return None if self._head_start is None else self._head_start.python

    async def drop_head_start(self, reason: str) -> None:
        """End the marimo started early (jobs/head_start.py) before anything it runs from
        changes; the ordinary start follows."""
        head, self._head_start = self._head_start, None
        if head is not None:
            await head.discard(self.reporter, reason)

    async def _state(self) -> StateLayout:
        folder = await state_step.resolve(
            self.settings, self.reporter, self._head_start, self.drop_head_start
        )
        self.lock = folder.lock
        if folder.fallback is not None:
            self.layout, self._fallback = folder.layout, folder.fallback
            return self.layout
        wanted = folder.layout
        lost = self.settings.not_persistent
        wanted = await self._place(wanted, persistent=lost is None)
        self.layout = wanted
        if self.settings.marimo_mode == "run":  # the folder asked for, not the fallback: shared
            self._replicas = Replicas(wanted, self.settings, self.reporter, self._steps, self)
        self.reporter.state_resolved(wanted.root, persistent=lost is None, warning=lost)
        kept = "" if lost is None else " (not persistent: see the warning)"
        self.reporter.step_finished("state", "done", f"State in {wanted.root}{kept}")
        return wanted

    async def _place(self, layout: StateLayout, persistent: bool) -> StateLayout:
        """``layout`` with the venv on local disk when the state volume is a network one
        (jobs/env_location.py); edit mode then keeps the volume's snapshot up to date."""
        layout, placement, record = await off_loop(
            local_env.place, self.settings, layout, persistent
        )
        head = self._head_start
        edit = self.settings.marimo_mode == "edit"  # run mode: replicas.py checks its own
        if head is not None and edit and head.python != layout.venv_python:
            await self.drop_head_start(f"the environment runs from {layout.venv}")
        if layout.local is not None and self.settings.marimo_mode == "edit":
            self._keeper = local_env.SnapshotKeeper(layout, placement, self.reporter, record)
            self._keeper.report()
        else:
            self.reporter.environment_changed(local_env.describe(layout, placement, record))
        return layout

    def _environment_changed(self, only_if_stale: bool = False) -> None:
        """The venv may have changed: the volume's snapshot follows (jobs/local_env.py)."""
        if self._keeper is not None:
            self._keeper.after_change(self._steps, only_if_stale)

    async def _installer(self) -> Installer:
        try:
            self.installer = resolve_installer(self.settings.installer)
        except PermanentError as error:
            self.reporter.log(None, "orchestrator", f"{error}; falling back to pip")
            self.installer = resolve_installer("pip")
        return self.installer

    async def _marimo(
        self,
        layout: StateLayout,
        installer: Installer,
        python: Path,
        why: str,
        head_start: HeadStart | None = None,
    ) -> None:
        """The marimo step on ``python`` (jobs/marimo_step.py), adopting ``head_start`` or the
        pipeline's own marimo started early; the watchers start once the build is over."""
        self.reporter.step_running("marimo", why)
        head = head_start or self._head_start
        if head is not None and head is self._head_start:
            self._head_start = None  # the supervisor owns it now
        self.supervisor = supervisor = marimo_step.supervisor(
            self.settings, self._env, self.reporter, layout, installer, python, head
        )
        self._marimo_version = (
            await off_loop(marimo_step.visible_marimo, layout)
            if python == layout.venv_python
            else None
        )
        if not await marimo_step.launch(supervisor, self.reporter):
            self._gave_up = True
            return
        await self._built.wait()  # served early: the watchers follow a complete venv
        if self._start_crashed:
            return
        self._watch(layout, installer, python)
        if not await marimo_step.watch(supervisor, self.reporter):
            self._gave_up = True

    def _watch(self, layout: StateLayout, installer: Installer, python: Path) -> None:
        """The background watchers (jobs/watchers.py); the Install button's ledger in edit
        mode on a persistent state (the state lock is held)."""
        self._watchers.start(
            layout, installer, python, ledger_too=self.lock is not None, replicas=self._replicas
        )

    async def _crashed(self, error: BaseException) -> None:
        self._gave_up = True
        self._start_crashed = True
        self._built.set()
        message = f"the startup jobs crashed: {type(error).__name__}: {error}"
        self.reporter.log(None, "orchestrator", message)
        await self.drop_head_start("the startup jobs crashed")
        if self.supervisor is not None:
            await self.supervisor.stop()
        for step in STEP_NAMES:
            if self.reporter.status(step) in ("pending", "running"):
                self.reporter.step_finished(step, "failed", message)
        if self.reporter.status("marimo") != "failed":
            self.reporter.step_finished("marimo", "failed", f"marimo was not started: {message}")

    def _start_marimo(
        self, python: Path, why: str = "Starting marimo", head_start: HeadStart | None = None
    ) -> asyncio.Task[None]:
        """marimo's task on ``python``; it adopts ``head_start`` (or the pipeline's own, when
        it is still there then) instead of starting a process."""
        assert self.layout is not None and self.installer is not None
        layout, installer = self.layout, self.installer

        async def serve() -> None:
            try:
                await self._marimo(layout, installer, python, why, head_start)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                await self._crashed(error)

        self.reporter.step_running("marimo", why)  # before the task runs
        self._marimo_task = asyncio.create_task(serve(), name="marimo")
        return self._marimo_task

    async def move_marimo(self, layout: StateLayout) -> None:
        """Serve marimo from ``layout``'s venv from now on (run mode's move to another
        generation). Switched without a moment without marimo when it can be
        (:meth:`MarimoSupervisor.switch`: the new one beside the old one until it answers);
        else, as the log and the board say, stopped and started on it."""
        python = layout.venv_python
        supervisor, task = self.supervisor, self._marimo_task
        why = None
        if supervisor is not None and task is not None and not task.done():
            why = await supervisor.switch(python, layout)
            if why is None:
                self.layout = layout
                if self.installer is not None:
                    self._watch(layout, self.installer, python)
                return
            self.reporter.log("marimo", "orchestrator", f"marimo is restarted instead: {why}")
        await self.end_marimo()
        self.layout = layout
        self._start_marimo(python, f"Restarting marimo: {why}" if why else "Starting marimo")

    async def end_marimo(self) -> None:
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

    def declared(self) -> Declared:
        """Every declared source as it is now (blocking: reads files; shares the watchers'
        header cache, so unchanged notebooks are not read again)."""
        return self._steps.declared()

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
            await self.end_marimo()
            self._start_marimo(python)

    async def _repair_venv(self, layout: StateLayout, installer: Installer) -> Path:
        """The venv's interpreter once the venv works again; the image's when it cannot."""
        reason = await venv_job.why_unusable(layout, Interpreter.current(), self._env)
        if not reason:
            return layout.venv_python
        if self._replicas is not None:  # its generation is gone: use the current one
            await self.end_marimo()  # nothing may run from a venv being replaced
            self.layout, python = await self._replicas.environment(installer)
            return python or Path(sys.executable)
        python = await self._rebuild(layout, installer, reason, force=True)
        self._environment_changed()
        return python

    async def _rebuild(
        self, layout: StateLayout, installer: Installer, reason: str, force: bool
    ) -> Path:
        """The one venv rebuild under a running pipeline (a repair, Rebuild): marimo ended
        first (nothing may run from a venv being replaced), then the venv, the requirements and
        the user's packages (:meth:`EnvironmentSteps.rebuild`); the interpreter to serve from."""
        await self.end_marimo()
        return await self._steps.rebuild(layout, installer, reason, force)

    async def reinstall(
        self, rebuild: bool = False, force: bool = True, reason: str | None = None
    ) -> None:
        """Run the install again (after the venv is rebuilt, when asked), serialised with every
        other change to the venv. marimo keeps serving during a plain reinstall; a rebuild
        stops it first (nothing may run from a venv being deleted) and always ends with marimo
        started again on the new venv, whatever the install's outcome. Run mode on a shared
        folder builds a new generation instead and moves marimo to it."""
        if self.layout is None or self.installer is None:
            return
        layout, installer = self.layout, self.installer
        async with self._venv_lock:
            if self._replicas is not None:
                generation, python = await self._replicas.build(installer, force)
                if python is not None and self.can_restart_marimo:
                    await self._replicas.move_to(generation)
            elif rebuild:
                started = self.can_restart_marimo  # else the start-up sequence starts marimo
                python = await self._rebuild(layout, installer, "requested", force)
                if started:
                    self._start_marimo(python)
            else:
                await self._steps.requirements(
                    layout, installer, restore=False, force=force, reason=reason
                )
                await self._follow_marimo_version(layout)
            self._environment_changed()

    async def _follow_marimo_version(self, layout: StateLayout) -> None:
        """After an install under a running marimo: if the marimo the venv now provides is
        another version (a pin added, changed or removed), restart marimo on it, saying so."""
        supervisor, task = self.supervisor, self._marimo_task
        if supervisor is None or task is None or task.done() or supervisor.pid is None:
            return
        if supervisor.python == layout.venv_python:
            self._marimo_version = await marimo_step.follow_version(
                supervisor, layout, self._marimo_version, self.reporter
            )

    async def stop(self) -> None:
        self._watchers.cancel()
        if self._keeper is not None:
            await self._keeper.stop()
        await self.drop_head_start("stopping")
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self._marimo_task is not None:
            self._marimo_task.cancel()
        if self.lock is not None:
            self.lock.release()
        if self._replicas is not None:
            self._replicas.leave()

    async def remove_fallback(self) -> None:
        """Remove the temporary state folder, if this run fell back to one. Called last at an
        orderly exit, once marimo and every installer have ended (nothing writes into it)."""
        root, self._fallback = self._fallback, None
        if root is not None:
            import shutil

            await off_loop(shutil.rmtree, root, ignore_errors=True)
