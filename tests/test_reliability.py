"""The reliability suite (``make test-reliability``): production's faults, on purpose.

Every scenario checks that nothing is lost and that no client ever sees a 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from jobs.layout import StateLayout
from tests.support.index import LocalIndex
from tests.support.orchestrator import Orchestrator, OrchestratorFactory
from tests.test_persistent_env import wait_for_file
from tests.test_restart import post_restart

pytestmark = pytest.mark.slow
HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}


def imports(state: Path, *modules: str) -> bool:
    python = StateLayout(state).venv_python
    return (
        subprocess.run(
            [str(python), "-c", f"import {', '.join(modules)}"], capture_output=True
        ).returncode
        == 0
    )


def test_a_flaky_index_still_installs_with_visible_retries(
    orchestrator: OrchestratorFactory, notebook_dir: Path, index: LocalIndex, tmp_path: Path
) -> None:
    (notebook_dir / "requirements.txt").write_text("orch-alpha\norch-beta\norch-gamma\norch-slow\n")
    index.control.fault_rate = 1 / 3
    run = orchestrator(notebook_dir, tmp_path / "state")
    retries_seen = 0

    def watch(status: dict[str, object]) -> bool:
        nonlocal retries_seen
        step = run.step(status, "requirements")
        if step["attempt"] and int(step["attempt"]) > 1:
            retries_seen = max(retries_seen, int(step["attempt"]))
        return bool(status["ready"])

    status = run.wait_for(watch, timeout=300, what="ready through a flaky index")
    index.control.fault_rate = 0
    assert run.step(status, "requirements")["status"] == "done", status
    assert imports(tmp_path / "state", "orch_alpha", "orch_beta", "orch_gamma", "orch_slow")
    assert index.control.served_faults, "the index did misbehave"
    assert retries_seen >= 2 or "retry" in run.log_text().lower(), "retries are visible"


def test_a_missing_package_fails_fast_and_names_itself(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    (notebook_dir / "requirements.txt").write_text("orch-alpha\nno-such-package-at-all\n")
    run = orchestrator(notebook_dir)
    started = time.monotonic()
    status = run.wait_for(
        lambda s: run.step(s, "requirements")["status"] == "failed", what="failure"
    )
    assert time.monotonic() - started < 60
    step = run.step(status, "requirements")
    assert "no-such-package-at-all" in step["message"] and step["attempt"] == 1


def test_a_state_directory_20_seconds_late(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "late"
    run = orchestrator(notebook_dir, state, "--wait-for-state", "true")
    run.wait_listening()
    appeared = time.monotonic() + 20
    while time.monotonic() < appeared:
        assert run.get("/-/healthy")[0] == 200
        code = run.get("/", HTML)[0]
        assert code == 200, code
        time.sleep(0.5)
    state.mkdir()
    status = run.wait_ready(timeout=120)
    assert status["state"]["persistent"] is True and status["phase"] == "ready"


def _poll(run: Orchestrator, stop: threading.Event, seen: Counter[int]) -> None:
    while not stop.is_set():
        try:
            code = run.get("/api/status", JSON, timeout=10)[0]
        except OSError as error:  # a reset or a timeout is a failure a user would notice
            code = 0
            print(f"poller: {error!r}")
        seen[code] += 1


def test_marimo_killed_20_times_under_use(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    run = orchestrator(notebook_dir, None, "--marimo-crash-window", "0.5")
    run.wait_ready()
    seen: Counter[int] = Counter()
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(run, stop, seen), daemon=True)
    poller.start()
    ws_url = run.base.replace("http", "ws") + "/ws?session_id=s_kill_{n}&file=notebook.py"
    try:
        for n in range(20):
            status = run.wait_ready(timeout=120)
            with connect(ws_url.format(n=n), open_timeout=30, additional_headers=run.auth) as ws:
                assert json.loads(ws.recv(timeout=60))  # the kernel answers through the proxy
                time.sleep(
                    0.6
                )  # beyond the crash window: this is an outside kill, not a crash loop
                os.kill(status["marimo"]["pid"], signal.SIGKILL)
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        ws.recv(timeout=30)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012, (
                    closed.value
                )
            run.wait_for(
                lambda s, pid=status["marimo"]["pid"]: s["ready"] and s["marimo"]["pid"] != pid,
                timeout=120,
            )
        # Reconnecting after the last restart works.
        with connect(ws_url.format(n="final"), open_timeout=30, additional_headers=run.auth) as ws:
            assert json.loads(ws.recv(timeout=60))
    finally:
        stop.set()
        poller.join(timeout=30)
    assert run.status()["marimo"]["restarts"] >= 20
    assert seen[502] == 0 and set(seen) <= {200, 503}, seen
    assert seen[503] > 0, "the outages were observed"


def _load_notebooks(notebook_dir: Path, count: int = 5) -> None:
    """The notebooks the socket loops of :func:`_client_mix` open, one each."""
    for n in range(count):
        shutil.copy(notebook_dir / "notebook.py", notebook_dir / f"load_{n}.py")


async def _client_mix(run: Orchestrator, seconds: float) -> Counter[str]:
    from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    AsyncHTTPClient.configure(None, max_clients=300)
    client = AsyncHTTPClient()
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    auth = run.auth

    async def fetch_loop(kind: str, path: str, headers: dict[str, str]) -> None:
        while time.monotonic() < deadline:
            try:
                response = await client.fetch(
                    run.base + path, headers={**auth, **headers}, request_timeout=30
                )
                outcomes[f"{kind}:{response.code}"] += 1
            except HTTPClientError as error:
                outcomes[f"{kind}:{error.code}"] += 1
            except OSError:  # the server went away (only expected when it is being stopped)
                outcomes[f"{kind}:gone"] += 1
                return

    async def sse_watch(n: int) -> None:
        chunks: list[bytes] = []
        request = HTTPRequest(
            run.base + "/-/events",
            headers=auth,
            request_timeout=seconds + 30,
            streaming_callback=chunks.append,
        )
        with contextlib.suppress(TimeoutError):  # the watcher leaves after the run
            await asyncio.wait_for(client.fetch(request, raise_error=False), timeout=seconds)
        outcomes["sse:ok" if any(b"event: status" in c for c in chunks) else "sse:empty"] += 1

    async def ws_loop(n: int) -> None:
        # One notebook per socket loop, as one user per notebook: marimo edits a notebook in
        # one session, and a client with another session id on the same file takes that
        # session over (it resumes the orphaned session in the second between a close and the
        # owner's reconnect), so marimo closes the displaced editor with MARIMO_SHUTDOWN.
        # Reproduced straight against marimo without the proxy (issue 17, point 10).
        url = run.base.replace("http", "ws") + f"/ws?session_id=s_load_{n}&file=load_{n}.py"
        while time.monotonic() < deadline:
            try:
                connection = await websocket_connect(HTTPRequest(url, headers=auth))
            except (OSError, HTTPClientError):
                outcomes["ws:gone"] += 1
                return
            message = await connection.read_message()
            if message:
                outcomes["ws:ok"] += 1
            else:  # the proxy's closes and marimo's own alike: a user would notice either
                outcomes[f"ws:closed {connection.close_code} {connection.close_reason}"] += 1
            connection.close()
            await asyncio.sleep(1)

    tasks = (
        [fetch_loop("page", "/?file=notebook.py", HTML) for _ in range(60)]
        + [fetch_loop("status", "/-/status", JSON) for _ in range(40)]
        + [fetch_loop("proxied", "/api/status", JSON) for _ in range(45)]
        + [sse_watch(n) for n in range(50)]
        + [ws_loop(n) for n in range(5)]
    )
    await asyncio.gather(*tasks)
    client.close()
    return outcomes


def test_200_concurrent_clients_leave_nothing_behind(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    _load_notebooks(notebook_dir)
    run = orchestrator(notebook_dir)
    run.wait_ready()
    process = psutil.Process(run.process.pid)
    # Warm up once so that lazily created things (pools, caches) exist before the baseline.
    asyncio.run(_client_mix(run, 2))
    fds_before, rss_before = process.num_fds(), process.memory_info().rss
    outcomes = asyncio.run(_client_mix(run, 30))
    failures = {key: count for key, count in outcomes.items() if not key.endswith((":200", ":ok"))}
    assert failures == {}, outcomes
    assert outcomes["sse:ok"] == 50 and outcomes["ws:ok"] > 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.num_fds() > fds_before + 5:
        time.sleep(0.2)  # idle keep-alive connections time out
    assert process.num_fds() <= fds_before + 5, (fds_before, process.num_fds())
    grown = (process.memory_info().rss - rss_before) / 2**20
    assert grown < 30, f"RSS grew by {grown:.1f} MiB"
    print(
        f"200 clients for 30 s: {sum(outcomes.values())} exchanges {dict(outcomes)}; RSS +{grown:.1f} MiB"
    )


def test_sigterm_under_load(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n")
    _load_notebooks(notebook_dir)
    run = orchestrator(notebook_dir, tmp_path / "state")
    run.wait_ready()
    run.remember_tree()

    async def load() -> None:
        await _client_mix(run, 5)

    loader = threading.Thread(target=lambda: asyncio.run(load()), daemon=True)
    loader.start()
    time.sleep(2)  # clients are busy when the signal lands
    started = time.monotonic()
    assert run.terminate(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert run.leftovers() == []
    loader.join(timeout=30)
    manifest = json.loads(StateLayout(tmp_path / "state").manifest.read_text())
    assert manifest["venv"] and manifest["install"] and manifest["pending_install"] is None


# -- faults of the state itself (issue 17) ---------------------------------------------------


def test_a_double_fault_loses_no_user_package(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    """manifest.json and ledger.json both unreadable: the venv is rebuilt (nothing on record
    vouches for it), and the Install-button package read from its files comes back."""
    state = tmp_path / "state"
    layout = StateLayout(state)
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n")
    first = orchestrator(notebook_dir, state)
    first.wait_ready()
    assert first.marimo_install("orch-gamma")["success"] is True
    wait_for_file(layout.ledger, lambda d: "orch-gamma" in d["user"])
    assert first.terminate() == 0
    layout.manifest.write_bytes(b"\x00\x01 torn")
    layout.ledger.write_bytes(b"\x00\x01 torn")

    second = orchestrator(notebook_dir, state)
    status = second.wait_ready(timeout=120)
    assert "no manifest record" in second.step(status, "venv")["message"]
    assert "restored orch-gamma==3.0" in second.step(status, "requirements")["message"]
    assert imports(state, "orch_gamma") and imports(state, "orch_alpha")
    ledger = json.loads(layout.ledger.read_text())
    assert set(ledger["user"]) == {"orch-gamma"}, ledger


def test_a_rebuild_restarts_marimo_on_the_new_venv(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    layout = StateLayout(state)
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n")
    run = orchestrator(notebook_dir, state)
    before = run.wait_ready()
    created = json.loads(layout.manifest.read_text())["venv"]["created_at"]
    assert post_restart(run, {"scope": "install", "rebuild": True})[0] == 202
    after = run.wait_for(
        lambda s: (
            s["ready"]
            and s["marimo"]["pid"] not in (None, before["marimo"]["pid"])
            and (json.loads(layout.manifest.read_text()).get("venv") or {}).get("created_at")
            not in (None, created)
        ),
        what="marimo on the rebuilt venv",
    )
    marimo = psutil.Process(after["marimo"]["pid"])
    assert marimo.cmdline()[0] == str(layout.venv_python)
    assert marimo.create_time() >= layout.venv_python.parent.stat().st_mtime - 1
    assert not psutil.pid_exists(before["marimo"]["pid"])
    assert run.get("/", {"Accept": "text/html"})[0] == 200
    assert imports(state, "orch_alpha")


def test_a_vanished_venv_is_noticed_repaired_and_marimo_restarted(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    layout = StateLayout(state)
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n")
    run = orchestrator(notebook_dir, state)
    before = run.wait_ready()
    assert run.marimo_install("orch-gamma")["success"] is True
    wait_for_file(layout.ledger, lambda d: "orch-gamma" in d["user"])
    shutil.rmtree(layout.venv)

    said_so = False
    dead_pids: list[int] = []

    def repaired(status: dict[str, object]) -> bool:
        nonlocal said_so
        said_so = said_so or "vanished" in json.dumps(status["steps"])
        pid = status["marimo"]["pid"]  # type: ignore[index]
        if pid is not None and not psutil.pid_exists(pid):
            dead_pids.append(pid)
        return bool(status["ready"]) and pid != before["marimo"]["pid"]

    run.wait_for(repaired, timeout=120, what="repaired venv and a new marimo")
    assert said_so, "status said the venv vanished"
    assert not dead_pids, "status never shows a dead marimo"
    assert imports(state, "orch_alpha") and imports(state, "orch_gamma")
    assert run.get("/", {"Accept": "text/html"})[0] == 200
