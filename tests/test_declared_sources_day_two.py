"""Declared sources, day two: an app served in run mode gets its notebook's header packages; a
constraints file edited while marimo runs is installed live; a header range that
requirements.txt cannot satisfy fails the step, marimo keeps serving, and a fix recovers without
a restart (an exact pin gives way to requirements.txt instead: tests/test_record_installs.py).

Real orchestrators in Quix's layout, real marimo and uv, wheels built here and served by the
local index.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from jobs.layout import StateLayout
from tests.support.notebooks import NOTEBOOK
from tests.support.orchestrator import Orchestrator, OrchestratorFactory
from tests.support.wheels import build_wheel


@pytest.fixture(scope="module")
def wheelhouse(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared wheels plus two versions of ``orch-delta``, in a folder of this module's own
    (the session's wheelhouse is left as it is)."""
    directory = tmp_path_factory.mktemp("wheels-day-two")
    for wheel in wheelhouse.glob("*.whl"):
        shutil.copy(wheel, directory)
    build_wheel(directory, "orch-delta", "1.0")
    build_wheel(directory, "orch-delta", "2.0")
    return directory


def header(*dependencies: str) -> str:
    listed = "".join(f'#     "{dep}",\n' for dep in dependencies)
    return f"# /// script\n# dependencies = [\n{listed}# ]\n# ///\n"


def venv_prints(state: Path, code: str) -> str:
    done = subprocess.run(
        [str(StateLayout(state).venv_python), "-c", code], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def finished_after(run: Orchestrator, since: float, what: str) -> dict[str, Any]:
    """The status once the requirements step finished again after ``since`` (a wall clock)."""
    return run.wait_for(
        lambda s: (
            run.step(s, "requirements")["status"] in ("done", "skipped", "failed")
            and (run.step(s, "requirements")["finished_at"] or 0) > since
        ),
        what=what,
    )


def app_output(run: Orchestrator, timeout: float = 60) -> str:
    """The app ``notebook.py``'s cell output (run mode) as a viewer's browser receives it over
    marimo's socket: the first cell output showing orch-alpha, or an error."""
    deadline = time.monotonic() + timeout
    session = f"s_{os.urandom(4).hex()}"
    url = f"{run.base.replace('http', 'ws')}/ws?session_id={session}&file=notebook.py"
    seen: list[str] = []
    with connect(url, open_timeout=30, additional_headers=run.auth) as socket_:
        while time.monotonic() < deadline:
            message = str(socket_.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if json.loads(message).get("op") != "cell-op":
                continue
            seen.append(message)
            if "orch-alpha" in message or "marimo+error" in message:
                return message
    raise AssertionError(f"the app never rendered on {run.base}: {seen[-5:]}")


def test_run_mode_serves_an_app_whose_header_packages_import_with_no_click(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    """No requirements.txt: the notebook's header alone declares orch-alpha, which its cell
    imports and shows (orch_alpha.NAME, "orch-alpha"); a viewer of the app sees it rendered."""
    (notebook_dir / "notebook.py").write_text(header("orch-alpha") + NOTEBOOK)
    run = orchestrator(notebook_dir, None, "--marimo-mode", "run")
    status = run.wait_ready()
    step = run.step(status, "requirements")
    assert step["status"] == "done" and "notebook.py" in step["message"], step
    rendered = app_output(run)
    assert "orch-alpha" in rendered and "marimo+error" not in rendered, rendered
    assert run.terminate() == 0


def test_a_constraints_file_edited_while_running_is_installed_live(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    state = notebook_dir / "state"
    (notebook_dir / "requirements.txt").write_text("-c constraints.txt\norch-delta\n")
    constraints = notebook_dir / "constraints.txt"
    constraints.write_text("orch-delta==1.0\n")
    run = orchestrator(notebook_dir)
    status = run.wait_for(
        lambda s: s["ready"] and run.step(s, "requirements")["status"] in ("done", "failed"),
        what="ready with the requirements installed",
    )
    assert run.step(status, "requirements")["status"] == "done", status
    assert venv_prints(state, "import orch_delta; print(orch_delta.VERSION)") == "1.0"
    boot = status["boot_id"]

    edited_at = time.time()
    constraints.write_text("orch-delta==2.0\n")  # only the constraints file changes
    status = finished_after(run, edited_at, "the edited constraint installed")
    assert run.step(status, "requirements")["status"] == "done", status
    assert status["boot_id"] == boot and status["ready"], "no restart of the orchestrator"
    assert "constraints.txt changed: installing" in run.log_text()
    # The notebook's first import (in a kernel that had not imported it: an already-imported
    # module stays what it was until the kernel restarts) gets the new version.
    assert run.kernel_output("import orch_delta\nprint(orch_delta.VERSION)").strip() == "2.0"
    assert run.terminate() == 0


def test_a_header_range_against_requirements_fails_marimo_serves_and_a_fix_recovers(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    state = notebook_dir / "state"
    # A range: written by a person (marimo writes exact pins, which give way to requirements.txt).
    (notebook_dir / "notebook.py").write_text(header("orch-gamma>=3") + NOTEBOOK)
    requirements = notebook_dir / "requirements.txt"
    requirements.write_text("orch-alpha\n")
    run = orchestrator(notebook_dir)
    status = run.wait_for(
        lambda s: s["ready"] and run.step(s, "requirements")["status"] in ("done", "failed"),
        what="ready with the requirements installed",
    )
    assert run.step(status, "requirements")["status"] == "done", status
    boot, marimo_pid = status["boot_id"], status["marimo"]["pid"]

    edited_at = time.time()
    requirements.write_text("orch-alpha\norch-gamma==2.0\n")
    status = finished_after(run, edited_at, "the conflict reported")
    step = run.step(status, "requirements")
    assert step["status"] == "failed", step
    for words in ("notebook.py", "requirements.txt", "orch-gamma>=3", "orch-gamma==2.0"):
        assert words in step["message"], step["message"]
    code, _, _ = run.get("/-/ready")
    assert code == 200, "marimo keeps serving while the sources conflict"
    assert status["marimo"]["pid"] == marimo_pid, "marimo was not restarted"
    # The last good environment stays: what the header brought is what the kernel imports.
    assert run.kernel_output("import orch_gamma\nprint(orch_gamma.VERSION)").strip() == "3.0"
    assert run.get("/-/ready")[0] == 200

    fixed_at = time.time()
    requirements.write_text("orch-alpha\norch-gamma>=3\n")
    status = finished_after(run, fixed_at, "recovered after the fix")
    step = run.step(status, "requirements")
    assert step["status"] == "done", step
    assert status["boot_id"] == boot and status["ready"], "recovered without a restart"
    assert status["phase"] == "ready", status["phase"]
    assert "requirements.txt changed: installing" in run.log_text()
    assert venv_prints(state, "import orch_gamma; print(orch_gamma.VERSION)") == "3.0"
    assert run.terminate() == 0
