"""Notebook edits are saved back to the Quix application's files: once, in order, through an
outage and across a restart (against the fake portal)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import OrchestratorFactory
from tests.support.orchestrator import Orchestrator
from tests.support.quix_portal import FakeQuixPortal

USER = "quix-user-token-0001"


@pytest.fixture
def portal() -> Iterator[FakeQuixPortal]:
    with FakeQuixPortal() as fake:
        fake.state.allowed_tokens.add(USER)
        yield fake


def start(
    orchestrator: OrchestratorFactory, notebook_dir: Path, portal: FakeQuixPortal, state: Path
) -> Orchestrator:
    run = orchestrator(
        notebook_dir, state, "--auth", "quix", "--sync-debounce", "0.5", env=portal.env()
    )
    run.token = USER
    run.wait_for(lambda s: s["sync"] is not None, timeout=60, what="sync watching")
    return run


def wait_files(portal: FakeQuixPortal, count: int, timeout: float = 30) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(portal.state.files) >= count:
            return list(portal.state.files)
        time.sleep(0.05)
    raise AssertionError(f"only {portal.state.files} arrived")


def test_edits_arrive_once_in_order_with_the_users_token(
    orchestrator: OrchestratorFactory, notebook_dir: Path, portal: FakeQuixPortal, tmp_path: Path
) -> None:
    run = start(orchestrator, notebook_dir, portal, tmp_path / "state")
    (notebook_dir / "notebook.py").write_text("# first edit\n")
    (notebook_dir / "second.py").write_text("# a new notebook\n")
    files = wait_files(portal, 2)
    assert files == [("notebook.py", "# first edit\n"), ("second.py", "# a new notebook\n")]
    pushes = [c for c in portal.state.calls if "/files/" in str(c["path"])]
    assert all(c["token"] == USER and c["x_version"] == "2.0" for c in pushes)
    status = run.wait_for(
        lambda s: s["sync"]["pending"] == [] and s["sync"]["last_sync_at"], what="synced"
    )
    assert status["sync"]["last_error"] is None
    assert len(portal.state.files) == 2, "each edit is pushed once"


def test_edits_survive_an_outage_and_a_restart(
    orchestrator: OrchestratorFactory, notebook_dir: Path, portal: FakeQuixPortal, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    run = start(orchestrator, notebook_dir, portal, state)
    portal.state.down = True
    (notebook_dir / "notebook.py").write_text("# written during the outage\n")
    status = run.wait_for(
        lambda s: (s["sync"]["last_error"] or "").startswith("could not push notebook.py"),
        what="error shown",
    )
    assert status["sync"]["pending"] == ["notebook.py"]
    assert run.terminate() == 0
    assert portal.state.files == []

    portal.state.down = False
    again = start(orchestrator, notebook_dir, portal, state)
    assert again.get("/-/status")[0] == 200  # a Quix user is signed in again
    assert wait_files(portal, 1) == [("notebook.py", "# written during the outage\n")]
    again.wait_for(
        lambda s: s["sync"]["pending"] == [] and s["sync"]["last_error"] is None, what="synced"
    )
    assert len(portal.state.files) == 1


def test_off_outside_quix(orchestrator: OrchestratorFactory, notebook_dir: Path) -> None:
    run = orchestrator(notebook_dir)
    status = run.wait_ready()
    assert status["sync"] is None
