"""``jobs.marimo.MarimoSupervisor`` with a real marimo: restarts after a kill, with backoff, and
a crash loop that ends after a bounded number of attempts with marimo's last words reported."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psutil
import pytest

from jobs.errors import PermanentError
from jobs.installers import Installer
from jobs.layout import StateLayout
from jobs.liveness import health_ok
from jobs.marimo import HUNG, MarimoSupervisor
from jobs.reporting import MarimoExit
from jobs.settings import Liveness
from tests.support.orchestrator import hermetic_env
from tests.support.proxy_harness import async_test, wait_for
from tests.support.reporter import RecordingReporter

pytestmark = pytest.mark.marimo  # every test here starts a real marimo

NOTEBOOK = "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n    return\n"
BROKEN = "ImportError: cannot import name 'broken' from 'user_package'"
"""What the stand-in interpreter prints before exiting 1, once marimo ran once."""


class TimedReporter(RecordingReporter):
    """Also keeps when things happened, each marimo_up's address and token, each marimo_down's
    restart count and last output, and each announced retry delay."""

    def __init__(self) -> None:
        super().__init__()
        self.ups: list[tuple[float, int, int, str]] = []
        self.downs: list[tuple[float, str, int, list[str]]] = []
        self.delays: list[float] = []

    def marimo_up(self, pid: int, host: str, port: int, token: str) -> None:
        super().marimo_up(pid, host, port, token)
        self.ups.append((time.monotonic(), pid, port, token))

    def marimo_down(
        self, reason: str, restarts: int, last_output: list[str], kind: MarimoExit
    ) -> None:
        super().marimo_down(reason, restarts, last_output, kind)
        self.downs.append((time.monotonic(), reason, restarts, list(last_output)))

    def step_retrying(
        self, step: str, attempt: int, max_attempts: int, delay: float, error: str
    ) -> None:
        super().step_retrying(step, attempt, max_attempts, delay, error)
        self.delays.append(delay)


def supervisor(tmp_path: Path, python: Path, reporter: TimedReporter) -> MarimoSupervisor:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir(exist_ok=True)
    (notebooks / "notebook.py").write_text(NOTEBOOK, encoding="utf-8")
    return MarimoSupervisor(
        notebook_dir=notebooks,
        mode="edit",
        python=python,
        layout=StateLayout(tmp_path / "state"),
        installer=Installer("pip", None),
        base_env=hermetic_env({"HOME": str(tmp_path)}),
        reporter=reporter,
        ready_timeout=90,
        max_quick_crashes=3,
        stable_after=60,
        record_installs=False,
    )


@asynccontextmanager
async def watched(sup: MarimoSupervisor) -> AsyncIterator[asyncio.Task[None]]:
    """marimo launched and watched; stopped (whole tree gone) when the block ends."""
    await sup.launch()
    watcher = asyncio.create_task(sup.watch())
    try:
        yield watcher
    finally:
        await sup.stop()
        with contextlib.suppress(PermanentError, asyncio.CancelledError):
            await asyncio.wait_for(watcher, 30)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@async_test(timeout=180)
async def test_killed_marimo_is_restarted_after_a_backoff(tmp_path: Path) -> None:
    reporter = TimedReporter()
    sup = supervisor(tmp_path, Path(sys.executable), reporter)
    async with watched(sup) as watcher:
        (_, first_pid, first_port, first_token) = reporter.ups[0]
        assert sup.pid == first_pid and await health_ok(first_port)

        os.killpg(first_pid, signal.SIGKILL)
        await wait_for(lambda: len(reporter.ups) == 2 or watcher.done(), timeout=120)
        assert not watcher.done()

        down_at, reason, restarts, _ = reporter.downs[0]
        up_at, second_pid, second_port, second_token = reporter.ups[1]
        assert reason == "marimo exited unexpectedly with code -9"
        assert restarts == sup.restarts == 1
        assert second_pid == sup.pid != first_pid
        assert second_token != first_token  # a new generation, a new secret
        assert await health_ok(second_port)
        assert not alive(first_pid)
        # The first retry waits 1 s plus up to 1 s of jitter, and says so.
        assert len(reporter.delays) == 1 and 1.0 <= reporter.delays[0] <= 2.0
        assert up_at - down_at >= reporter.delays[0]
        kinds = [e[0] for e in reporter.events if e[0] in ("up", "down", "retrying", "done")]
        assert kinds == ["up", "down", "retrying", "up", "done"]
    assert not alive(second_pid)


@async_test(timeout=180)
async def test_crash_loop_stops_after_bounded_attempts_with_last_output(tmp_path: Path) -> None:
    """marimo runs once, is killed, and from then on its interpreter exits at once (a broken
    package, say): three quick crashes in a row end the restarts, reported with that output."""
    runs = tmp_path / "runs"
    stand_in = tmp_path / "bin" / "python"
    stand_in.parent.mkdir()
    stand_in.write_text(
        "#!/bin/sh\n"
        f'echo run >> "{runs}"\n'
        f'if [ "$(wc -l < "{runs}")" -eq 1 ]; then exec "{sys.executable}" "$@"; fi\n'
        f'echo "Traceback (most recent call last):"; echo "{BROKEN}" >&2\n'
        "exit 1\n",
        encoding="utf-8",
    )
    stand_in.chmod(0o755)
    reporter = TimedReporter()
    sup = supervisor(tmp_path, stand_in, reporter)
    async with watched(sup) as watcher:
        first_pid = reporter.ups[0][1]
        os.killpg(first_pid, signal.SIGKILL)
        with pytest.raises(PermanentError) as gave_up:
            await asyncio.wait_for(watcher, 120)

    assert "crashed 3 times in a row; giving up" in str(gave_up.value)
    assert BROKEN in str(gave_up.value)
    # One real run, then exactly two failed relaunches: bounded, and nothing after giving up.
    assert runs.read_text().count("run") == 3
    assert [restarts for _, _, restarts, _ in reporter.downs] == [1, 2, 3]
    assert reporter.downs[0][1] == "marimo exited unexpectedly with code -9"
    assert [reason for _, reason, _, _ in reporter.downs[1:]] == [
        "marimo exited unexpectedly with code 1"
    ] * 2
    last_output = reporter.downs[-1][3]
    assert BROKEN in last_output  # what the status page shows as marimo's last words
    # Backoff grows: about 1 s then about 2 s (each plus up to 1 s of jitter), announced first.
    assert len(reporter.delays) == 2
    assert 1.0 <= reporter.delays[0] <= 2.0 and 2.0 <= reporter.delays[1] <= 3.0
    gaps = [b[0] - a[0] for a, b in zip(reporter.downs, reporter.downs[1:], strict=False)]
    assert all(gap >= delay for gap, delay in zip(gaps, reporter.delays, strict=True))
    assert len(reporter.ups) == 1


@async_test(timeout=240)
async def test_a_hung_marimo_is_killed_and_restarted_but_a_planned_restart_is_no_hang(
    tmp_path: Path,
) -> None:
    """With one missed probe enough to call marimo hung: restarts on request (marimo stopping,
    then booting) are never taken for a hang, since probing only covers a marimo that
    answered; a stopped marimo is reported hung, killed at once and started again."""
    reporter = TimedReporter()
    sup = supervisor(tmp_path, Path(sys.executable), reporter)
    sup.liveness = Liveness(interval=0.1, timeout=5.0, misses=1)
    async with watched(sup) as watcher:
        for n in (2, 3):
            await sup.restart()
            await wait_for(lambda n=n: len(reporter.ups) == n or watcher.done(), timeout=120)
        assert [reason for _, reason, _, _ in reporter.downs] == ["restart requested"] * 2
        assert sup.restarts == 0

        hung_pid = sup.pid
        assert hung_pid is not None
        os.kill(hung_pid, signal.SIGSTOP)
        try:
            await wait_for(lambda: len(reporter.ups) == 4 or watcher.done(), timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(hung_pid, signal.SIGCONT)
        assert not watcher.done()
        down_at, reason, restarts, _ = reporter.downs[-1]
        assert (reason, restarts, sup.restarts) == (HUNG, 1, 1)
        assert not alive(hung_pid) and sup.pid != hung_pid
        assert any(
            f"marimo (pid {hung_pid}): no answer to /health" in line for line in reporter.lines
        )
        # It hung soon after its start: the crash loop's backoff applies, and is announced.
        assert len(reporter.delays) == 1 and reporter.ups[-1][0] - down_at >= reporter.delays[0]
        assert (await health_ok(reporter.ups[-1][2])) is True
