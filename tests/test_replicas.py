"""Run mode scales out: several orchestrators in run mode share one state folder.

What a user sees: every replica serves the app; one of them installs, the others are ready as
soon as that environment is finished (no second installer run); a replica killed while it
builds does not wedge the others, which take over its build lease (jobs/lease.py, no flock).
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
from websockets.sync.client import connect

from jobs.layout import StateLayout
from tests.support.index import LocalIndex
from tests.support.orchestrator import Orchestrator, OrchestratorFactory
from tests.support.viewers import Viewers

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
    # A viewer's request that lands on another replica is served: marimo runs without its
    # per-process server-token check (jobs/marimo_command.py); the proxy still wants the header.
    token = server_token(first)
    code, body = post_with_token(others[1], token)
    assert code != 401 and b"server token" not in body, body
    code, body = post_with_token(others[1], "")
    assert (code, b"Missing server token" in body) == (401, True), "the header is still required"
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
    assert "Published the environment" in heir.log_text(), "the heir built it anew"
    assert time.monotonic() - killed_at < 60
    assert "orch-alpha" in app_output(heir)
    assert not StateLayout(state).lock.exists(), "the takeover came from the lease, not flock"

    late = orchestrator(notebook_dir, state, *RUN, *lease)
    assert Orchestrator.step(late.wait_ready(), "requirements")["status"] == "skipped"


def generation_python(run: Orchestrator) -> Path | None:
    """The interpreter the replica's marimo server runs from (kernels are not counted); None
    while it has none (between two marimo processes)."""
    for child in psutil.Process(run.process.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.cmdline()[1:3] == ["-m", "marimo"]:
                return Path(child.cmdline()[0])
    return None


_LOG_TIME = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?(Moving|Moved) marimo to the environment",
    re.M,
)


def moves(run: Orchestrator) -> list[tuple[datetime.datetime, datetime.datetime]]:
    """When the replica took the move lease and when it gave it up, for each move it finished
    (its log says both, under the lease)."""
    marks = [
        (datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f"), what)
        for stamp, what in _LOG_TIME.findall(run.log_text())
    ]
    began = [at for at, what in marks if what == "Moving"]
    ended = [at for at, what in marks if what == "Moved"]
    return list(zip(began, ended, strict=False))


def marimo_servers(run: Orchestrator) -> list[psutil.Process]:
    """The replica's marimo server processes (its kernels are threads in run mode)."""
    found = []
    for child in psutil.Process(run.process.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.cmdline()[1:3] == ["-m", "marimo"]:
                found.append(child)
    return found


def test_a_requirements_change_under_load_fails_no_request_on_any_replica(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    """Issue 28, point 8: each replica starts the new marimo beside the old one and switches
    to it once it answers; viewers of every replica get the app and its API all along, open
    tabs are told to reconnect (1012), and the replicas still move one at a time."""
    state = tmp_path / "shared"
    requirements = notebook_dir / "requirements.txt"
    requirements.write_text("orch-alpha\n", encoding="utf-8")
    replicas = [orchestrator(notebook_dir, state, *RUN) for _ in range(3)]
    for replica in replicas:
        replica.wait_ready(timeout=120)
    (first,) = {generation_python(replica) for replica in replicas}
    assert first is not None
    layout = StateLayout(state)

    with Viewers(replicas, tabs=True) as viewers:
        before = len(viewers.samples)
        requirements.write_text("orch-alpha\norch-gamma\n", encoding="utf-8")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            moved = [len(moves(replica)) == 1 for replica in replicas]
            pythons = {generation_python(replica) for replica in replicas}
            if all(moved) and first not in pythons and None not in pythons:
                break
            time.sleep(0.2)
        else:
            raise AssertionError([replica.log_text() for replica in replicas])
        assert gone(first.parent.parent.parent), "the unused generation was removed"
        after = time.monotonic()  # viewing goes on a little on the new environment everywhere
        while time.monotonic() < deadline and not all(
            sum(sample.at > after for sample in viewers.of(number)) >= 4 for number in range(3)
        ):
            time.sleep(0.1)
    during = viewers.samples[before:]

    assert viewers.failures() == [], viewers.failures()[:20]
    for number in range(3):
        kinds = {sample.what for sample in viewers.of(number)}
        assert kinds == {"page", "api"}, f"replica {number + 1} was viewed: {kinds}"
    assert len(during) > 30, "the viewers kept viewing through the change"
    codes = {close.code for close in viewers.closes}
    assert codes <= {1012}, viewers.closes
    assert {close.replica for close in viewers.closes} == {0, 1, 2}, (
        "each replica's open tab was told to reconnect to the new marimo"
    )
    (second,) = pythons
    assert second is not None and second.is_relative_to(layout.envs)
    assert subprocess.run([second, "-c", "import orch_gamma"], check=False).returncode == 0
    spans = sorted(span for replica in replicas for span in moves(replica))
    for earlier, later in itertools.pairwise(spans):
        assert earlier[1] <= later[0], f"two replicas moved at once: {spans}"
    for replica in replicas:
        log = replica.log_text()
        assert log.count("Stopped the previous marimo") == 1, "switched, not restarted"
        assert "marimo is restarted instead" not in log
        assert len(marimo_servers(replica)) == 1, "the old marimo's tree is gone"
        status = replica.status()
        assert status["marimo"]["restarts"] == 0 and status["marimo"]["last_exit"] is None
    published = sum(r.log_text().count("Published the environment") for r in replicas)
    assert published == 2, "one build for the first start, one for the change"
    for replica in replicas:
        assert "orch-alpha" in app_output(replica)


def test_a_warm_run_mode_replica_starts_marimo_from_the_published_generation_early(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "shared"
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n", encoding="utf-8")
    first = orchestrator(notebook_dir, state, *RUN)
    first.wait_ready()
    warm = orchestrator(notebook_dir, state, *RUN)
    status = warm.wait_ready()
    served = status["marimo"]["pid"]
    assert f"Serving the marimo started early (pid {served}): nothing changed" in warm.log_text()
    assert generation_python(warm) == generation_python(first)
    assert not StateLayout(state).lock.exists()


def test_replicas_of_another_image_build_their_own_generation_and_the_old_ones_stay(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    """A rolling image update: the new image's replicas never take over the old image's
    environment, and the old image's replicas never move to the new image's."""
    state = tmp_path / "shared"
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n", encoding="utf-8")
    old = orchestrator(notebook_dir, state, *RUN)
    old.wait_ready()
    old_python = generation_python(old)
    # The new image differs by one installed distribution (what the image key hashes).
    image = tmp_path / "new-image"
    dist = image / "orch_image_marker-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: orch-image-marker\nVersion: 1.0\n", encoding="utf-8"
    )
    new = orchestrator(notebook_dir, state, *RUN, env={"PYTHONPATH": str(image)})
    status = new.wait_ready()
    assert Orchestrator.step(status, "requirements")["status"] == "done", "built its own"
    new_python = generation_python(new)
    assert new_python is not None and new_python != old_python
    watch_until = time.monotonic() + 6  # three of the old replica's watch intervals
    while time.monotonic() < watch_until:
        assert generation_python(old) == old_python, "the old image's replica stays"
        time.sleep(0.2)
    assert "Published the environment" not in old.log_text().split("marimo is running")[-1]
    assert "orch-alpha" in app_output(old) and "orch-alpha" in app_output(new)
    assert len(list(StateLayout(state).envs.glob("current-*"))) == 2


def test_a_rebuild_asked_of_one_replica_is_a_new_generation_that_every_replica_follows(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    from tests.test_restart import post_restart

    state = tmp_path / "shared"
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n", encoding="utf-8")
    replicas = [orchestrator(notebook_dir, state, *RUN) for _ in range(2)]
    for replica in replicas:
        replica.wait_ready()
    (first,) = {generation_python(replica) for replica in replicas}
    assert first is not None
    assert post_restart(replicas[0], {"scope": "install", "rebuild": True})[0] == 202
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pythons = {generation_python(replica) for replica in replicas}
        moved = first not in pythons and None not in pythons and len(pythons) == 1
        if moved and all(replica.status()["ready"] for replica in replicas):
            break
        time.sleep(0.2)
    else:
        raise AssertionError([replica.log_text() for replica in replicas])
    assert gone(first.parent.parent.parent), "the unused generation was removed"
    for replica in replicas:
        assert "orch-alpha" in app_output(replica)


def gone(path: Path, timeout: float = 30) -> bool:
    """``path`` disappears within ``timeout`` (the last replica to move removes it)."""
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not path.exists()


def test_a_session_works_on_every_replica_and_a_logout_on_one_ends_it_on_all(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    """Behind one load balancer a viewer's requests land on any replica: replicas started
    together agree on one signing secret, and a logout on one is refused by the others."""
    from tests.support.sign_in import cookie_of, login, request

    state = tmp_path / "shared"
    replicas = [orchestrator(notebook_dir, state, *RUN) for _ in range(3)]
    for replica in replicas:
        replica.wait_for(lambda s: s["state"]["path"] == str(state), what="state resolved")
    # Signed in on the last replica to adopt the secret's file: valid on every replica.
    code, headers, _ = login(replicas[2], replicas[2].token)
    assert code == 303
    cookie = cookie_of(headers)
    for replica in replicas:
        assert request(replica, "GET", "/-/status", {"Cookie": cookie})[0] == 200
    code, _, _ = request(
        replicas[0], "POST", "/-/logout", {"Cookie": cookie, "Origin": replicas[0].base}
    )
    assert code == 303
    deadline = time.monotonic() + 10
    refused: set[int] = set()
    while time.monotonic() < deadline and len(refused) < 3:
        refused |= {
            number
            for number, replica in enumerate(replicas)
            if request(replica, "GET", "/-/status", {"Cookie": cookie})[0] == 401
        }
        time.sleep(0.1)  # between polls
    assert refused == {0, 1, 2}, "a logout on one replica ends the session on every replica"


def test_without_memory_for_two_marimos_a_replica_restarts_marimo_and_says_why(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    """The memory check is the operator's margin: with more to keep free than any machine has,
    the move falls back to stopping marimo and starting it on the new environment."""
    state = tmp_path / "shared"
    requirements = notebook_dir / "requirements.txt"
    requirements.write_text("orch-alpha\n", encoding="utf-8")
    margin = ("--marimo-switch-margin", str(10**9))  # MiB: a petabyte
    run = orchestrator(notebook_dir, state, *RUN, *margin)
    run.wait_ready()
    first = generation_python(run)
    assert first is not None
    requirements.write_text("orch-alpha\norch-gamma\n", encoding="utf-8")
    run.wait_for(
        lambda _: len(moves(run)) == 1 and generation_python(run) not in (None, first),
        timeout=180,
        what="the move to the new environment",
    )
    status = run.wait_ready()
    log = run.log_text()
    why = "not enough memory to run the new marimo beside the running one"
    assert f"marimo is restarted instead: {why}" in log, "the log says why"
    assert f"Restarting marimo: {why}" in log, "so did the board, while marimo restarted"
    assert "Starting marimo on" not in log and "Stopped the previous marimo" not in log
    assert status["marimo"]["last_exit"] == "stopping", "stopped first, then started"
    assert len(marimo_servers(run)) == 1
    assert "orch-alpha" in app_output(run)
