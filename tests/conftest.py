"""Shared fixtures: wheels built here, a local index on 127.0.0.1, the real orchestrator."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from jobs.reporting import MarimoExit
from tests.support.index import LocalIndex
from tests.support.orchestrator import Orchestrator, hermetic_env, quix_layout_env
from tests.support.quix_portal import FakeQuixPortal
from tests.support.wheels import build_wheel

NOTEBOOK = """import marimo

app = marimo.App()


@app.cell
def _():
    import orch_alpha
    orch_alpha.NAME
    return


if __name__ == "__main__":
    app.run()
"""


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("wheels")
    build_wheel(directory, "orch-alpha", "1.0")
    build_wheel(directory, "orch-beta", "2.0", requires=("orch-alpha>=1.0",))
    build_wheel(directory, "orch-slow", "1.0")
    build_wheel(directory, "orch-gamma", "3.0")
    build_wheel(directory, "orch-needs-packaging", "1.0", requires=("packaging>=20",))
    build_wheel(directory, "orch-needs-new-packaging", "1.0", requires=("packaging>=999",))
    build_wheel(directory, "packaging", "999.0", module_source="VERSION = '999.0'\n")
    return directory


@pytest.fixture
def index(wheelhouse: Path) -> Iterator[LocalIndex]:
    with LocalIndex(wheelhouse) as served:
        yield served


@pytest.fixture
def notebook_dir(tmp_path: Path) -> Path:
    """Quix's /app: the notebook folder, which the state volume is mounted inside by default."""
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / "notebook.py").write_text(NOTEBOOK, encoding="utf-8")
    return directory


OrchestratorFactory = Callable[..., Orchestrator]


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


@pytest.fixture
def orchestrator(tmp_path: Path, index: LocalIndex) -> Iterator[OrchestratorFactory]:
    """Start real orchestrators; every one is ended, with its whole process tree, at teardown.

    By default in Quix's layout: the state folder inside the notebook folder (``app/state``),
    mounted (created) as Quix mounts its volume, ``Quix__*`` set for a fake portal, so notebook
    sync is on. Sign-in stays the test's: token mode unless the test passes ``--auth`` or its own
    portal's ``env``. ``quix=False`` runs outside Quix (the state in ``tmp_path/state``); a test
    passing ``--wait-for-state`` makes its state folder appear itself.
    """
    started: list[Orchestrator] = []
    portals: list[FakeQuixPortal] = []
    # One deployment, one ORCHESTRATOR_TOKEN: a restart within a test keeps it, as a real one does.
    deployment_token = "test-token-" + secrets.token_hex(8)

    def start(
        notebook_dir: Path,
        state_dir: Path | None = None,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        quix: bool = True,
    ) -> Orchestrator:
        log_path = tmp_path / f"orchestrator-{len(started)}.log"
        env = dict(env or {})
        if quix and "Quix__Portal__Api" not in env:
            state_dir = state_dir or notebook_dir / "state"
            if not portals:
                portals.append(FakeQuixPortal().__enter__())
            portal = portals[0]
            portal.state.allowed_tokens.add(portal.env()["Quix__Sdk__Token"])
            # Sign-in stays the test's (token mode; --auth on the command line wins).
            env = {**quix_layout_env(portal.env(), state_dir), "ORCHESTRATOR_AUTH": "token", **env}
            if "--wait-for-state" not in args:
                state_dir.mkdir(parents=True, exist_ok=True)  # the volume Quix mounts
        process = Orchestrator(
            notebook_dir,
            state_dir or tmp_path / "state",
            log_path,
            hermetic_env({**index.env(), **env}),
            args,
            port,
            token=deployment_token,
        )
        started.append(process)
        return process

    yield start
    index.control.release_all()
    for process in started:
        process.kill_everything()
    for portal in portals:
        portal.__exit__()
