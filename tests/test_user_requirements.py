"""Packages installed from a terminal go to the ledger (its ``user`` set), and ``/-/requirements``
offers them for requirements.txt (to a signed-in user): ``GET`` lists them, ``POST {"add":
name}`` appends the ledger's ``name==version``; the requirements step then runs (installing nothing new), the
package moves to the ledger's baseline, notebook sync pushes requirements.txt, and a new
deployment (an empty state folder) installs it. What is refused: a package that is not the
user's, a cross-site request, a field of the wrong type, anyone not signed in.

Real orchestrators in Quix's layout, real marimo, real uv and pip, wheels from the local index;
the file logic (jobs/user_requirements.py) also alone, on real files.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from jobs import ledger as ledger_job
from jobs import user_requirements
from jobs.layout import StateLayout
from jobs.sources import collect
from tests.support.index import LocalIndex
from tests.support.orchestrator import (
    Orchestrator,
    OrchestratorFactory,
    hermetic_env,
    quix_layout_env,
)
from tests.support.quix_portal import FakeQuixPortal


def requirements_api(
    run: Orchestrator,
    body: object = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    """GET /-/requirements, or POST ``body`` (as JSON) or ``raw`` to it, signed in."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        run.base + "/-/requirements",
        data=data,
        headers={"Content-Type": "application/json", **run.auth, **(headers or {})},
        method="GET" if data is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:
        return error.code, dict(json.loads(error.read()))


def listed(run: Orchestrator, name: str, timeout: float = 60) -> dict[str, Any]:
    """The package as GET lists it, once it does (the ledger is updated every few seconds)."""
    deadline = time.monotonic() + timeout
    answer: dict[str, Any] = {}
    while time.monotonic() < deadline:
        code, answer = requirements_api(run)
        assert code == 200, answer
        found = [p for p in answer["packages"] if p["name"] == name]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"{name} was never listed; last {answer}\n{run.log_text()}")


def terminal_install(state: Path, index: LocalIndex, package: str, tool: str = "pip") -> None:
    """What a user types in marimo's terminal, against the index: the venv's own pip, or uv
    (``uv pip install --python <the venv's python>``)."""
    python = StateLayout(state).venv_python
    uv = str(Path(sys.executable).with_name("uv"))
    command = (
        [str(python), "-m", "pip", "install", "--no-input", package]
        if tool == "pip"
        else [uv, "pip", "install", "--python", str(python), package]
    )
    done = subprocess.run(
        command,
        env=hermetic_env(index.env()),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def ledger(state: Path) -> dict[str, Any]:
    return dict(json.loads(StateLayout(state).ledger.read_text(encoding="utf-8")))


def wait_until(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_terminal_install_offered_added_pushed_and_installed_by_a_new_deployment(
    orchestrator: OrchestratorFactory, notebook_dir: Path, index: LocalIndex
) -> None:
    requirements = notebook_dir / "requirements.txt"
    requirements.write_text("orch-alpha  # the team's\n", encoding="utf-8")
    state = notebook_dir / "state"
    state.mkdir()
    with FakeQuixPortal() as portal:
        sdk_token = portal.env()["Quix__Sdk__Token"]
        portal.state.allowed_tokens.add(sdk_token)
        env = {**quix_layout_env(portal.env(), state), "ORCHESTRATOR_AUTH": "token"}
        run = orchestrator(notebook_dir, state, "--sync-debounce", "0.3", env=env)
        run.wait_ready()
        assert requirements_api(run) == (200, {"file": "requirements.txt", "packages": []})

        terminal_install(state, index, "orch-gamma")
        offered = listed(run, "orch-gamma")
        assert offered == {
            "name": "orch-gamma",
            "version": "3.0",
            "line": "orch-gamma==3.0",
            "declared_in": [],
            "needed_by": [],
        }

        # Refused: anyone not signed in, what is not the user's, a cross-site request, a field
        # of the wrong type.
        assert run.get("/-/requirements", signed_in=False)[0] == 401
        anonymous = urllib.request.Request(
            run.base + "/-/requirements",
            data=b'{"add": "orch-gamma"}',
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(anonymous, timeout=30)
        assert refused.value.code == 401
        code, answer = requirements_api(run, {"add": "orch-zeta"})
        assert code == 404 and answer["field"] == "add", answer
        assert "orch-zeta is not among the packages you installed" in answer["error"], answer
        code, answer = requirements_api(run, {"add": "orch-alpha"})
        assert code == 404 and "orch-alpha" in answer["error"], "requirements are not offered"
        code, answer = requirements_api(
            run, {"add": "orch-gamma"}, {"Origin": "http://attacker.example"}
        )
        assert code == 403 and "cross-site" in answer["error"], answer
        code, answer = requirements_api(run, {"add": 5})
        assert code == 400 and answer["field"] == "add" and "a string" in answer["error"], answer
        code, answer = requirements_api(run, {"add": "orch-gamma==0.1"})
        assert code == 400 and answer["field"] == "add", "a version never comes from the client"
        code, answer = requirements_api(run, raw=b"add=orch-gamma", headers={"Content-Type": "a"})
        assert code == 415, answer
        assert requirements.read_text(encoding="utf-8") == "orch-alpha  # the team's\n"

        posted = time.time()
        code, answer = requirements_api(run, {"add": "Orch_Gamma"})
        assert code == 200, answer
        assert answer["added"] == "orch-gamma==3.0" and answer["file"] == "requirements.txt"
        gamma = [p for p in answer["packages"] if p["name"] == "orch-gamma"]
        assert gamma in ([], [{**offered, "declared_in": ["requirements.txt"]}]), answer
        assert requirements.read_text(encoding="utf-8") == (
            "orch-alpha  # the team's\norch-gamma==3.0\n"
        )

        # The live watcher runs the requirements step; the package is ours from then on.
        status = run.wait_for(
            lambda s: (
                run.step(s, "requirements")["status"] in ("done", "failed")
                and (run.step(s, "requirements")["started_at"] or 0) > posted
            ),
            what="the requirements step after the edit",
        )
        assert run.step(status, "requirements")["status"] == "done", status
        recorded = ledger(state)
        assert recorded["baseline"].get("orch-gamma") == "3.0", recorded
        assert "orch-gamma" not in recorded["user"], recorded
        assert requirements_api(run)[1]["packages"] == []
        code, answer = requirements_api(run, {"add": "orch-gamma"})
        assert code == 404, "added once"

        # Notebook sync pushes requirements.txt like any edit.
        pushed = wait_until(
            "requirements.txt pushed",
            lambda: [body for name, body in portal.state.files if name == "requirements.txt"],
        )
        assert "orch-gamma==3.0" in pushed[-1], pushed
        assert run.terminate() == 0

        # Day two: a new deployment, its volume empty, the same notebook folder.
        shutil.rmtree(state)
        state.mkdir()
        second = orchestrator(notebook_dir, state, env=env)
        step = second.step(second.wait_ready(), "requirements")
        assert step["status"] == "done", step
        assert ledger_job.scan(StateLayout(state).venv).get("orch-gamma") == "3.0"
        printed = second.kernel_output("import orch_gamma\nprint(orch_gamma.VERSION)")
        assert printed.strip() == "3.0"
        assert "orch-gamma" not in ledger(state)["user"]
        assert second.terminate() == 0


def test_a_package_added_to_an_include_chain_goes_to_the_top_file(tmp_path: Path) -> None:
    """The file logic alone, on real files: the top file gets the line (its bytes kept, a
    final newline added, its line ending and mode kept), an include is never written, a
    package an include names is not added twice, and only the ledger's user packages."""
    folder = tmp_path / "app"
    folder.mkdir()
    top, extra = folder / "requirements.txt", folder / "extra.txt"
    top.write_bytes(b"-r extra.txt\r\n-c constraints.txt\r\norch-alpha")  # no final newline
    top.chmod(0o664)
    extra.write_text("orch-beta\n", encoding="utf-8")
    (folder / "constraints.txt").write_text("orch-gamma<4\n", encoding="utf-8")
    layout = StateLayout(tmp_path / "state")
    ledger_job.Ledger(user={"orch-gamma": "3.0", "orch-beta": "2.0"}).save(layout.ledger)

    def read() -> Any:
        return collect(folder, None, {}, platform.python_version())

    offers = {offer.name: offer for offer in user_requirements.offers(layout, read())}
    assert offers["orch-beta"].declared_in == ("extra.txt",)
    assert offers["orch-gamma"].declared_in == (), "a constraint installs nothing"

    with pytest.raises(user_requirements.AlreadyDeclared, match="orch-beta is already in extra"):
        user_requirements.add(layout, read, "orch-beta")
    with pytest.raises(user_requirements.NotOffered, match="orch-alpha is not among"):
        user_requirements.add(layout, read, "orch-alpha")
    assert user_requirements.add(layout, read, "ORCH.gamma").line == "orch-gamma==3.0"
    assert (
        top.read_bytes()
        == b"-r extra.txt\r\n-c constraints.txt\r\norch-alpha\r\norch-gamma==3.0\r\n"
    )
    assert top.stat().st_mode & 0o777 == 0o664
    assert extra.read_text(encoding="utf-8") == "orch-beta\n"
    with pytest.raises(
        user_requirements.AlreadyDeclared, match=r"orch-gamma is already in requirements\.txt"
    ):
        user_requirements.add(layout, read, "orch-gamma")

    # A folder without requirements.txt: the file is made.
    bare = tmp_path / "bare"
    bare.mkdir()
    added = user_requirements.add(
        layout, lambda: collect(bare, None, {}, platform.python_version()), "orch-gamma"
    )
    assert added.line == "orch-gamma==3.0"
    assert (bare / "requirements.txt").read_text(encoding="utf-8") == "orch-gamma==3.0\n"


def test_packages_lists_what_files_declare_and_what_the_user_added(
    orchestrator: OrchestratorFactory, notebook_dir: Path, index: LocalIndex
) -> None:
    """``GET /-/packages`` (the panel's Packages section): a requirement with the version
    installed and the file naming it, its dependency counted, not listed; a package installed
    from a terminal under "added by you", offered for requirements.txt; signed-in users only."""
    (notebook_dir / "requirements.txt").write_text("orch-beta\n", encoding="utf-8")
    run = orchestrator(notebook_dir)
    run.wait_ready()
    state = notebook_dir / "state"
    terminal_install(state, index, "orch-gamma")
    listed(run, "orch-gamma")  # the ledger has seen it

    code, _, body = run.get("/-/packages")
    assert code == 200, body
    answer = json.loads(body)
    assert answer["file"] == "requirements.txt"
    assert answer["declared"] == [
        {"name": "orch-beta", "version": "2.0", "for": ["requirements.txt"]}
    ], answer
    assert answer["added_by_you"] == [
        {"name": "orch-gamma", "version": "3.0", "in": [], "line": "orch-gamma==3.0", "offer": True}
    ], answer
    assert answer["dependencies"] >= 1 and answer["more"] == 0, answer  # orch-alpha, pip
    assert "orch-alpha" not in body.decode()
    assert run.get("/-/packages", signed_in=False)[0] == 401
