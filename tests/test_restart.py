"""The restart API: marimo, reinstall (and rebuild), the deployment through Quix, and the CLI.

What needs no marimo (refusals, the Quix call, the CLI's messages) runs against the web side in
this process (tests/support/in_process.py); restarts of marimo and installs against real
orchestrators."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.in_process import InProcessFactory
from tests.support.orchestrator import ROOT, OrchestratorFactory, hermetic_env
from tests.support.quix_portal import FakeQuixPortal
from tests.support.sign_in import Served
from tests.test_operators import metric


def post_restart(
    run: Served,
    body: object,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        run.base + "/-/restart",
        data=json.dumps(body).encode() if not isinstance(body, bytes) else body,
        headers={"Content-Type": content_type, **run.auth, **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def portal() -> Iterator[FakeQuixPortal]:
    with FakeQuixPortal() as fake:
        yield fake


def test_restart_marimo_brings_a_new_marimo(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    run = orchestrator(notebook_dir)
    before = run.wait_ready()
    code, body = post_restart(run, {"scope": "marimo"})
    assert (code, body) == (202, {"accepted": True, "scope": "marimo"})
    assert run.status()["notice"]["message"] == "Restarting marimo (requested)"
    after = run.wait_for(
        lambda s: s["ready"] and s["marimo"]["pid"] != before["marimo"]["pid"] and not s["notice"],
        what="new marimo, notice withdrawn",
    )
    assert after["phase"] == "ready"
    assert run.get("/", {"Accept": "text/html"})[0] == 200
    text = run.get("/-/metrics")[2].decode()
    assert metric(text, "orchestrator_marimo_restarts_total", reason="requested") == 1
    assert 'orchestrator_marimo_restarts_total{reason="crash"}' not in text


def test_restart_install_reruns_and_rebuild_restores(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n")
    run = orchestrator(notebook_dir)
    before = run.wait_ready()
    finished = run.step(before, "requirements")["finished_at"]
    assert post_restart(run, {"scope": "install"})[0] == 202
    status = run.wait_for(
        lambda s: run.step(s, "requirements")["finished_at"] not in (None, finished),
        what="reinstall",
    )
    assert run.step(status, "requirements")["status"] == "done", "a requested reinstall really runs"
    assert status["ready"], "marimo kept serving"

    manifest = Path(before["state"]["path"]) / "manifest.json"
    venv_created = json.loads(manifest.read_text())["venv"]["created_at"]
    assert post_restart(run, {"scope": "install", "rebuild": True})[0] == 202
    run.wait_for(
        lambda s: (
            json.loads(manifest.read_text()).get("venv", {}) not in (None, {})
            and json.loads(manifest.read_text())["venv"]["created_at"] != venv_created
            and run.step(s, "requirements")["status"] == "done"
        ),
        what="rebuild",
    )


def test_bad_requests_are_refused_clearly(in_process: InProcessFactory, notebook_dir: Path) -> None:
    run = in_process(notebook_dir, quix=False)  # the deployment needs Quix
    run.wait_listening()
    assert post_restart(run, {"scope": "everything"})[0] == 400
    assert post_restart(run, b"scope=marimo", "application/x-www-form-urlencoded")[0] == 415
    code, body = post_restart(run, {"scope": "deployment"})
    assert code == 409 and "Quix" in str(body["error"])


def test_restart_deployment_asks_quix_once(
    in_process: InProcessFactory, notebook_dir: Path, portal: FakeQuixPortal
) -> None:
    run = in_process(notebook_dir, env=portal.env())
    portal.state.allowed_tokens.add(run.token)  # a Quix user who may use the workspace
    run.wait_listening()
    code, body = post_restart(run, {"scope": "deployment"})
    assert (code, body) == (202, {"accepted": True, "scope": "deployment"})
    status = run.wait_for(
        lambda s: (s["notice"] or {}).get("message", "").startswith("Quix accepted"), what="notice"
    )
    calls = [c for c in portal.state.calls if "deployments" in str(c["path"])]
    assert len(calls) == 1
    assert calls[0]["method"] == "POST" and calls[0]["x_version"] == "2.0"
    assert calls[0]["token"] == run.token, "the signed-in user's token, not the service's"
    assert json.loads(str(calls[0]["body"])) == ["dep-test"]
    assert run.token not in json.dumps(status)


def test_the_cli_restarts_and_follows(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    run = orchestrator(notebook_dir)
    before = run.wait_ready()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "restart",
            "--scope",
            "marimo",
            "--url",
            run.base,
            "--token",
            run.token,
            "--timeout",
            "120",
        ],
        cwd=ROOT,
        env=hermetic_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "accepted" in result.stdout and "done" in result.stdout
    assert run.status()["marimo"]["pid"] != before["marimo"]["pid"]


def test_the_cli_names_a_refusal(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "restart",
            "--scope",
            "marimo",
            "--url",
            "http://127.0.0.1:9",
        ],
        cwd=ROOT,
        env=hermetic_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "cannot reach http://127.0.0.1:9" in result.stderr


def test_the_cli_says_which_option_carries_the_token(
    in_process: InProcessFactory, notebook_dir: Path
) -> None:
    run = in_process(notebook_dir)
    run.wait_listening()
    command = [sys.executable, "-m", "orchestrator", "restart", "--scope", "marimo"]
    command += ["--url", run.base, "--no-wait"]
    for extra, expected in (
        ([], "pass the access token with --token"),
        (["--token", "not-the-right-token"], "the token given with --token"),
    ):
        result = subprocess.run(
            command + extra,
            cwd=ROOT,
            env=hermetic_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1 and "refused (401)" in result.stderr, result.stderr
        assert expected in result.stderr, result.stderr
