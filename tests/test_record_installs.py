"""What marimo's Install button installs is recorded in the notebook that asked for it (its PEP 723
header, by marimo itself with ``MARIMO_MANAGE_SCRIPT_METADATA``), so the repository declares
it: a declared dependency, not a "user package" of the ledger. ``--no-record-installs`` and
``--installer pip`` leave the notebook alone. A source edited while marimo runs is installed
in the background and the status says which package it installed for which file.

Real orchestrators in Quix's layout, real marimo and uv, wheels from the local index.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from jobs.installers import resolve_installer
from jobs.layout import StateLayout
from jobs.marimo_command import MANAGE_SCRIPT_METADATA, marimo_environment, records_installs
from tests.conftest import NOTEBOOK, OrchestratorFactory
from tests.support.orchestrator import Orchestrator


def ledger(state: Path) -> dict[str, Any]:
    return dict(json.loads(StateLayout(state).ledger.read_text(encoding="utf-8")))


def header_of(notebook: Path) -> str:
    text = notebook.read_text(encoding="utf-8")
    return text.split("# ///\n", 1)[0] if text.startswith("# /// script") else ""


def finished_after(run: Orchestrator, since: float, what: str) -> dict[str, Any]:
    """The status once the requirements step finished again after ``since`` (a wall clock)."""
    return run.wait_for(
        lambda s: (
            run.step(s, "requirements")["status"] in ("done", "skipped", "failed")
            and (run.step(s, "requirements")["finished_at"] or 0) > since
        ),
        what=what,
    )


def test_marimo_records_only_in_edit_mode_with_uv_and_when_asked(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path)
    uv, pip = resolve_installer("uv"), resolve_installer("pip")
    assert records_installs(True, "edit", uv)
    assert not records_installs(False, "edit", uv)
    assert not records_installs(True, "run", uv)
    assert not records_installs(True, "edit", pip)
    inherited = {"PATH": "/usr/bin", MANAGE_SCRIPT_METADATA: "true"}
    python = tmp_path / "venv" / "bin" / "python"
    on = marimo_environment(inherited, python, layout, uv, record_installs=True)
    off = marimo_environment(inherited, python, layout, pip, record_installs=False)
    assert on[MANAGE_SCRIPT_METADATA] == "true"
    assert MANAGE_SCRIPT_METADATA not in off, "an inherited setting never overrides ours"


def test_an_install_button_install_lands_in_the_header_not_in_the_ledger(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    notebook = notebook_dir / "notebook.py"
    state = notebook_dir / "state"
    run = orchestrator(notebook_dir, None, "--record-installs")
    run.wait_ready()
    clicked = time.time()
    with run.open_session() as session:
        assert run.marimo_install("orch-gamma", session)["success"] is True
    assert '"orch-gamma==3.0"' in header_of(notebook), notebook.read_text()
    assert "orch_alpha.NAME" in notebook.read_text(), "the cells are untouched"
    # The header is a declared source: the requirements step runs for it, and what it asks
    # for is the orchestrator's (the baseline), never the user's.
    status = finished_after(run, clicked, "the requirements step ran for the new header")
    step = run.step(status, "requirements")
    assert step["status"] == "done" and "notebook.py" in step["message"], step
    recorded = ledger(state)
    assert "orch-gamma" not in recorded["user"], recorded
    assert recorded["baseline"].get("orch-gamma") == "3.0", recorded
    assert run.kernel_output("import orch_gamma\nprint(orch_gamma.VERSION)").strip() == "3.0"
    assert run.terminate() == 0


def test_with_recording_off_the_notebook_is_left_alone_and_the_package_is_the_users(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    notebook = notebook_dir / "notebook.py"
    run = orchestrator(notebook_dir, None, "--installer", "pip", "--record-installs")
    run.wait_ready()
    assert "not recorded in the notebook's header" in run.log_text()
    with run.open_session() as session:
        assert run.marimo_install("orch-gamma", session)["success"] is True
    assert notebook.read_text() == NOTEBOOK
    run.wait_for(
        lambda s: "orch-gamma" in ledger(notebook_dir / "state").get("user", {}),
        what="the ledger keeps the package as the user's",
    )
    assert run.terminate() == 0


def test_a_header_edit_is_installed_in_the_background_and_the_status_says_for_which_notebook(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    notebook = notebook_dir / "notebook.py"
    run = orchestrator(notebook_dir, None, "--record-installs")
    run.wait_ready()
    edited = time.time()
    header = '# /// script\n# dependencies = ["orch-gamma"]\n# ///\n'
    notebook.write_text(header + NOTEBOOK, encoding="utf-8")  # saved from another editor
    status = finished_after(run, edited, "the header's package installed in the background")
    step = run.step(status, "requirements")
    assert step["status"] == "done", step
    assert "orch-gamma 3.0 installed for notebook.py" in step["message"], step
    assert run.kernel_output("import orch_gamma\nprint(orch_gamma.VERSION)").strip() == "3.0"
    assert run.terminate() == 0
