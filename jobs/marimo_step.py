"""The ``marimo`` step: marimo's supervisor made for one interpreter and environment, launched
under the step's retry policy (jobs/retry.py), then watched until it is given up or replaced;
and which marimo version an environment provides.

The pipeline (jobs/runner.py) decides when marimo starts, on which interpreter, and what
replaces it; this module only runs one marimo's step.

Invariants: the step is reported failed, with the supervisor's message, exactly when marimo is
given up (:func:`launch` or :func:`watch` then return False), done once marimo answers; a marimo
started early (jobs/head_start.py) is adopted by the supervisor instead of a new process being
started, and the log says so (with its pid, and whether kernels wait for a restore).
"""

from __future__ import annotations

from pathlib import Path

from jobs import ledger
from jobs.blocking import off_loop
from jobs.errors import JobError
from jobs.head_start import HeadStart
from jobs.installers import Installer
from jobs.layout import StateLayout
from jobs.marimo import MarimoSupervisor
from jobs.reporting import StepTracker
from jobs.retry import POLICIES, run_step
from jobs.settings import JobSettings


def visible_marimo(layout: StateLayout) -> str | None:
    """The marimo version the venv's interpreter imports: its own copy's, else the image's."""
    from jobs.image import image_distributions

    return ledger.scan(layout.venv).get("marimo") or image_distributions().get("marimo")


async def follow_version(
    supervisor: MarimoSupervisor, layout: StateLayout, known: str | None, reporter: StepTracker
) -> str | None:
    """After an install under a running marimo (``supervisor``, serving from ``layout``'s
    venv): the marimo version the venv provides now, marimo restarted on it (the log says why)
    when it is not ``known``."""
    now = await off_loop(visible_marimo, layout)
    if now != known:
        reason = f"marimo {known} → {now} after the install"
        reporter.log("marimo", "orchestrator", f"{reason}: restarting marimo")
        await supervisor.restart(f"{reason} (restart requested)")
    return now


def supervisor(
    settings: JobSettings,
    env: dict[str, str],
    reporter: StepTracker,
    layout: StateLayout,
    installer: Installer,
    python: Path,
    head_start: HeadStart | None,
) -> MarimoSupervisor:
    """marimo's supervisor on ``python`` (adopting ``head_start``, when given)."""
    made = MarimoSupervisor(
        notebook_dir=settings.notebook_dir,
        mode=settings.marimo_mode,
        python=python,
        layout=layout,
        installer=installer,
        base_env=env,
        reporter=reporter,
        ready_timeout=settings.marimo_ready_timeout,
        stable_after=settings.marimo_crash_window,
        head_start=head_start,
        user=settings.marimo_user,
        record_installs=settings.record_installs,
        liveness=settings.marimo_liveness,
        switching=settings.marimo_switch,
    )
    if head_start is not None:
        reporter.log(
            "marimo",
            "orchestrator",
            f"Serving the marimo started early (pid {head_start.popen.pid}): "
            + ("kernels wait for the restore" if head_start.skeleton else "nothing changed"),
        )
    return made


async def launch(supervisor: MarimoSupervisor, reporter: StepTracker) -> bool:
    """marimo started (or adopted) and answering: True; False when it was given up."""
    try:
        await run_step("marimo", supervisor.launch, reporter, POLICIES["marimo"])
    except JobError as error:
        reporter.step_finished("marimo", "failed", str(error))
        return False
    reporter.step_finished("marimo", "done", f"marimo is running (pid {supervisor.pid})")
    return True


async def watch(supervisor: MarimoSupervisor, reporter: StepTracker) -> bool:
    """marimo watched (and relaunched after crashes) until it is stopped: True; False when it
    was given up."""
    try:
        await supervisor.watch()
    except JobError as error:
        reporter.step_finished("marimo", "failed", str(error))
        return False
    return True
