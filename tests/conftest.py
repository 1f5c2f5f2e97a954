"""Shared fixtures: wheels built here, a local index on 127.0.0.1, the real orchestrator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.index import LocalIndex
from tests.support.orchestrator import Orchestrator, hermetic_env
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
    return directory


@pytest.fixture
def index(wheelhouse: Path) -> Iterator[LocalIndex]:
    with LocalIndex(wheelhouse) as served:
        yield served


@pytest.fixture
def notebook_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "notebooks"
    directory.mkdir()
    (directory / "notebook.py").write_text(NOTEBOOK, encoding="utf-8")
    return directory


OrchestratorFactory = Callable[..., Orchestrator]


@pytest.fixture
def orchestrator(tmp_path: Path, index: LocalIndex) -> Iterator[OrchestratorFactory]:
    """Start real orchestrators; every one is ended, with its whole process tree, at teardown."""
    started: list[Orchestrator] = []

    def start(
        notebook_dir: Path,
        state_dir: Path | None = None,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> Orchestrator:
        log_path = tmp_path / f"orchestrator-{len(started)}.log"
        process = Orchestrator(
            notebook_dir,
            state_dir or tmp_path / "state",
            log_path,
            hermetic_env({**index.env(), **(env or {})}),
            args,
        )
        started.append(process)
        return process

    yield start
    index.control.release_all()
    for process in started:
        process.kill_everything()
