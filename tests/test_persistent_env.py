"""The persistent environment survives restarts, rebuilds, late or broken volumes, a second
orchestrator, and packages installed from marimo's own Install button."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from jobs.layout import StateLayout
from tests.support.index import LocalIndex
from tests.support.orchestrator import OrchestratorFactory

HTML = {"Accept": "text/html"}


def wait_for_file(path: Path, predicate: object, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last: dict[str, object] = {}
    while time.monotonic() < deadline:
        try:
            last = json.loads(path.read_text())
            if predicate(last):  # type: ignore[operator]
                return last
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{path} never satisfied the condition; last {last}")


def imports(state: Path, module: str) -> bool:
    python = StateLayout(state).venv_python
    return (
        subprocess.run([str(python), "-c", f"import {module}"], capture_output=True).returncode == 0
    )


def force_python_change(state: Path) -> None:
    """What an image upgrade looks like to the next start: the venv was made by another Python."""
    manifest_path = StateLayout(state).manifest
    manifest = json.loads(manifest_path.read_text())
    manifest["venv"]["python_version"] = "3.10.0 (an older image)"
    manifest_path.write_text(json.dumps(manifest))


def test_marimo_install_button_survives_an_image_upgrade_and_uninstall_is_respected(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n")
    first = orchestrator(notebook_dir, state)
    first.wait_ready()
    assert first.marimo_install("orch-gamma") == {
        "success": True,
        "error": None,
        "restartRequired": False,
    }
    assert first.marimo_install("orch-slow")["success"] is True
    # marimo offers Install wherever /.dockerenv exists: prove its kernel is the state venv's.
    printed = first.kernel_output("import sys, orch_gamma\nprint(sys.prefix)")
    assert printed.strip() == str(StateLayout(state).venv)
    ledger = wait_for_file(
        StateLayout(state).ledger, lambda d: {"orch-gamma", "orch-slow"} <= set(d["user"])
    )
    assert "orch-alpha" not in ledger["user"], "requirements are not the user's packages"
    # The user removes one of them again, from a terminal.
    uv = subprocess.run(
        [str(StateLayout(state).venv_python), "-m", "pip", "uninstall", "-y", "orch-slow"],
        capture_output=True,
        text=True,
    )
    assert uv.returncode == 0, uv.stderr
    wait_for_file(StateLayout(state).ledger, lambda d: "orch-slow" not in d["user"])
    assert first.terminate() == 0

    force_python_change(state)
    second = orchestrator(notebook_dir, state)
    status = second.wait_ready()
    venv = second.step(status, "venv")
    assert "Python changed" in venv["message"]
    requirements = second.step(status, "requirements")
    assert requirements["status"] == "done"
    assert "restored orch-gamma==3.0" in requirements["message"]
    assert imports(state, "orch_gamma") and imports(state, "orch_alpha")
    assert not imports(state, "orch_slow"), "an uninstall is respected"


def test_a_broken_venv_is_rebuilt(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = orchestrator(notebook_dir, state)
    first.wait_ready()
    assert first.terminate() == 0
    python = StateLayout(state).venv_python
    python.unlink()
    python.symlink_to(tmp_path / "gone" / "python3")  # dangling
    second = orchestrator(notebook_dir, state)
    status = second.wait_ready()
    assert "does not run" in second.step(status, "venv")["message"]
    assert python.resolve().exists()


def test_a_late_volume_is_waited_for(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "late-volume"
    run = orchestrator(notebook_dir, state, "--wait-for-state", "true")
    run.wait_for(lambda s: s["steps"][0]["attempt"] >= 3, timeout=30, what="several waits")
    assert run.get("/", HTML)[0] == 200  # the page answers meanwhile
    state.mkdir()
    status = run.wait_ready()
    assert status["state"] == {"path": str(state), "persistent": True, "warning": None}
    assert status["phase"] == "ready"


def test_a_volume_that_never_appears_falls_back_loudly(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "never"
    run = orchestrator(notebook_dir, state, "--wait-for-state", "true", "--state-timeout", "2")
    status = run.wait_ready()
    assert status["phase"] == "degraded"
    assert status["state"]["persistent"] is False
    assert str(state) in status["state"]["warning"]
    assert "will not persist" in status["state"]["warning"]
    assert run.step(status, "state")["status"] == "failed"


@pytest.fixture
def read_only_volume(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "ro-volume"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_read_only_volume_is_named(
    orchestrator: OrchestratorFactory, notebook_dir: Path, read_only_volume: Path
) -> None:
    run = orchestrator(notebook_dir, read_only_volume)
    status = run.wait_ready()
    warning = status["state"]["warning"]
    assert f"the state directory {read_only_volume} is not writable" in warning
    assert status["state"]["persistent"] is False
    assert run.step(status, "state")["attempt"] == 1, "read-only is permanent: no waiting"


def test_two_orchestrators_on_one_state_take_turns(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "shared"
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n")
    first = orchestrator(notebook_dir, state)
    first.wait_ready()
    second = orchestrator(notebook_dir, state)
    waiting = second.wait_for(
        lambda s: "Another orchestrator" in s["steps"][0]["message"], timeout=30, what="lock wait"
    )
    assert str(first.process.pid) in waiting["steps"][0]["message"]
    assert "edit mode serves from one replica per state folder" in waiting["steps"][0]["message"]
    assert waiting["steps"][1]["status"] == "pending", "the venv is not touched while waiting"
    assert not any(
        child.cmdline()[1:3] == ["-m", "marimo"]
        for child in psutil.Process(second.process.pid).children(recursive=True)
    ), "and no marimo is started from it"
    assert first.terminate() == 0
    status = second.wait_ready()
    assert second.step(status, "requirements")["status"] == "skipped"
    assert imports(state, "orch_alpha")


def test_a_changed_requirements_file_installs_while_marimo_serves(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    requirements = notebook_dir / "requirements.txt"
    requirements.write_text("orch-alpha\n")
    run = orchestrator(notebook_dir, state)
    first = run.wait_ready()
    requirements.write_text("orch-alpha\norch-gamma\n")
    run.wait_for(lambda s: imports(state, "orch_gamma"), timeout=60, what="live install")
    status = run.wait_for(lambda s: s["steps"][2]["status"] == "done", what="install done")
    assert status["ready"] is True
    assert status["marimo"]["pid"] == first["marimo"]["pid"], "marimo kept serving"


def test_a_rebuild_reinstalls_from_the_cache_when_the_index_is_down(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path, index: LocalIndex
) -> None:
    state = tmp_path / "state"
    (notebook_dir / "requirements.txt").write_text("orch-beta\n")
    first = orchestrator(notebook_dir, state)
    first.wait_ready()
    assert first.terminate() == 0
    force_python_change(state)
    index.control.faults.extend(["503"] * 1000)
    second = orchestrator(notebook_dir, state)
    status = second.wait_ready()
    requirements = second.step(status, "requirements")
    assert requirements["status"] == "done", requirements
    assert "offline, from the cache" in requirements["message"]
    assert imports(state, "orch_beta") and imports(state, "orch_alpha")
