"""The container tests: collected only by `make test-container` (container.mk), which installs
podman, builds the images and sets the variables below; a plain `make test` skips this folder."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.podman import TIMINGS, Podman
from tests.support.index import LocalIndex
from tests.support.wheels import build_wheel

ENABLED = os.environ.get("MARIMO_ORCHESTRATOR_CONTAINER_TESTS") == "1"
if not ENABLED:
    collect_ignore_glob = ["test_*.py"]

REPO = Path(__file__).resolve().parents[2]


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise pytest.UsageError(
            f"{name} is not set: run the container tests with make test-container"
        )
    return value


@pytest.fixture
def podman() -> Iterator[Podman]:
    """Every container a test starts is removed when that test ends, passed or failed."""
    runner = Podman(_required("CONTAINER_PODMAN"))
    try:
        yield runner
    finally:
        runner.remove_all()


@pytest.fixture(scope="session")
def example_image() -> str:
    return _required("CONTAINER_EXAMPLE_IMAGE")


@pytest.fixture(scope="session")
def container_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("container-wheels")
    build_wheel(directory, "orch-container-alpha", "1.0")
    build_wheel(directory, "orch-container-beta", "2.0")
    return directory


@pytest.fixture(scope="module")
def container_index(container_wheels: Path) -> Iterator[LocalIndex]:
    """A PEP 503 index on the host's 127.0.0.1: containers on the host network reach it."""
    with LocalIndex(container_wheels) as served:
        yield served


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("container timings")
    for what, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{seconds:8.2f}  {what}")
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "container-timings.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")
