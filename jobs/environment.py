"""The ``venv`` and ``requirements`` steps on one environment folder (a :class:`StateLayout`):
what marimo runs from, checked, built or rebuilt, with the requirements and the user's packages
installed into it.

Where that folder is (the state folder, its ephemeral fallback, a generation of a shared one)
is for the caller to say; nothing here chooses or remembers a layout.

Invariants: a venv that is rebuilt always gets the user's packages back from the ledger, even
when the requirements fail; the marimo started early (jobs/head_start.py) is ended before
anything it runs from changes (``drop_head_start``); a failed step is reported here with what it
means for marimo, and never raises past these methods; a requirements step that failed for a
full disk says how it recovers, and ``on_full_disk`` is told (the pipeline then installs again
once space is freed: jobs/free_space.py); :attr:`EnvironmentSteps.full_disk` is set exactly
while the last requirements step failed that way.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from jobs import declared_install as declared_job
from jobs import ledger, local_env, user_installs
from jobs import requirements as requirements_job
from jobs import venv as venv_job
from jobs.blocking import off_loop
from jobs.errors import DiskFullError, JobError
from jobs.free_space import RECOVERY
from jobs.installers import Installer
from jobs.interpreter import Interpreter
from jobs.layout import StateLayout
from jobs.reporting import StepTracker
from jobs.retry import POLICIES, run_step
from jobs.script_headers import HeaderCache
from jobs.settings import JobSettings
from jobs.sources import Declared


class EnvironmentSteps:
    """The venv and requirements steps, reporting to ``reporter``."""

    def __init__(
        self,
        settings: JobSettings,
        reporter: StepTracker,
        drop_head_start: Callable[[str], Awaitable[None]],
        on_full_disk: Callable[[StateLayout, Installer], None] = lambda layout, installer: None,
    ) -> None:
        self.settings = settings
        self._on_full_disk = on_full_disk
        self.full_disk: DiskFullError | None = None
        """The last requirements step failed for lack of disk space (None: it did not)."""
        self.reporter = reporter
        self._drop_head_start = drop_head_start
        self._env = dict(settings.env)
        self.snapshot_warning: str | None = None
        """Why the volume's snapshot could not be used at the last restore, if it could not."""
        self.restored_seconds: float | None = None
        """How long the last restore from the snapshot took, if one was restored."""
        self.before_rebuild: Callable[[str], Awaitable[None]] | None = None
        """Awaited with the reason before a venv is built anew (not restored): whatever runs
        from the venv's path must stop first (jobs/runner.py, serving while restoring)."""
        self.last_read: Declared | None = None
        """The sources as the requirements step last read them: what the live watcher compares
        with, so an edit made between that read and the watcher's start is installed too."""
        self.headers = HeaderCache()
        """The notebooks' headers, shared by the step and the watcher: each notebook is read
        again only when its size or mtime changed."""
        self.installed: Declared | None = None
        """The sources as the last successful requirements step read them (what a live install
        compares with to say which header lines are new)."""

    def declared(self) -> Declared:
        """Every declared source as it is now (blocking: reads files)."""
        return declared_job.gather(
            self.settings.notebook_dir,
            self.settings.requirements,
            self._env,
            self.headers,
            [self.settings.state_dir, self.settings.env_dir],
        )

    async def build(
        self, layout: StateLayout, installer: Installer, force: bool = False
    ) -> Path | None:
        """The venv checked (rebuilt if needed) and the requirements installed into it: the
        venv's interpreter, or ``None`` when there is no venv to run from."""
        python, rebuilt = await self.venv(layout, installer)
        if python is not None:
            await self.requirements(layout, installer, restore=rebuilt, force=force)
        return python

    async def venv(self, layout: StateLayout, installer: Installer) -> tuple[Path | None, bool]:
        """The venv's interpreter (``None``: no venv can be built) and whether it was rebuilt."""
        self.reporter.step_running("venv", f"Checking the venv at {layout.venv}")
        rebuilt = False

        async def attempt() -> str:
            nonlocal rebuilt
            reason = await venv_job.why_unusable(layout, Interpreter.current(), self._env)
            if not reason:
                return f"Reusing the venv at {layout.venv}"
            await self._drop_head_start(f"the venv must be rebuilt ({reason})")
            rebuilt = True
            return await self._build_venv(layout, installer, reason)

        try:
            message = await run_step("venv", attempt, self.reporter, POLICIES["venv"])
        except JobError as error:
            self._venv_failed(error)
            self.reporter.step_finished("requirements", "skipped", "no venv to install into")
            return None, False
        self.reporter.step_finished("venv", "done", message)
        return layout.venv_python, rebuilt

    async def rebuild(
        self, layout: StateLayout, installer: Installer, reason: str, force: bool
    ) -> Path:
        """The venv rebuilt at once (no retry), then the requirements and the user's packages
        installed into it: its interpreter, or the image's when it cannot be built. Nothing may
        run from the venv meanwhile (the caller stops marimo first)."""
        self.reporter.step_running("venv", f"Rebuilding the venv: {reason}")
        try:
            message = await self._build_venv(layout, installer, reason)
        except JobError as error:
            self._venv_failed(error)
            return Path(sys.executable)
        self.reporter.step_finished("venv", "done", message)
        await self.requirements(layout, installer, restore=True, force=force)
        return layout.venv_python

    async def _build_venv(self, layout: StateLayout, installer: Installer, reason: str) -> str:
        """A venv in place: restored from the volume's snapshot when the venv runs from local
        disk and one fits, else built anew (the requirements step then installs into it)."""
        if layout.local is not None:
            await off_loop(ledger.rescue, layout, self.settings.requirements)
            restored = await local_env.restore(layout, self.reporter)
            if restored.warning is not None:
                self.snapshot_warning = restored.warning
                self.reporter.log("venv", "orchestrator", restored.warning)
            if restored.seconds is not None:
                self.restored_seconds = restored.seconds
                if not await venv_job.why_unusable(layout, Interpreter.current(), self._env):
                    return restored.message
                reason = "the restored snapshot does not run"
            else:
                reason = f"{reason}; {restored.message}"
        if self.before_rebuild is not None:
            await self.before_rebuild(reason)
        return await venv_job.build(
            layout, installer, self._env, self.reporter, self.settings.requirements, reason
        )

    def _venv_failed(self, error: JobError) -> None:
        self.reporter.step_finished(
            "venv", "failed", f"{error}; marimo runs from the image's Python without Install"
        )

    async def requirements(
        self,
        layout: StateLayout,
        installer: Installer,
        restore: bool,
        force: bool = False,
        reason: str | None = None,
    ) -> bool:
        """True when the declared dependencies (and, with ``restore``, the user's packages from
        the ledger, restored even when the requirements failed) are installed. ``reason`` (what
        changed) opens the step's message."""
        path = self.settings.requirements
        self.reporter.step_running("requirements", reason or f"Checking {path}")

        read: list[Declared] = []

        async def attempt() -> requirements_job.InstallOutcome:
            declared = await off_loop(self.declared)
            read[:] = [declared]
            self.last_read = declared
            named = declared_job.describe(declared)
            return await requirements_job.install(
                path,
                layout,
                installer,
                self._env,
                self.reporter,
                force=force,
                before_change=lambda: self._drop_head_start(f"{named} must be installed"),
                declared=declared,
                previous=self.installed,
            )

        async def restore_attempt() -> str:
            return await user_installs.restore_user_packages(
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
        if restore:
            try:
                restored = await run_step(
                    "requirements", restore_attempt, self.reporter, POLICIES["requirements"]
                )
            except JobError as error:
                failure = failure or JobError(
                    f"could not restore your packages: {error}", error.detail
                )
        self.full_disk = failure if isinstance(failure, DiskFullError) else None
        if self.full_disk is not None:
            self.reporter.step_finished(
                "requirements", "failed", f"{failure}; {RECOVERY}", detail=self.full_disk.detail
            )
            self._on_full_disk(layout, installer)
            return False
        if failure is not None or outcome is None:
            detail = failure.detail if failure is not None else ""
            self.reporter.step_finished("requirements", "failed", str(failure), detail=detail)
            return False
        self.installed = read[0] if read else self.installed
        if restored:  # the installer ran, if only for the user's packages
            base = outcome.message if outcome.kind == "installed" else "Requirements unchanged"
            self.reporter.step_finished(
                "requirements", "done", f"{base}{restored}", changes=outcome.changes
            )
        else:
            # A source changed under a running marimo: say what that brought, for which file.
            told = f"; {outcome.summary}" if reason is not None and outcome.summary else ""
            self.reporter.step_finished(
                "requirements",
                "done" if outcome.kind == "installed" else "skipped",
                f"{outcome.message}{told}",
                changes=outcome.changes,
            )
        return True
