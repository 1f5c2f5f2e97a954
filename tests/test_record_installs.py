"""What marimo's Install button installs is recorded in the notebook that asked for it (its PEP 723
header, by marimo itself with ``MARIMO_MANAGE_SCRIPT_METADATA``, on by default), so the
repository declares it: a declared dependency, not a "user package" of the ledger, and the
status says "… added to notebook.py's dependencies". Removing it in marimo's Packages pane
removes the line, and the next start does not bring it back. The pins marimo writes for the
requirements file's packages give way to requirements.txt when it changes. ``--no-record-installs``
and ``--installer pip`` leave the notebook alone. A source edited while marimo runs is installed
in the background and the status says which package it installed for which file.

Real orchestrators in Quix's layout, real marimo and uv, wheels from the local index.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from jobs import ledger as ledger_job
from jobs.installers import resolve_installer
from jobs.layout import StateLayout
from jobs.marimo_command import MANAGE_SCRIPT_METADATA, marimo_environment, records_installs
from tests.support.notebooks import NOTEBOOK
from tests.support.orchestrator import Orchestrator, OrchestratorFactory
from tests.support.wheels import build_wheel


@pytest.fixture(scope="module")
def wheelhouse(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared wheels plus two versions of ``orch-delta``, in a folder of this module's own."""
    directory = tmp_path_factory.mktemp("wheels-record")
    for wheel in wheelhouse.glob("*.whl"):
        shutil.copy(wheel, directory)
    build_wheel(directory, "orch-delta", "1.0")
    build_wheel(directory, "orch-delta", "2.0")
    return directory


def ledger(state: Path) -> dict[str, Any]:
    return dict(json.loads(StateLayout(state).ledger.read_text(encoding="utf-8")))


def header_of(notebook: Path) -> str:
    text = notebook.read_text(encoding="utf-8")
    return text.split("# ///\n", 1)[0] if text.startswith("# /// script") else ""


def venv_packages(state: Path) -> dict[str, str]:
    return ledger_job.scan(StateLayout(state).venv)


def wait_for_header(notebook: Path, words: str, timeout: float = 60) -> str:
    """The notebook's header once it holds ``words`` (marimo writes it in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if words in (header := header_of(notebook)):
            return header
        time.sleep(0.05)
    raise AssertionError(f"{notebook.name}'s header never held {words}: {notebook.read_text()}")


def finished_after(run: Orchestrator, since: float, what: str) -> dict[str, Any]:
    """The status once the requirements step finished again after ``since`` (a wall clock)."""
    return run.wait_for(
        lambda s: (
            run.step(s, "requirements")["status"] in ("done", "skipped", "failed")
            and (run.step(s, "requirements")["finished_at"] or 0) > since
        ),
        what=what,
    )


def installed_from_the_editor(
    orchestrator: OrchestratorFactory, notebook_dir: Path, package: str
) -> tuple[Orchestrator, float]:
    """An orchestrator (defaults, Quix's layout) whose editor installed ``package`` with
    marimo's Install button, in an open session; and when it was clicked (a wall clock)."""
    run = orchestrator(notebook_dir)
    run.wait_ready()
    clicked = time.time()
    with run.open_session() as session:
        assert run.marimo_install(package, session)["success"] is True
    return run, clicked


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
    """The default, in Quix's layout: no flag."""
    notebook = notebook_dir / "notebook.py"
    state = notebook_dir / "state"
    run, clicked = installed_from_the_editor(orchestrator, notebook_dir, "orch-gamma")
    assert '"orch-gamma==3.0"' in header_of(notebook), notebook.read_text()
    assert "orch_alpha.NAME" in notebook.read_text(), "the cells are untouched"
    # The header is a declared source: the requirements step runs for it, says what the header
    # now records, and what it asks for is the orchestrator's (the baseline), never the user's.
    status = finished_after(run, clicked, "the requirements step ran for the new header")
    step = run.step(status, "requirements")
    assert step["status"] == "done", step
    assert step["message"].endswith("; orch-gamma 3.0 added to notebook.py's dependencies"), step
    recorded = ledger(state)
    assert "orch-gamma" not in recorded["user"], recorded
    assert recorded["baseline"].get("orch-gamma") == "3.0", recorded
    assert run.kernel_output("import orch_gamma\nprint(orch_gamma.VERSION)").strip() == "3.0"
    assert run.terminate() == 0


def test_removing_a_recorded_package_removes_its_line_and_the_next_start_leaves_it_out(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    notebook = notebook_dir / "notebook.py"
    state = notebook_dir / "state"
    run, clicked = installed_from_the_editor(orchestrator, notebook_dir, "orch-gamma")
    finished_after(run, clicked, "the header's new line seen")
    assert "orch-gamma" in venv_packages(state)

    removed = time.time()
    with run.open_session() as session:
        assert run.marimo_uninstall("orch-gamma", session)["success"] is True
    assert "orch-gamma" not in header_of(notebook), notebook.read_text()
    step = run.step(finished_after(run, removed, "the header's removal seen"), "requirements")
    assert step["status"] == "skipped" and "nothing declared" in step["message"], step
    assert "orch-gamma" not in venv_packages(state)
    assert "orch-gamma" not in ledger(state)["user"], "an uninstall is not a user package"
    assert run.terminate() == 0

    again = orchestrator(notebook_dir)
    step = again.step(again.wait_ready(), "requirements")
    assert step["status"] in ("done", "skipped") and "orch-gamma" not in step["message"], step
    assert "orch-gamma" not in venv_packages(state), "the next start does not reinstall it"
    assert again.terminate() == 0


DELTA_NOTEBOOK = NOTEBOOK.replace("orch_alpha.NAME", "orch_delta.VERSION").replace(
    "import orch_alpha", "import orch_delta"
)


def test_marimos_pin_of_a_requirement_gives_way_when_requirements_txt_changes(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    """marimo pins, in the header, the installed version of every package a notebook imports
    when the notebook is opened (requirements.txt's included). requirements.txt changing that
    version later wins over the pin, and the status says so in one line."""
    notebook = notebook_dir / "notebook.py"
    notebook.write_text(DELTA_NOTEBOOK, encoding="utf-8")
    requirements = notebook_dir / "requirements.txt"
    requirements.write_text("orch-delta==1.0\n", encoding="utf-8")
    state = notebook_dir / "state"
    run = orchestrator(notebook_dir)
    run.wait_ready()
    opened = time.time()
    with run.open_session() as session:
        run.marimo_open(session)
        header = wait_for_header(notebook, '"orch-delta==1.0"')
    assert "orch_delta.VERSION" in notebook.read_text()
    step = run.step(finished_after(run, opened, "the pinned header seen"), "requirements")
    assert step["status"] == "done" and "added to" not in step["message"], (header, step)

    edited = time.time()
    requirements.write_text("orch-delta==2.0\n", encoding="utf-8")
    step = run.step(
        finished_after(run, edited, "requirements.txt's change installed"), "requirements"
    )
    note = "notebook.py pins orch-delta==1.0; requirements.txt's orch-delta==2.0 is used"
    assert step["status"] == "done" and note in step["message"], step
    assert "orch-delta 2.0 installed for requirements.txt and notebook.py" in step["message"], step
    assert venv_packages(state)["orch-delta"] == "2.0"
    assert '"orch-delta==1.0"' in header_of(notebook), "the notebook was not opened since"
    assert run.terminate() == 0

    # The next start: nothing to install, the same note; opening the notebook on the new
    # environment makes marimo pin the version now installed, and the note is gone.
    again = orchestrator(notebook_dir)
    step = again.step(again.wait_ready(), "requirements")
    assert step["status"] == "skipped" and note in step["message"], step
    opened = time.time()
    with again.open_session() as session:
        again.marimo_open(session)
        wait_for_header(notebook, '"orch-delta==2.0"')
    step = again.step(finished_after(again, opened, "the new pin seen"), "requirements")
    assert step["status"] == "done" and "pins" not in step["message"], step
    assert again.terminate() == 0


def test_with_recording_off_the_notebook_is_left_alone_and_the_package_is_the_users(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    """Teams that curate requirements.txt by hand turn it off; with pip nothing is recorded
    either (marimo's recording would switch its Install button to uv)."""
    notebook = notebook_dir / "notebook.py"
    run = orchestrator(notebook_dir, None, "--no-record-installs")
    run.wait_ready()
    with run.open_session() as session:
        run.marimo_open(session)
        assert run.marimo_install("orch-gamma", session)["success"] is True
    assert notebook.read_text() == NOTEBOOK
    run.wait_for(
        lambda s: "orch-gamma" in ledger(notebook_dir / "state").get("user", {}),
        what="the ledger keeps the package as the user's",
    )
    assert run.terminate() == 0

    with_pip = orchestrator(notebook_dir, None, "--installer", "pip")
    with_pip.wait_ready()
    assert "not recorded in the notebook's header" in with_pip.log_text()
    with with_pip.open_session() as session:
        assert with_pip.marimo_install("orch-beta", session)["success"] is True
    assert notebook.read_text() == NOTEBOOK
    assert with_pip.terminate() == 0


def test_a_header_edit_is_installed_in_the_background_and_the_status_says_for_which_notebook(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    notebook = notebook_dir / "notebook.py"
    run = orchestrator(notebook_dir)
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
