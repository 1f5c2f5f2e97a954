"""A switch of marimo to another environment on one orchestrator (issue 28, point 8), with a real
marimo, the status board and the proxy in this process: the new marimo serves only once it
answers, what was sent to the old one is answered, its tabs are told to reconnect (1012), its
tree is gone afterwards; a switch is neither a crash nor a hang, and without memory for two
marimos nothing changes (the caller then restarts marimo: tests/test_replicas.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import psutil
import pytest
from tornado.websocket import websocket_connect

from jobs.errors import PermanentError
from jobs.installers import Installer
from jobs.layout import StateLayout
from jobs.marimo import HUNG, MarimoSupervisor
from jobs.settings import Liveness, Switching
from orchestrator.status import StatusBoard
from tests.support.orchestrator import hermetic_env, stopped
from tests.support.proxy_harness import (
    RawClient,
    Switch,
    async_test,
    raw_exchange,
    run_proxy,
    wait_for,
)
from tests.test_supervision import NOTEBOOK

pytestmark = pytest.mark.marimo  # every test here starts a real marimo

MARIMO_BOOT = 120.0
"""Seconds a marimo may take to answer after its start on a machine other tests share."""


def answers(port: int) -> bool:
    """marimo at ``port`` answers ``GET /health`` now (asked without the event loop)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Board(StatusBoard):
    """The orchestrator's status board, also noting, each time a marimo is reported up, whether
    that marimo answered at that moment."""

    def __init__(self) -> None:
        super().__init__()
        self.ups: list[tuple[int, bool]] = []

    def marimo_up(self, pid: int, host: str, port: int, token: str) -> None:
        self.ups.append((port, answers(port)))
        super().marimo_up(pid, host, port, token)


def other_interpreter() -> Path:
    """Another path to this venv's interpreter: the environment marimo switches to (the real
    generations' venvs are the replica tests')."""
    here = Path(sys.executable)
    other = here.with_name("python3" if here.name != "python3" else "python")
    assert other.exists() and other != here
    return other


def make_supervisor(
    tmp_path: Path,
    board: Board,
    *,
    memory: Callable[[], int],
    drain: float = 120.0,
    liveness: Liveness | None = None,
) -> MarimoSupervisor:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir(exist_ok=True)
    (notebooks / "notebook.py").write_text(NOTEBOOK, encoding="utf-8")
    return MarimoSupervisor(
        notebook_dir=notebooks,
        mode="run",
        python=Path(sys.executable),
        layout=StateLayout(tmp_path / "state"),
        installer=Installer("pip", None),
        base_env=hermetic_env({"HOME": str(tmp_path)}),
        reporter=board,
        ready_timeout=MARIMO_BOOT,
        stable_after=30.0,
        record_installs=False,
        liveness=liveness,
        switching=Switching(drain=drain, margin=64 * 1024 * 1024),
        memory=memory,
    )


@asynccontextmanager
async def watched(sup: MarimoSupervisor) -> AsyncIterator[asyncio.Task[None]]:
    """marimo launched and watched; stopped (every tree it started gone) when the block ends."""
    await sup.launch()
    watcher = asyncio.create_task(sup.watch())
    try:
        yield watcher
    finally:
        await sup.stop()
        with contextlib.suppress(PermanentError, asyncio.CancelledError):
            await asyncio.wait_for(watcher, 30)


def family(pid: int) -> list[int]:
    return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def marimo_python(pid: int) -> Path:
    return Path(psutil.Process(pid).cmdline()[0])


@async_test(timeout=400)
async def test_the_new_marimo_serves_once_it_answers_and_the_old_one_is_drained(
    tmp_path: Path,
) -> None:
    board = Board()
    room = {"bytes": 0}
    sup = make_supervisor(tmp_path, board, memory=lambda: room["bytes"])
    new_python, new_layout = other_interpreter(), StateLayout(tmp_path / "generation-2")
    async with watched(sup) as watcher, run_proxy(Switch(), lookup=board.upstream) as proxy:
        old = board.upstream()
        old_pid = sup.pid
        assert old is not None and old_pid is not None
        old_family = family(old_pid)

        # A viewer's tab on the old marimo, its kernel answering through the proxy.
        tab = await websocket_connect(f"{proxy.ws_base}/ws?session_id=s_tab&file=notebook.py")
        assert json.loads(await asyncio.wait_for(tab.read_message(), 60) or "null")
        # A request in flight to the old marimo: its head is sent, its body not yet.
        body = b'{"includeMarkdown": false}'
        client = await RawClient.connect(proxy.port)
        await client.send(
            "POST /api/home/workspace_files HTTP/1.1\nHost: 127.0.0.1\n"
            f"Content-Type: application/json\nMarimo-Server-Token: t\n"
            f"Content-Length: {len(body)}\n",
            body[:5],
        )
        await wait_for(lambda: old.traffic.requests == 1, timeout=30)

        # No memory for a second marimo: nothing changes, and the reason is given.
        why = await sup.switch(new_python, new_layout)
        assert why is not None and "not enough memory" in why and "--marimo-switch-margin" in why
        assert board.upstream() is old and sup.pid == old_pid and sup.python != new_python

        room["bytes"] = 1 << 50
        started = time.monotonic()
        switching = asyncio.create_task(sup.switch(new_python, new_layout))
        await wait_for(lambda: board.upstream() is not old, timeout=MARIMO_BOOT)
        new = board.upstream()
        assert new is not None and new.port != old.port and new.generation > old.generation
        assert board.ups[-1] == (new.port, True), "served only once it answered /health"
        assert board.ready and sup.pid != old_pid and marimo_python(sup.pid) == new_python

        # The tab on the old marimo is told to reconnect, as for a restart.
        async def closed() -> None:
            while await tab.read_message() is not None:
                pass  # what the kernel sent before

        await asyncio.wait_for(closed(), 10)
        assert (tab.close_code, tab.close_reason) == (1012, "marimo is restarting")
        # The old marimo waits for what it was sent; new requests go to the new one (the old
        # one, stopped for a moment, could not answer them).
        assert not switching.done() and alive(old_pid)
        with stopped(old_pid):
            answer = await raw_exchange(proxy.port, "GET /api/version HTTP/1.1\nHost: x\n")
            assert answer.status == 200
        # A slow upload: its body ends later than a stopped marimo's grace (SIGTERM, then
        # SIGKILL 5 s later, jobs/processes.py), and the old marimo waits for it all along.
        slow_until = time.monotonic() + 6.0
        while time.monotonic() < slow_until:
            assert not switching.done() and alive(old_pid), "the old marimo is being drained"
            await asyncio.sleep(0.2)
        # ... and then the request in flight to it completes, from it.
        await client.stream.write(body[5:])
        response = await asyncio.wait_for(client.read_response(), 30)
        client.close()
        assert response.status == 200 and b'"files"' in response.body, response
        answered = time.monotonic()
        assert await asyncio.wait_for(switching, 60) is None
        assert time.monotonic() - started < 120, "drained as soon as nothing was open"
        assert time.monotonic() - answered < 30
        assert not any(alive(pid) for pid in old_family), "the old tree is gone"
        new_pid = sup.pid or 0
        assert alive(new_pid) and answers(new.port)
        assert old.traffic.open == 0 and board.draining() == 0

        # A switch is no crash: nothing went down, no restart counted, and marimo still
        # watched: the new one, once killed, is restarted as after any crash.
        assert (board.marimo.restarts, board.marimo.last_exit, sup.restarts) == (0, None, 0)
        assert board.steps["marimo"].status == "done"
        os.killpg(new_pid, signal.SIGKILL)
        await wait_for(lambda: sup.pid not in (None, new_pid) and board.ready, MARIMO_BOOT)
        assert board.marimo.restarts == sup.restarts == 1 and not watcher.done()
        assert marimo_python(sup.pid or 0) == new_python, "restarted on the new environment"


@async_test(timeout=400)
async def test_the_hang_probe_follows_the_new_marimo_and_a_switch_is_no_hang(
    tmp_path: Path,
) -> None:
    """With quick probes (a hang noticed within about 3 s): the old marimo, stopped on purpose
    after the switch, is never probed again; the new one is, and a hang of it is noticed."""
    quick = Liveness(interval=0.3, timeout=1.0, misses=3)
    board = Board()
    sup = make_supervisor(tmp_path, board, memory=lambda: 1 << 50, liveness=quick, drain=5)
    async with watched(sup) as watcher:
        old_pid = sup.pid
        assert await sup.switch(other_interpreter(), StateLayout(tmp_path / "g2")) is None
        new_pid = sup.pid
        assert new_pid is not None and new_pid != old_pid and not alive(old_pid or 0)
        quiet_until = time.monotonic() + 2 * quick.detection_seconds
        while time.monotonic() < quiet_until:  # longer than a hang takes to be noticed
            assert board.ready and sup.pid == new_pid and board.marimo.last_exit is None
            await asyncio.sleep(0.1)

        with stopped(new_pid):
            await wait_for(lambda: board.marimo.last_exit == HUNG, 4 * quick.detection_seconds)
        await wait_for(lambda: sup.pid not in (None, new_pid) and board.ready, MARIMO_BOOT)
        assert board.marimo.restarts == 1 and not watcher.done()
        assert not alive(new_pid)
