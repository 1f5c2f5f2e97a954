"""The pipeline's background watchers, started once marimo runs: each notices one kind of change
under a running marimo and hands it to the pipeline (jobs/runner.py).

:class:`Watchers` starts them for the pipeline: the declared sources' (or, run mode on a shared
folder, the replicas'), the ledger's (edit mode on a persistent state: the Install button), the
venv's (anew for each marimo), and the wait for free space after a full disk.

Invariants: a watcher never changes the venv while ``venv_lock`` is held (an install, a rebuild
or a repair is under way): it looks again on its next round instead, and what it changes itself
it changes under that lock. A watcher raises nothing the pipeline must handle: each runs guarded
(:meth:`Watchers.spawn`), so that a failing watcher never takes marimo down; the watchers are
started once per pipeline, the venv's once per marimo (the previous one cancelled), and at most
one wait for free space runs at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from jobs import declared_install as declared_job
from jobs import free_space, ledger, scratch, user_installs
from jobs.blocking import off_loop
from jobs.environment import EnvironmentSteps
from jobs.errors import JobError
from jobs.installers import Installer
from jobs.layout import StateLayout
from jobs.replicas import Replicas
from jobs.reporting import StepTracker
from jobs.settings import JobSettings
from jobs.sources import Declared


async def watch_declared(
    read: Callable[[], Declared],
    reporter: StepTracker,
    reinstall: Callable[[str], Awaitable[None]],
    interval: float = 2.0,
    baseline: Declared | None = None,
) -> None:
    """``reinstall(reason)`` whenever a declared source changes (the requirements file or an
    include, ``UV_CONFIG_FILE``'s file, a notebook's header, ``pyproject.toml``, ``uv.lock``).
    ``read`` is blocking and cheap (notebooks are read only when their size or mtime changed).
    Changes are counted from ``baseline`` (what the requirements step last read) when given, so
    an edit made while marimo started is not taken for the starting point."""
    last = baseline if baseline is not None else await off_loop(read)
    while True:
        await asyncio.sleep(interval)
        current = await off_loop(read)
        if current.digest != last.digest:
            reason = f"{declared_job.changes(last, current)}: installing"
            last = current
            reporter.log("requirements", "orchestrator", reason)
            await reinstall(reason)


async def watch_ledger(
    layout: StateLayout,
    installer: Installer,
    requirements: Path,
    env: dict[str, str],
    reporter: StepTracker,
    venv_lock: asyncio.Lock,
    on_change: Callable[[], None] = lambda: None,
    interval: float = 5.0,
    declared: Callable[[], set[str]] = set,
) -> None:
    """Keep the ledger in step with packages installed from marimo's UI or a terminal, report
    the user's packages (``reporter.user_packages``) after every look, the first one at once,
    and call ``on_change`` when the venv changed since the watcher first looked. ``declared``
    (blocking, cheap) names what every source declares now: a package marimo recorded in a
    notebook's header is ours, not the user's. The ledger is read under ``venv_lock``: an
    install that starts meanwhile cannot show its packages before it records them as ours."""
    seen: float | None = None
    while True:
        mtime = ledger.site_packages_mtime(layout)
        if mtime != seen and not venv_lock.locked():
            async with venv_lock:
                current = await off_loop(
                    lambda: ledger.sync(layout, requirements, None, declared())
                )
            reporter.user_packages(current.user)
            if seen is not None:
                on_change()
            seen = mtime
            await _install_what_ui_packages_need(layout, installer, env, reporter, venv_lock)
        await asyncio.sleep(interval)


async def _install_what_ui_packages_need(
    layout: StateLayout,
    installer: Installer,
    env: dict[str, str],
    reporter: StepTracker,
    venv_lock: asyncio.Lock,
) -> None:
    """A package from marimo's Install button that truly needs another version of an image
    package gets it in the venv, and the requirements step's message says which and why."""
    if venv_lock.locked():
        return
    async with venv_lock:
        try:
            replaced = await user_installs.install_what_ui_packages_need(
                layout, installer, env, reporter
            )
        except JobError as error:
            replaced = f"could not install what your packages need: {error}"
    if replaced:
        previous = reporter.message("requirements")
        reporter.step_progress("requirements", f"{previous}; {replaced}" if previous else replaced)


async def watch_venv(
    layout: StateLayout,
    python: Path,
    reporter: StepTracker,
    venv_lock: asyncio.Lock,
    repair: Callable[[], Awaitable[None]],
    interval: float = 2.0,
) -> None:
    """Notice a venv that vanished or broke under a running marimo (``rm -rf``, a full disk
    that truncated it): say so and ``repair()`` (which restarts marimo on the repaired venv,
    with a watcher of its own); this watcher then ends."""
    while True:
        await asyncio.sleep(interval)
        intact = python.exists() and layout.venv.joinpath("pyvenv.cfg").is_file()
        if intact or venv_lock.locked():
            continue
        reporter.step_running(
            "venv", f"The venv at {layout.venv} vanished while marimo ran: repairing it"
        )
        reporter.log("venv", "orchestrator", f"{python} is gone: repairing the venv")
        await repair()
        return


class Watchers:
    """The pipeline's background tasks (see the module)."""

    def __init__(
        self,
        settings: JobSettings,
        reporter: StepTracker,
        steps: EnvironmentSteps,
        venv_lock: asyncio.Lock,
        *,
        on_change: Callable[[], None],
        reinstall: Callable[[str], Awaitable[None]],
        repair: Callable[[], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.reporter = reporter
        self._steps = steps
        self._venv_lock = venv_lock
        self._env = dict(settings.env)
        self._on_change = on_change
        self._reinstall = reinstall
        self._repair = repair
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._venv_watch: asyncio.Task[None] | None = None
        self._space_wait: asyncio.Task[None] | None = None

    def start(
        self,
        layout: StateLayout,
        installer: Installer,
        python: Path,
        *,
        ledger_too: bool,
        replicas: Replicas | None,
    ) -> None:
        """The watchers, once per pipeline (``ledger_too``: the Install button's ledger); the
        venv's anew for each marimo (when it runs from ``layout``'s venv)."""
        if not self._started:
            self._started = True
            if ledger_too:
                self.spawn(
                    watch_ledger(
                        layout,
                        installer,
                        self.settings.requirements,
                        self._env,
                        self.reporter,
                        self._venv_lock,
                        on_change=self._on_change,
                        interval=1.0 if layout.local is not None else 5.0,
                        declared=lambda: declared_job.declared_names(self._steps.declared()),
                    )
                )
            if replicas is not None:
                self.spawn(replicas.watch(installer, self._venv_lock))
            else:
                self.spawn(
                    watch_declared(
                        self._steps.declared,
                        self.reporter,
                        self._reinstall,
                        baseline=self._steps.last_read,
                    )
                )
        if self._venv_watch is not None:
            self._venv_watch.cancel()
        if python == layout.venv_python:
            self._venv_watch = self.spawn(
                watch_venv(layout, python, self.reporter, self._venv_lock, self._repair)
            )

    def install_once_space_is_freed(self, layout: StateLayout, installer: Installer) -> None:
        """The requirements failed for a full disk: install again once space is freed, as long
        as the last install failed that way (one wait at a time; a click may win the race)."""
        if self._space_wait is not None and not self._space_wait.done():
            return  # that wait goes on with a new level after this failure
        cache = layout.uv_cache if installer.name == "uv" else layout.pip_cache
        paths = [layout.run_root, cache, scratch.temp_root()]

        async def wait_then_install() -> None:
            while self._steps.full_disk is not None:
                freed = await free_space.wait_for_space(paths)
                if self._steps.full_disk is None:
                    return  # installed meanwhile (Reinstall requirements)
                reason = f"Space was freed ({freed}): installing again"
                self.reporter.log("requirements", "orchestrator", reason)
                await self._reinstall(reason)

        self._space_wait = self.spawn(wait_then_install())

    def spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        """``work`` as a task that never raises into the pipeline (a failure is logged)."""

        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a watcher must never take marimo down with it
                self.reporter.log(None, "orchestrator", f"background job failed: {error!r}")

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
