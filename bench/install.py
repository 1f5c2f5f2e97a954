"""Cold install of the same requirements from the same local index, side by side; warm restart.

    .venv/bin/python bench/install.py [--runs 5] [--packages 20]

Contenders, alternating, each with an empty cache and a fresh venv (venv creation not counted):
- the orchestrator's ``requirements`` step (read from /-/status: finished_at - started_at);
- bare ``uv pip install -r`` into a fresh ``--system-site-packages`` venv;
- bare ``pip install -r`` into a fresh ``--system-site-packages`` venv.
Then a warm restart of the orchestrator on a finished state: the step must be ``skipped`` and
the index must receive no request (no installer ran).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.index import LocalIndex  # noqa: E402
from tests.support.orchestrator import Orchestrator, hermetic_env  # noqa: E402
from tests.support.wheels import build_wheel  # noqa: E402


def uv_bin() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


def fresh_venv(path: Path, env: dict[str, str], with_pip: bool = False) -> Path:
    if with_pip:  # pip seeded from the interpreter's bundled wheel, as the orchestrator does
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", str(path)], env=env, check=True
        )
        return path / "bin" / "python"
    subprocess.run(
        [
            uv_bin(),
            "venv",
            "-q",
            "--system-site-packages",
            "--python",
            sys.executable,
            str(path),
        ],
        env=env,
        check=True,
    )
    return path / "bin" / "python"


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--packages", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-install-"))
    wheels = work / "wheels"
    names = [f"bench-pkg-{n}" for n in range(args.packages)]
    for name in names:
        build_wheel(wheels, name, "1.0", padding=200_000)
    notebooks = work / "notebooks"
    notebooks.mkdir()
    (notebooks / "notebook.py").write_text("import marimo\napp = marimo.App()\n")
    requirements = notebooks / "requirements.txt"
    requirements.write_text("\n".join(names) + "\n")

    times: dict[str, list[float]] = {"orchestrator": [], "uv": [], "pip": []}
    warm_requests: list[int] = []
    warm_status: list[str] = []
    with LocalIndex(wheels) as index:
        base_env = hermetic_env(index.env())
        for run in range(args.runs):
            state = work / f"state-{run}"
            orchestrator = Orchestrator(notebooks, state, work / f"o-{run}.log", base_env)
            try:
                status = orchestrator.wait_ready(timeout=600)
                step = orchestrator.step(status, "requirements")
                assert step["status"] == "done", step
                times["orchestrator"].append(step["finished_at"] - step["started_at"])
                assert orchestrator.terminate() == 0
            finally:
                orchestrator.kill_everything()
            before = len(index.control.requests)
            again = Orchestrator(notebooks, state, work / f"w-{run}.log", base_env)
            try:
                status = again.wait_ready(timeout=600)
                warm_status.append(again.step(status, "requirements")["status"])
                warm_requests.append(len(index.control.requests) - before)
            finally:
                again.kill_everything()

            env = {**base_env, "UV_CACHE_DIR": str(work / f"uv-cache-{run}")}
            python = fresh_venv(work / f"uv-venv-{run}", env)
            times["uv"].append(
                timed(
                    [
                        uv_bin(),
                        "pip",
                        "install",
                        "-q",
                        "--python",
                        str(python),
                        "-r",
                        str(requirements),
                    ],
                    env,
                )
            )
            env = {**base_env, "PIP_CACHE_DIR": str(work / f"pip-cache-{run}")}
            python = fresh_venv(work / f"pip-venv-{run}", env, with_pip=True)
            times["pip"].append(
                timed([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], env)
            )

    uv = statistics.median(times["uv"])
    print(
        f"Cold install of {args.packages} wheels (200 KB each) from a local index, {args.runs} runs, seconds.\n"
    )
    print("| contender | median | min | max | ratio to bare uv |")
    print("|---|---|---|---|---|")
    for name, label in (
        ("orchestrator", "orchestrator `requirements` step (uv)"),
        ("uv", "bare `uv pip install -r`"),
        ("pip", "bare `pip install -r`"),
    ):
        values = times[name]
        print(
            f"| {label} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} | {statistics.median(values) / uv:.2f}x |"
        )
    print(
        f"\nWarm restart: requirements step {sorted(set(warm_status))}; index requests per warm start {warm_requests}"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
