"""Every declared source is installed by the requirements step: notebook headers, included
requirements files, ``pyproject.toml`` + ``uv.lock``; conflicts fail the step and recover live.

Real uv, real venvs, wheels built here and served by a local index. A real orchestrator (in
Quix's layout) where marimo and the watcher matter; the step alone where it proves the same.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from jobs import requirements as requirements_job
from jobs import venv as venv_job
from jobs.errors import PermanentError
from jobs.installers import find_uv, resolve_installer
from jobs.layout import StateLayout
from tests.support.index import LocalIndex
from tests.support.notebooks import NOTEBOOK
from tests.support.orchestrator import Orchestrator, OrchestratorFactory, hermetic_env
from tests.support.reporter import RecordingReporter
from tests.support.wheels import build_wheel


def header(*dependencies: str) -> str:
    listed = "".join(f'#     "{dep}",\n' for dep in dependencies)
    return f"# /// script\n# dependencies = [\n{listed}# ]\n# ///\n"


def imports(state: Path, code: str) -> str:
    done = subprocess.run(
        [str(StateLayout(state).venv_python), "-c", code], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def installed(state: Path, dist: str) -> bool:
    return any(StateLayout(state).venv.glob(f"lib/python*/site-packages/{dist}-*.dist-info"))


def settled(run: Orchestrator) -> dict[str, Any]:
    """The status once the requirements step has its final word for this start."""
    return run.wait_for(
        lambda s: (
            run.step(s, "requirements")["status"] in ("done", "skipped", "failed")
            and run.step(s, "marimo")["status"] == "done"
        ),
        what="the requirements step finished and marimo running",
    )


def test_a_notebook_header_alone_is_installed_at_start(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    """A fresh folder, no requirements.txt: the header's two packages import in the cells."""
    (notebook_dir / "notebook.py").write_text(header("orch-alpha", "orch-gamma") + NOTEBOOK)
    run = orchestrator(notebook_dir)
    status = settled(run)
    step = run.step(status, "requirements")
    assert step["status"] == "done", step
    assert "notebook.py" in step["message"]
    printed = run.kernel_output("import orch_alpha, orch_gamma\nprint(orch_gamma.VERSION)")
    assert printed.strip() == "3.0"
    assert run.terminate() == 0


def test_an_included_file_is_installed_live_and_at_the_next_start(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    state = notebook_dir / "state"
    (notebook_dir / "requirements.txt").write_text("-r extra.txt\n")
    extra = notebook_dir / "extra.txt"
    extra.write_text("orch-alpha\n")
    run = orchestrator(notebook_dir)
    assert run.step(settled(run), "requirements")["status"] == "done"
    assert not installed(state, "orch_gamma")

    extra.write_text("orch-alpha\norch-gamma\n")  # only the included file changes
    status = run.wait_for(
        lambda s: (
            "orch-gamma 3.0 installed for extra.txt" in run.step(s, "requirements")["message"]
        ),
        what="the included file's new package installed, and the status saying so",
    )
    assert run.step(status, "requirements")["status"] == "done", status
    assert imports(state, "import orch_gamma; print(orch_gamma.VERSION)") == "3.0"
    assert "extra.txt changed: installing" in run.log_text()
    assert run.terminate() == 0

    extra.write_text("orch-alpha\norch-gamma\norch-slow\n")  # while nothing runs
    second = orchestrator(notebook_dir)
    step = second.step(settled(second), "requirements")
    assert step["status"] == "done" and step["message"].startswith("Installed"), step
    imports(state, "import orch_slow")
    assert second.terminate() == 0

    third = orchestrator(notebook_dir)  # nothing changed: nothing installed
    step = third.step(settled(third), "requirements")
    assert step["status"] == "skipped", step
    assert third.terminate() == 0


def test_conflicting_notebooks_fail_the_step_and_an_edit_recovers_live(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    state = notebook_dir / "state"
    (notebook_dir / "notebook.py").write_text(header("orch-gamma==3.0") + NOTEBOOK)
    other = notebook_dir / "report.py"
    other.write_text(header("orch-gamma==2.0") + NOTEBOOK)
    run = orchestrator(notebook_dir)
    step = run.step(settled(run), "requirements")
    assert step["status"] == "failed", step
    for words in ("notebook.py", "report.py", "orch-gamma==3.0", "orch-gamma==2.0"):
        assert words in step["message"]
    code, _, _ = run.get("/-/status")
    assert run.step(run.status(), "marimo")["status"] == "done" and code == 200

    other.write_text(header("orch-gamma==3.0") + NOTEBOOK)  # fixing either file is enough
    status = run.wait_for(
        lambda s: run.step(s, "requirements")["status"] == "done", what="recovered"
    )
    assert "report.py's dependencies changed: installing" in run.log_text()
    assert run.step(status, "marimo")["status"] == "done"
    assert imports(state, "import orch_gamma; print(orch_gamma.VERSION)") == "3.0"
    assert run.terminate() == 0


PYPROJECT = """[project]
name = "notebooks"
version = "0.1"
requires-python = ">=3.11"
dependencies = [{deps}]
"""


def test_a_uv_project_installs_the_locked_version_not_the_newest(tmp_path: Path) -> None:
    """The step alone: pyproject.toml + uv.lock in the folder, the index offering a newer
    version than the lock's."""
    uv_bin = find_uv()
    assert uv_bin is not None
    wheels, folder = tmp_path / "wheels", tmp_path / "app"
    folder.mkdir()
    build_wheel(wheels, "orch-locked", "1.0")
    (folder / "pyproject.toml").write_text(PYPROJECT.format(deps='"orch-locked"'))
    with LocalIndex(wheels) as index:
        env = hermetic_env(index.env())
        subprocess.run(
            [uv_bin, "lock", "--directory", str(folder)],
            env={**env, "UV_DEFAULT_INDEX": index.url, "UV_PYTHON_DOWNLOADS": "never"},
            check=True,
            capture_output=True,
        )
        build_wheel(wheels, "orch-locked", "2.0")
        layout = StateLayout(tmp_path / "state")
        layout.root.mkdir()
        installer = resolve_installer("uv")
        asyncio.run(venv_job.create(layout, installer, env, RecordingReporter()))
        requirements = folder / "requirements.txt"  # absent: the project is the only source

        def step() -> requirements_job.InstallOutcome:
            return asyncio.run(
                requirements_job.install(requirements, layout, installer, env, RecordingReporter())
            )

        outcome = step()
        assert outcome.kind == "installed" and "uv.lock" in outcome.message
        version = subprocess.run(
            [str(layout.venv_python), "-c", "import orch_locked; print(orch_locked.VERSION)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert version == "1.0"
        assert step().kind == "unchanged"

        # The pyproject edited without re-locking: the step fails naming both files.
        (folder / "pyproject.toml").write_text(PYPROJECT.format(deps='"orch-locked>=2"'))
        with pytest.raises(PermanentError) as raised:
            step()
    assert f"{folder / 'uv.lock'} does not match {folder / 'pyproject.toml'}" in str(raised.value)
