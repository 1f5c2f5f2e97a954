"""SIGKILL at random moments of a cold start: the next start always repairs itself.

Slow (about four minutes): run by ``make test-reliability``, which CI runs too.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from jobs.layout import StateLayout
from tests.support.index import LocalIndex
from tests.support.orchestrator import Orchestrator, hermetic_env
from tests.support.wheels import build_wheel

PACKAGES = [f"orch-heavy-{n}" for n in range(6)]


@pytest.fixture(scope="module")
def heavy_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalIndex]:
    wheels = tmp_path_factory.mktemp("heavy-wheels")
    for name in PACKAGES:
        build_wheel(wheels, name, "1.0", padding=4_000_000)
    with LocalIndex(wheels) as index:
        yield index


def all_gone(pids: set[int], timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while time.monotonic() < deadline:
        alive = [
            pid
            for pid in pids
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        ]
        if not alive:
            return []
        time.sleep(0.05)
    return alive


@pytest.mark.slow
@pytest.mark.marimo
def test_sigkill_at_random_moments_of_a_cold_start_always_recovers(
    tmp_path: Path, heavy_index: LocalIndex, notebook_dir: Path
) -> None:
    (notebook_dir / "requirements.txt").write_text("\n".join(PACKAGES) + "\n")
    env = hermetic_env(heavy_index.env())
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    chooser = random.Random(seed)

    calibration = Orchestrator(
        notebook_dir, tmp_path / "calibration", tmp_path / "calibration.log", env
    )
    try:
        status = calibration.wait_ready()
        cold = status["steps"][2]["finished_at"] - calibration.status()["started_at"]
    finally:
        calibration.kill_everything()

    kills = []
    for iteration in range(30):
        state = tmp_path / f"state-{iteration}"
        victim = Orchestrator(notebook_dir, state, tmp_path / f"victim-{iteration}.log", env)
        delay = chooser.uniform(0.05, cold + 0.5)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            victim.remember_tree()
            time.sleep(0.01)
        victim.remember_tree()
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.wait(timeout=10)
        victim._log.close()
        assert all_gone(victim.seen_pids) == [], (
            f"children outlived a SIGKILLed orchestrator (seed {seed})"
        )
        kills.append(round(delay, 2))

        survivor = Orchestrator(notebook_dir, state, tmp_path / f"survivor-{iteration}.log", env)
        try:
            survivor.wait_ready(timeout=120)
            status = survivor.status()
            assert status["phase"] == "ready", (seed, iteration, delay, status)
            modules = ", ".join(name.replace("-", "_") for name in PACKAGES)
            check = subprocess.run(
                [str(StateLayout(state).venv_python), "-c", f"import {modules}"],
                capture_output=True,
                text=True,
            )
            assert check.returncode == 0, (seed, iteration, delay, check.stderr)
            assert survivor.terminate() == 0
        finally:
            survivor.kill_everything()
    print(f"seed {seed}; cold start {cold:.2f} s; kills at {kills}")
