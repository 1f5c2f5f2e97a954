"""The whole path, for real: the port answers at once, jobs bring marimo up, the proxy switches.

Real orchestrator process, real venv, real uv, real marimo, a local index on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psutil
from websockets.sync.client import connect

from tests.support.index import LocalIndex
from tests.support.orchestrator import OrchestratorFactory

HTML = {"Accept": "text/html,application/xhtml+xml"}


def _kernel_first_message(base_ws: str, headers: dict[str, str]) -> dict[str, object]:
    with connect(
        f"{base_ws}/ws?session_id=s_e2e_1&file=notebook.py",
        open_timeout=30,
        additional_headers=headers,
    ) as ws:
        return dict(json.loads(ws.recv(timeout=60)))


def test_cold_start_installs_requirements_and_proxies_marimo(
    orchestrator: OrchestratorFactory, notebook_dir: Path, index: LocalIndex, tmp_path: Path
) -> None:
    (notebook_dir / "requirements.txt").write_text("orch-beta\n", encoding="utf-8")
    run = orchestrator(notebook_dir)
    run.wait_listening()

    seen: dict[str, list[str]] = {}

    def record(status: dict[str, object]) -> bool:
        for step in status["steps"]:  # type: ignore[attr-defined]
            history = seen.setdefault(step["name"], [])
            if not history or history[-1] != step["status"]:
                history.append(step["status"])
        return bool(status["ready"])

    status = run.wait_for(record, what="ready")
    assert status["phase"] == "ready"
    assert [s["status"] for s in status["steps"]] == ["done", "done", "done", "done"]
    for name in ("venv", "requirements", "marimo"):
        assert seen[name][-1] == "done"
        assert set(seen[name]) <= {"pending", "running", "done"}
    assert "running" in seen["requirements"] or "pending" in seen["requirements"]

    code, _, _ = run.get("/-/ready")
    assert code == 200
    code, _, body = run.get("/", HTML)
    assert code == 200
    assert b"marimo" in body and b"Starting your marimo environment" not in body
    assert _kernel_first_message(run.base.replace("http", "ws"), run.auth)

    venv_python = Path(run.status()["state"]["path"]) / "venv" / "bin" / "python"
    imported = subprocess.run(
        [
            str(venv_python),
            "-c",
            "import orch_alpha, orch_beta, sys; print(orch_beta.VERSION, sys.prefix != sys.base_prefix)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.split() == ["2.0", "True"]
    assert any("/files/orch_beta" in path for path in index.control.requests)


def test_second_start_skips_the_install(
    orchestrator: OrchestratorFactory, notebook_dir: Path, index: LocalIndex
) -> None:
    (notebook_dir / "requirements.txt").write_text("orch-alpha==1.0\n", encoding="utf-8")
    first = orchestrator(notebook_dir)
    first.wait_ready()
    assert first.terminate() == 0
    index.control.requests.clear()

    second = orchestrator(notebook_dir)
    status = second.wait_ready()
    requirements = second.step(status, "requirements")
    assert requirements["status"] == "skipped"
    assert "unchanged" in requirements["message"]
    assert second.step(status, "venv")["message"].startswith("Reusing")
    assert index.control.requests == []
    assert "[requirements:uv]" not in second.log_text()
    assert "[venv:uv]" not in second.log_text()


def test_changed_requirements_are_installed_on_the_next_start(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n", encoding="utf-8")
    first = orchestrator(notebook_dir)
    first.wait_ready()
    assert first.terminate() == 0

    (notebook_dir / "requirements.txt").write_text("orch-alpha\norch-slow\n", encoding="utf-8")
    second = orchestrator(notebook_dir)
    status = second.wait_ready()
    assert second.step(status, "requirements")["status"] == "done"
    assert "[requirements:uv]" in second.log_text()


def test_a_missing_package_degrades_but_marimo_still_serves(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    (notebook_dir / "requirements.txt").write_text(
        "orch-alpha\nno-such-package-xyz\n", encoding="utf-8"
    )
    run = orchestrator(notebook_dir)
    status = run.wait_for(lambda s: s["phase"] in ("degraded", "failed"), what="degraded")
    assert status["phase"] == "degraded"
    assert status["ready"] is True
    step = run.step(status, "requirements")
    assert step["status"] == "failed"
    assert "no-such-package-xyz" in step["message"]
    assert step["message"].startswith("requirements.txt line 2: cannot install"), step
    assert "nothing was installed; fix or remove that line" in step["message"], step
    assert step["attempt"] == 1, "a missing package is permanent: no retries"
    code, _, body = run.get("/", HTML)
    assert code == 200 and b"Starting your marimo environment" not in body


def test_while_a_job_is_slow_the_port_answers_and_nothing_502s(
    orchestrator: OrchestratorFactory, notebook_dir: Path, index: LocalIndex
) -> None:
    (notebook_dir / "requirements.txt").write_text("orch-slow\n", encoding="utf-8")
    release = index.control.hold("orch-slow")
    run = orchestrator(notebook_dir)
    run.wait_listening()
    assert index.control.arrived["orch-slow"].wait(timeout=60), run.log_text()

    status = run.status()
    assert status["ready"] is False and status["phase"] == "starting"
    assert run.step(status, "requirements")["status"] == "running"
    assert run.get("/-/healthy")[0] == 200
    assert run.get("/-/ready")[0] == 503

    code, _, body = run.get("/some/notebook?file=x.py", HTML)
    assert code == 200
    assert b"Starting your marimo environment" in body
    assert b'role="progressbar"' in body

    code, headers, body = run.get("/api/status", {"Accept": "application/json"})
    assert code == 503
    assert headers.get("Retry-After")
    assert json.loads(body)

    release.set()
    run.wait_ready()
    code, _, body = run.get("/some/notebook?file=x.py", HTML)
    assert code != 502


def test_sigterm_ends_the_whole_process_tree(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    run = orchestrator(notebook_dir)
    status = run.wait_ready()
    marimo_pid = status["marimo"]["pid"]
    assert psutil.pid_exists(marimo_pid)
    run.remember_tree()
    assert len(run.seen_pids) >= 2
    assert run.terminate(timeout=10) == 0
    assert run.leftovers() == []
