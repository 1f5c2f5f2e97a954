"""The narrow interface through which jobs tell the world what they are doing."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

StepName = Literal["state", "venv", "requirements", "marimo"]
STEP_NAMES: tuple[StepName, ...] = ("state", "venv", "requirements", "marimo")
Outcome = Literal["done", "skipped", "failed"]


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

    def step_finished(self, step: StepName, outcome: Outcome, message: str) -> None:
        """Final word on the step for this run of the pipeline."""

    def log(self, step: StepName | None, source: str, line: str) -> None:
        """One line of output; ``source`` names its origin (``uv``, ``pip``, ``marimo``, …)."""

    def state_resolved(self, path: Path, persistent: bool, warning: str | None) -> None:
        """Where state lives for this run; ``persistent`` is False for the ephemeral fallback."""

    def marimo_up(self, pid: int, host: str, port: int, token: str) -> None:
        """marimo answers ``/health`` at host:port and accepts ``Authorization: Bearer token``."""

    def marimo_down(self, reason: str, restarts: int, last_output: list[str]) -> None:
        """marimo stopped being reachable (exit, crash, deliberate stop)."""
