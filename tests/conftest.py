"""Shared fixtures: wheels built here, a local index on 127.0.0.1, the real orchestrator."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.in_process import InProcess, InProcessFactory
from tests.support.index import LocalIndex
from tests.support.notebooks import NOTEBOOK
from tests.support.orchestrator import (
    Orchestrator,
    OrchestratorFactory,
    hermetic_env,
    quix_layout_env,
)
from tests.support.quix_portal import FakeQuixPortal
from tests.support.wheels import build_wheel


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


class Deployments:
    """What the ``orchestrator`` and ``in_process`` fixtures share: one deployment token per
    test (a restart within a test keeps it, as a real one does), Quix's layout by default and
    one fake portal for it."""

    def __init__(self) -> None:
        self.token = "test-token-" + secrets.token_hex(8)
        self.portals: list[FakeQuixPortal] = []

    def layout(
        self,
        notebook_dir: Path,
        state_dir: Path | None,
        args: tuple[str, ...],
        env: dict[str, str] | None,
        quix: bool,
        default_state: Path,
    ) -> tuple[Path, dict[str, str]]:
        """The state folder and the environment of one start (see ``orchestrator``)."""
        env = dict(env or {})
        if quix and "Quix__Portal__Api" not in env:
            state_dir = state_dir or notebook_dir / "state"
            if not self.portals:
                self.portals.append(FakeQuixPortal().__enter__())
            portal = self.portals[0]
            portal.state.allowed_tokens.add(portal.env()["Quix__Sdk__Token"])
            # Sign-in stays the test's (token mode; --auth on the command line wins).
            env = {**quix_layout_env(portal.env(), state_dir), "ORCHESTRATOR_AUTH": "token", **env}
            if "--wait-for-state" not in args:
                state_dir.mkdir(parents=True, exist_ok=True)  # the volume Quix mounts
        return state_dir or default_state, env

    def close(self) -> None:
        for portal in self.portals:
            portal.__exit__()


@pytest.fixture
def prepare_volume() -> Callable[[Path], None] | None:
    """Called with each state folder before an orchestrator starts on it (None: nothing). The
    browser tests give their volumes the compressed assets earlier tests made
    (tests/support/asset_copies.py)."""
    return None


@pytest.fixture
def orchestrator(
    tmp_path: Path, index: LocalIndex, prepare_volume: Callable[[Path], None] | None
) -> Iterator[OrchestratorFactory]:
    """Start real orchestrators; every one is ended, with its whole process tree, at teardown.

    By default in Quix's layout: the state folder inside the notebook folder (``app/state``),
    mounted (created) as Quix mounts its volume, ``Quix__*`` set for a fake portal, so notebook
    sync is on. Sign-in stays the test's: token mode unless the test passes ``--auth`` or its own
    portal's ``env``. ``quix=False`` runs outside Quix (the state in ``tmp_path/state``); a test
    passing ``--wait-for-state`` makes its state folder appear itself.

    A test using it is marked ``marimo`` (:func:`pytest_collection_modifyitems`).
    """
    started: list[Orchestrator] = []
    deployments = Deployments()

    def start(
        notebook_dir: Path,
        state_dir: Path | None = None,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        quix: bool = True,
    ) -> Orchestrator:
        log_path = tmp_path / f"orchestrator-{len(started)}.log"
        state, env = deployments.layout(
            notebook_dir, state_dir, args, env, quix, tmp_path / "state"
        )
        if prepare_volume is not None:
            prepare_volume(state)
        process = Orchestrator(
            notebook_dir,
            state,
            log_path,
            hermetic_env({**index.env(), **env}),
            args,
            port,
            token=deployments.token,
        )
        started.append(process)
        return process

    yield start
    index.control.release_all()
    for process in started:
        process.kill_everything()
    deployments.close()


@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[InProcessFactory]:
    """The orchestrator's web side in this process, in front of a stand-in marimo
    (tests/support/in_process.py): for what needs neither a venv nor marimo (sign-in, origins,
    Host rules, limits, sessions). Same arguments and defaults as ``orchestrator``; every one is
    stopped at teardown."""
    started: list[InProcess] = []
    deployments = Deployments()

    def start(
        notebook_dir: Path,
        state_dir: Path | None = None,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        quix: bool = True,
    ) -> InProcess:
        state, env = deployments.layout(
            notebook_dir, state_dir, args, env, quix, tmp_path / "state"
        )
        run = InProcess(notebook_dir, state, hermetic_env(env), args, port, token=deployments.token)
        started.append(run)
        return run

    yield start
    for run in started:
        run.terminate()
    deployments.close()


MARIMO_FIXTURES = frozenset({"orchestrator"})
"""Fixtures that start a real orchestrator (a venv, marimo): a test using one, directly or
through another fixture, is marked ``marimo``."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MARIMO_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.marimo)
