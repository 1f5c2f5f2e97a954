"""Run mode scales out: several orchestrators in run mode share one state folder.

What a user sees: every replica serves the app; one of them installs, the others are ready as
soon as that environment is finished (no second installer run); a replica killed while it
builds does not wedge the others, which take over its build lease (jobs/lease.py, no flock).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

from jobs.layout import StateLayout
from tests.conftest import OrchestratorFactory
from tests.support.index import LocalIndex
from tests.support.orchestrator import Orchestrator

RUN = ("--marimo-mode", "run")


def app_output(run: Orchestrator, timeout: float = 60) -> str:
    """The app's rendered output, as a viewer's browser receives it over marimo's socket."""
    deadline = time.monotonic() + timeout
    session = f"s_{os.urandom(4).hex()}"
    url = f"{run.base.replace('http', 'ws')}/ws?session_id={session}&file=notebook.py"
    seen: list[str] = []
    with connect(url, open_timeout=30, additional_headers=run.auth) as socket_:
        while time.monotonic() < deadline:
            message = str(socket_.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            seen.append(message)
            if "orch-alpha" in message and json.loads(message)["op"] == "cell-op":
                return message
    raise AssertionError(f"the app never rendered on {run.base}: {seen[-5:]}")


def server_token(run: Orchestrator) -> str:
    """The skew-protection token marimo's page gives the browser (sent back on API calls)."""
    _, _, page = run.get("/?file=notebook.py", {"Accept": "text/html"})
    found = re.search(rb'<marimo-server-token data-token="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1).decode()


def post_with_token(run: Orchestrator, token: str) -> tuple[int, bytes]:
    """A run-mode API call as marimo's frontend makes it, carrying ``token``."""
    request = urllib.request.Request(
        run.base + "/api/kernel/function_call",
        data=json.dumps({"functionCallId": "f", "namespace": "n", "functionName": "g"}).encode(),
        headers={
            "Marimo-Server-Token": token,
            "Marimo-Session-Id": f"s_{os.urandom(4).hex()}",
            "Content-Type": "application/json",
            **run.auth,
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def installing(run: Orchestrator) -> bool:
    return "Installing" in run.step(run.status(), "requirements")["message"]


def waiting_for_builder(status: dict[str, object]) -> bool:
    steps = status["steps"]
    assert isinstance(steps, list)
    return "is building the environment" in str(steps[1]["message"])


def test_three_run_mode_replicas_on_one_state_all_serve_after_one_install(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path, index: LocalIndex
) -> None:
    state = tmp_path / "shared"
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n", encoding="utf-8")
    release = index.control.hold("orch-alpha")
    first = orchestrator(notebook_dir, state, *RUN)
    assert index.control.arrived["orch-alpha"].wait(60), first.log_text()
    others = [orchestrator(notebook_dir, state, *RUN) for _ in range(2)]
    for other in others:
        status = other.wait_for(waiting_for_builder, timeout=60, what="waiting for the builder")
        assert status["ready"] is False
    release.set()

    replicas = [first, *others]
    statuses = [replica.wait_ready(timeout=120) for replica in replicas]
    outcomes = [Orchestrator.step(status, "requirements")["status"] for status in statuses]
    assert outcomes == ["done", "skipped", "skipped"], outcomes
    runs = [replica for replica in replicas if "[requirements:uv]" in replica.log_text()]
    assert runs == [first], "exactly one installer run, by the replica that built"
    for replica in replicas:
        assert "orch-alpha" in app_output(replica)
    # One build, one server token: a viewer's request that lands on another replica is served.
    tokens = {server_token(replica) for replica in replicas}
    assert len(tokens) == 1, tokens
    token = tokens.pop()
    code, body = post_with_token(others[1], "not-" + token)
    assert (code, b"Invalid server token" in body) == (401, True), "marimo checks the token"
    code, body = post_with_token(others[1], token)
    assert code != 401 and b"server token" not in body, body
    assert not StateLayout(state).lock.exists(), "run mode takes no flock"
    assert not StateLayout(state).build_lease.exists(), "the build lease was given up"


def test_a_replica_killed_while_building_is_taken_over(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path, index: LocalIndex
) -> None:
    state = tmp_path / "shared"
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n", encoding="utf-8")
    release = index.control.hold("orch-alpha")
    lease = ("--lease-seconds", "2")
    builder = orchestrator(notebook_dir, state, *RUN, *lease)
    assert index.control.arrived["orch-alpha"].wait(60), builder.log_text()
    heir = orchestrator(notebook_dir, state, *RUN, *lease)
    heir.wait_for(waiting_for_builder, timeout=60, what="waiting for the builder")
    builder.remember_tree()
    os.killpg(builder.process.pid, signal.SIGKILL)
    builder.process.wait(timeout=10)
    assert StateLayout(state).build_lease.exists(), "a SIGKILL leaves the lease file behind"
    release.set()

    killed_at = time.monotonic()
    status = heir.wait_ready(timeout=120)
    assert Orchestrator.step(status, "requirements")["status"] == "done"
    assert "The last install was interrupted: redoing it" in heir.log_text()
    assert time.monotonic() - killed_at < 60
    assert "orch-alpha" in app_output(heir)
    assert not StateLayout(state).lock.exists(), "the takeover came from the lease, not flock"

    late = orchestrator(notebook_dir, state, *RUN, *lease)
    assert Orchestrator.step(late.wait_ready(), "requirements")["status"] == "skipped"
