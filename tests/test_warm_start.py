"""Warm starts: marimo boots while the jobs check that nothing changed (jobs/head_start.py).

What a user sees: a warm container is ready in about marimo's own start-up time, the marimo
they get is a full one (kernels, Install button), and when something did change (requirements,
a broken venv) they get a marimo started after the change, never the early one, and no stray
process is left behind.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import psutil

from jobs.layout import StateLayout
from tests.support.orchestrator import Orchestrator, OrchestratorFactory
from tests.test_end_to_end import _kernel_first_message
from tests.test_persistent_env import imports


def marimo_servers(run: Orchestrator) -> list[psutil.Process]:
    """The orchestrator's ``python -m marimo`` children (kernels are not counted)."""
    found = []
    for child in psutil.Process(run.process.pid).children(recursive=True):
        try:
            if child.cmdline()[1:3] == ["-m", "marimo"]:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def warm_state(orchestrator: OrchestratorFactory, notebook_dir: Path, state: Path) -> None:
    first = orchestrator(notebook_dir, state)
    first.wait_ready()
    assert first.terminate() == 0


def test_a_warm_start_serves_the_marimo_started_before_the_checks(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n", encoding="utf-8")
    warm_state(orchestrator, notebook_dir, state)

    run = orchestrator(notebook_dir, state)
    status = run.wait_ready()
    assert run.step(status, "requirements")["status"] == "skipped"
    served = status["marimo"]["pid"]
    assert [server.pid for server in marimo_servers(run)] == [served], "one marimo"
    assert f"Serving the marimo started early (pid {served}): nothing changed" in run.log_text()

    # A complete marimo: it runs notebooks, and its Install button installs into the venv.
    assert _kernel_first_message(run.base.replace("http", "ws"), run.auth)
    answer = run.marimo_install("orch-gamma")
    assert answer.get("success") is True, answer
    assert imports(state, "orch_gamma")
    # /.dockerenv makes marimo offer Install whatever runs it: the kernel itself must be the
    # state venv's (Quix and Kubernetes have no /.dockerenv).
    printed = run.kernel_output("import sys, orch_gamma\nprint(sys.prefix)")
    assert printed.strip() == str(StateLayout(state).venv)
    assert run.terminate() == 0
    assert run.leftovers() == []


SPAWN_PROBE = """
import os, sys

def _on_spawn(event, args):
    if event == "subprocess.Popen" and any("marimo" == str(arg) for arg in args[1] or ()):
        try:
            with open(os.environ["SPAWN_REPORT"], "x") as report:
                report.write(" ".join(sorted(set(os.environ["SPAWN_WATCH"].split()) & set(sys.modules))))
        except FileExistsError:
            pass  # a later spawn (or marimo's own process, which inherits PYTHONPATH)

sys.addaudithook(_on_spawn)
"""
"""A ``sitecustomize`` for the orchestrator's process: when marimo is spawned, it writes which of
the watched modules are already imported."""


def test_a_warm_start_spawns_marimo_before_the_heavy_imports(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    """marimo's start is most of a warm start; it begins before Tornado, ``asyncio`` (and the
    ``inspect`` it pulls in), the web modules, the jobs' pipeline and ``dataclasses``
    (bench/RESULTS.md, "Startup") are imported."""
    state = tmp_path / "state"
    warm_state(orchestrator, notebook_dir, state)
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(SPAWN_PROBE, encoding="utf-8")
    report = tmp_path / "spawn-report"
    watched = (
        "asyncio inspect dataclasses tornado tornado.web orchestrator.app orchestrator.status"
        " orchestrator.quix.portal jobs.runner"
    )
    run = orchestrator(
        notebook_dir,
        state,
        env={"PYTHONPATH": str(probe), "SPAWN_REPORT": str(report), "SPAWN_WATCH": watched},
    )
    run.wait_ready()
    assert "Serving the marimo started early" in run.log_text()
    assert report.read_text(encoding="utf-8") == "", "imported before marimo's spawn"


def test_changed_requirements_are_installed_before_marimo_serves(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n", encoding="utf-8")
    warm_state(orchestrator, notebook_dir, state)
    (notebook_dir / "requirements.txt").write_text("orch-alpha\norch-beta\n", encoding="utf-8")

    run = orchestrator(notebook_dir, state)
    status = run.wait_ready()
    assert run.step(status, "requirements")["status"] == "done"
    stopped = re.search(
        r"Stopping the marimo started early \(pid (\d+)\): requirements.txt must be installed",
        run.log_text(),
    )
    assert stopped, run.log_text()
    early = int(stopped.group(1))
    served = status["marimo"]["pid"]
    assert served != early and not psutil.pid_exists(early)
    assert [server.pid for server in marimo_servers(run)] == [served]
    assert imports(state, "orch_beta")
    assert run.terminate() == 0
    assert run.leftovers() == []


def test_a_venv_whose_interpreter_fails_is_rebuilt_without_a_stray_marimo(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    warm_state(orchestrator, notebook_dir, state)
    python = StateLayout(state).venv_python
    python.unlink()
    python.write_text("#!/bin/sh\necho 'this interpreter is broken' >&2\nexit 3\n")
    os.chmod(python, 0o755)

    run = orchestrator(notebook_dir, state)
    status = run.wait_ready()
    assert "does not run" in run.step(status, "venv")["message"]
    assert "Stopping the marimo started early" in run.log_text()
    assert [server.pid for server in marimo_servers(run)] == [status["marimo"]["pid"]]
    rebuilt = subprocess.run([str(python), "-c", "print(1)"], capture_output=True, text=True)
    assert rebuilt.stdout == "1\n"
    assert run.terminate() == 0
    assert run.leftovers() == []
