"""A Reporter (jobs/reporting.py) that keeps what it is told, for job-level tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobs.reporting import MarimoExit


class RecordingReporter:
    """A Reporter (jobs/reporting.py) that keeps what it is told, for job-level tests."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []
        self.lines: list[str] = []
        self.environments: list[dict[str, Any]] = []
        self.changes: list[dict[str, Any] | None] = []
        """Each finished step's ``changes`` (what an install changed), in order."""
        self.users: list[dict[str, str]] = []
        """Each report of the user's packages (the ledger watcher's)."""

    def step_running(self, step: str, message: str) -> None:
        self.events.append(("running", step, message))

    def step_progress(self, step: str, message: str, fraction: float | None = None) -> None:
        self.events.append(("progress", step, message))

    def step_expected(self, step: str, seconds: float) -> None:
        self.events.append(("expected", step, str(seconds)))

    def step_retrying(
        self, step: str, attempt: int, max_attempts: int, delay: float, error: str
    ) -> None:
        self.events.append(("retrying", step, str(attempt), error))

    def step_finished(
        self,
        step: str,
        outcome: str,
        message: str,
        *,
        changes: dict[str, Any] | None = None,
        detail: str = "",
    ) -> None:
        self.events.append((outcome, step, message))
        self.changes.append(changes)

    def log(self, step: str | None, source: str, line: str) -> None:
        self.lines.append(f"[{source}] {line}")

    def state_resolved(self, path: Path, persistent: bool, warning: str | None) -> None:
        self.events.append(("state", str(path), str(persistent)))

    def environment_changed(self, environment: dict[str, Any]) -> None:
        self.environments.append(dict(environment))

    def kernels_held(self, held: bool) -> None:
        self.events.append(("kernels_held", str(held)))

    def user_packages(self, packages: Mapping[str, str]) -> None:
        self.users.append(dict(packages))

    def marimo_up(self, pid: int, host: str, port: int, token: str) -> None:
        self.events.append(("up", str(pid)))

    def marimo_down(
        self, reason: str, restarts: int, last_output: list[str], kind: MarimoExit
    ) -> None:
        self.events.append(("down", reason))

    def draining(self) -> int:
        return 0
