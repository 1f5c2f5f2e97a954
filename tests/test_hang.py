"""A marimo that stops answering (SIGSTOP: a deadlocked event loop, a starved machine) is
noticed and replaced; a pause shorter than the threshold fails nothing (issue 28, point 1).

Quix's layout (the ``orchestrator`` fixture's default); the real orchestrator and marimo."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from jobs.marimo import HUNG
from jobs.settings import Liveness
from orchestrator.options import OPTIONS
from tests.support.orchestrator import Orchestrator, OrchestratorFactory, stopped
from tests.test_operators import metric

QUICK = Liveness(interval=0.5, timeout=1.0, misses=3)
"""Short thresholds for the test: a hang is noticed within 3.5 s."""
QUICK_ARGS = (
    "--marimo-probe-interval",
    str(QUICK.interval),
    "--marimo-probe-timeout",
    str(QUICK.timeout),
    "--marimo-probe-misses",
    str(QUICK.misses),
)
DEFAULT = Liveness(interval=2.0, timeout=2.0, misses=5)
"""The defaults of orchestrator/options.py (checked below against what the server says)."""
SLACK = 3.0
"""What a loaded test machine adds to a deadline: polling, scheduling, the kill itself."""
JSON = {"Accept": "application/json"}


class Waiting(threading.Thread):
    """One proxied API request to marimo, made in the background; when and how it ended."""

    def __init__(self, run: Orchestrator, upgrade: bool = False) -> None:
        super().__init__(daemon=True)
        self.run_ = run
        self.upgrade = upgrade
        self.answer: tuple[int, dict[str, str], bytes] | None = None
        self.error: BaseException | None = None
        self.started_at = 0.0
        self.seconds = 0.0
        self.start()

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:  # far beyond any deadline below: an unanswered request fails by its assertion
            if self.upgrade:
                self.answer = _upgrade(self.run_)
            else:
                self.answer = self.run_.get("/api/status", JSON, timeout=120)
        except BaseException as error:
            self.error = error
        self.seconds = time.monotonic() - self.started_at

    def result(self, within: float) -> tuple[int, dict[str, str], bytes]:
        self.join(within)
        assert not self.is_alive(), f"the request waited more than {within:.1f} s"
        assert self.error is None and self.answer is not None, self.error
        return self.answer


def _upgrade(run: Orchestrator) -> tuple[int, dict[str, str], bytes]:
    """A kernel WebSocket's opening handshake through the proxy: its answer when refused."""
    url = f"ws://127.0.0.1:{run.port}/ws?session_id=s_waiting&file=notebook.py"
    try:
        with connect(url, additional_headers=run.auth, open_timeout=120):
            return 101, {}, b""
    except InvalidStatus as refused:
        response = refused.response
        headers = {name.title(): value for name, value in response.headers.raw_items()}
        return response.status_code, headers, bytes(response.body or b"")


def ready_code(run: Orchestrator) -> int:
    return run.get("/-/ready", signed_in=False, timeout=5)[0]


def poll_ready(run: Orchestrator, until: float) -> list[tuple[float, int]]:
    """``/-/ready``'s answers until the monotonic time ``until`` (when each came, its code)."""
    seen = []
    while time.monotonic() < until:
        seen.append((time.monotonic(), ready_code(run)))
        time.sleep(0.1)
    return seen


@contextlib.contextmanager
def kernel_socket(run: Orchestrator, session: str) -> Iterator[Any]:
    """An editor's kernel WebSocket through the proxy, its first message read."""
    url = f"ws://127.0.0.1:{run.port}/ws?session_id={session}&file=notebook.py"
    with connect(url, additional_headers=run.auth, open_timeout=60) as socket_:
        assert json.loads(socket_.recv(timeout=60))
        yield socket_


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_hung_marimo_is_noticed_killed_and_restarted(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    run = orchestrator(notebook_dir, None, *QUICK_ARGS)
    pid = run.wait_ready()["marimo"]["pid"]
    detection = QUICK.detection_seconds
    with kernel_socket(run, "s_hang") as socket_, stopped(pid):
        stopped_at = time.monotonic()
        waiting = Waiting(run)  # reaches the stopped marimo and waits on it
        upgrading = Waiting(run, upgrade=True)  # so does an editor opening its WebSocket

        # /-/ready goes 503 within the detection time, and the board says why.
        while (code := ready_code(run)) == 200:
            assert time.monotonic() - stopped_at < detection + SLACK, "never noticed"
            time.sleep(0.05)
        noticed = time.monotonic() - stopped_at
        assert code == 503
        status = run.status()
        assert not status["ready"] and status["marimo"]["last_exit"] == HUNG
        # (with the backoff before the next start when it hung soon after its start)
        assert Orchestrator.step(status, "marimo")["message"].startswith(HUNG), status

        # The request that waited on the hung marimo is answered as while marimo is not ready.
        code, headers, body = waiting.result(within=detection + SLACK)
        assert code == 503 and headers["Retry-After"], (code, headers, body)
        assert json.loads(body)["error"] == "marimo is not ready"
        assert waiting.seconds < detection + SLACK
        code, headers, body = upgrading.result(within=detection + SLACK)
        assert code == 503 and headers["Retry-After"], (code, headers, body)

        # The editor's WebSocket is closed as for a restart, so the tab reconnects.
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                socket_.recv(timeout=detection + SLACK)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012, closed.value

        # Killed (its whole tree) without waiting for a SIGCONT that never comes.
        run.wait_for(lambda s: not alive(pid), 10, "the hung marimo killed")

    after = run.wait_for(lambda s: s["ready"] and s["marimo"]["pid"] not in (None, pid), 90)
    assert after["marimo"]["restarts"] == 1 and after["phase"] == "ready"
    assert run.get("/api/status", JSON)[0] == 200  # the new marimo serves
    text = run.get("/-/metrics")[2].decode()
    assert metric(text, "orchestrator_marimo_hangs_total") == 1
    assert metric(text, "orchestrator_marimo_restarts_total", reason="hang") == 1
    log = run.log_text()
    assert f"marimo (pid {pid}): no answer to /health within 1 s, 3 times in a row" in log
    print(f"hang noticed in {noticed:.1f} s (detection bound {detection:.1f} s)")


def test_a_pause_shorter_than_the_threshold_fails_nothing(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    """5 s stopped, then continued, under the default thresholds (a hang is noticed after
    10 to 12 s): nothing is restarted and the request that waited is answered."""
    defaults = {option.name: option.default for option in OPTIONS}
    assert (
        Liveness(
            defaults["--marimo-probe-interval"],
            defaults["--marimo-probe-timeout"],
            defaults["--marimo-probe-misses"],
        )
        == DEFAULT
    )
    assert 5 + SLACK < DEFAULT.detection_seconds <= 15
    run = orchestrator(notebook_dir)
    pid = run.wait_ready()["marimo"]["pid"]
    with stopped(pid):
        stopped_at = time.monotonic()
        waiting = Waiting(run)
        during = poll_ready(run, until=stopped_at + 5)
        assert waiting.is_alive(), "the request did not wait for the stopped marimo"
    code, _, body = waiting.result(within=30)
    assert code == 200, body
    # Watched until well past the time a hang would have been noticed: still the same marimo.
    later = poll_ready(run, until=stopped_at + DEFAULT.detection_seconds + SLACK)
    assert {code for _, code in during + later} == {200}
    status = run.status()
    assert status["marimo"]["pid"] == pid and status["marimo"]["restarts"] == 0
    assert alive(pid)
    text = run.get("/-/metrics")[2].decode()
    assert metric(text, "orchestrator_marimo_hangs_total") == 0
    print(f"the waiting request was answered after {waiting.seconds:.1f} s")


def test_sigterm_while_marimo_is_stopped_ends_everything_in_time(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    """The orchestrator's SIGTERM promise (exit within 10 s, marimo's whole tree gone) holds
    for a marimo that is stopped, before any hang was noticed."""
    run = orchestrator(notebook_dir)
    pid = run.wait_ready()["marimo"]["pid"]
    with stopped(pid):
        ending = time.monotonic()
        assert run.terminate(timeout=30) == 0
        seconds = time.monotonic() - ending
    assert seconds < 10, f"{seconds:.1f} s"
    assert run.leftovers() == []
    print(f"exited {seconds:.1f} s after SIGTERM")
