"""The narrow interface through which jobs tell the world what they are doing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

StepName = Literal["state", "venv", "requirements", "marimo"]
STEP_NAMES: tuple[StepName, ...] = ("state", "venv", "requirements", "marimo")
Outcome = Literal["done", "skipped", "failed"]
MarimoExit = Literal["requested", "stopping", "crash", "hang"]
"""Why marimo went down: a restart someone asked for, the orchestrator stopping, marimo
ending on its own (crash or exit), or marimo no longer answering (hung: it is killed)."""


class Reporter(Protocol):
    """Implemented by the status board. Every method returns at once and never raises."""

    def step_running(self, step: StepName, message: str) -> None:
        """The step started (or started again after a retry)."""

    def step_progress(self, step: StepName, message: str, fraction: float | None = None) -> None:
        """``fraction`` is 0..1 when known; ``None`` keeps an indeterminate bar."""

    def step_expected(self, step: StepName, seconds: float) -> None:
        """How long the step took last time: the basis of the ETA users see."""

    def step_retrying(
        self, step: StepName, attempt: int, max_attempts: int, delay: float, error: str
    ) -> None:
        """Attempt ``attempt`` failed with a transient error; the next one starts in ``delay`` s."""

    def step_finished(
        self,
        step: StepName,
        outcome: Outcome,
        message: str,
        *,
        changes: dict[str, Any] | None = None,
        detail: str = "",
    ) -> None:
        """Final word on the step for this run of the pipeline. ``changes``: what the run
        changed in the venv's packages (the requirements step; jobs/install_summary.py
        ``changes``), ``None`` when unknown. ``detail``: a failing tool's own words
        (:attr:`jobs.errors.JobError.detail`), kept apart from ``message``."""

    def log(self, step: StepName | None, source: str, line: str) -> None:
        """One line of output; ``source`` names its origin (``uv``, ``pip``, ``marimo``, …)."""

    def state_resolved(self, path: Path, persistent: bool, warning: str | None) -> None:
        """Where state lives for this run; ``persistent`` is False for the ephemeral fallback."""

    def environment_changed(self, environment: dict[str, Any]) -> None:
        """Where the Python packages live and the state of their snapshot on the volume
        (``/-/status``'s ``environment``, shape in README); replaces what was said before."""

    def kernels_held(self, held: bool) -> None:
        """While True, marimo serves from a skeleton of the venv being restored: requests that
        would start a kernel or use the packages must wait (proxy/hold.py)."""

    def user_packages(self, packages: Mapping[str, str]) -> None:
        """The packages a user added to the venv (marimo's Install button, a terminal), name →
        version, as the ledger has them now (jobs/ledger.py); replaces what was said before."""

    def marimo_up(self, pid: int, host: str, port: int, token: str) -> None:
        """marimo answers ``/health`` at host:port and accepts ``Authorization: Bearer token``."""

    def marimo_down(
        self, reason: str, restarts: int, last_output: list[str], kind: MarimoExit
    ) -> None:
        """marimo stopped being reachable; ``kind`` says why (``reason`` says it to people)."""

    def draining(self) -> int:
        """How many requests and WebSockets are still open toward marimos that a later
        :meth:`marimo_up` replaced while they were up (a switch); 0 when there are none."""
        return 0


class StepTracker:
    """A :class:`Reporter` that passes everything on and remembers where each step stands, so
    the pipeline can fail exactly the steps an unexpected crash left unfinished."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self._status: dict[StepName, str] = {name: "pending" for name in STEP_NAMES}
        self._message: dict[StepName, str] = {name: "" for name in STEP_NAMES}

    def status(self, step: StepName) -> str:
        """``pending``, ``running`` or the last :data:`Outcome`."""
        return self._status[step]

    def message(self, step: StepName) -> str:
        """The step's last message, as passed on."""
        return self._message[step]

    def step_running(self, step: StepName, message: str) -> None:
        self._status[step] = "running"
        self._message[step] = message
        self.inner.step_running(step, message)

    def step_progress(self, step: StepName, message: str, fraction: float | None = None) -> None:
        self._message[step] = message
        self.inner.step_progress(step, message, fraction)

    def step_expected(self, step: StepName, seconds: float) -> None:
        self.inner.step_expected(step, seconds)

    def step_retrying(
        self, step: StepName, attempt: int, max_attempts: int, delay: float, error: str
    ) -> None:
        self.inner.step_retrying(step, attempt, max_attempts, delay, error)

    def step_finished(
        self,
        step: StepName,
        outcome: Outcome,
        message: str,
        *,
        changes: dict[str, Any] | None = None,
        detail: str = "",
    ) -> None:
        self._status[step] = outcome
        self._message[step] = message
        self.inner.step_finished(step, outcome, message, changes=changes, detail=detail)

    def log(self, step: StepName | None, source: str, line: str) -> None:
        self.inner.log(step, source, line)

    def state_resolved(self, path: Path, persistent: bool, warning: str | None) -> None:
        self.inner.state_resolved(path, persistent, warning)

    def environment_changed(self, environment: dict[str, Any]) -> None:
        self.inner.environment_changed(environment)

    def kernels_held(self, held: bool) -> None:
        self.inner.kernels_held(held)

    def user_packages(self, packages: Mapping[str, str]) -> None:
        self.inner.user_packages(packages)

    def marimo_up(self, pid: int, host: str, port: int, token: str) -> None:
        self.inner.marimo_up(pid, host, port, token)

    def marimo_down(
        self, reason: str, restarts: int, last_output: list[str], kind: MarimoExit
    ) -> None:
        if self._status["marimo"] == "done":  # as the board does: marimo is being brought back
            self._status["marimo"] = "running"
        self.inner.marimo_down(reason, restarts, last_output, kind)

    def draining(self) -> int:
        return self.inner.draining()
