"""Run mode replicas: time to ready on one shared state folder vs a state folder each.

    .venv/bin/python bench/replicas.py [--runs 3] [--replicas 3] [--packages 6] [--package-mb 2]
        [--index-delay 0]

Each run starts ``--replicas`` orchestrators in run mode at the same moment, twice, alternating
which scenario goes first: all on one empty state folder (one builds, the others use what it
built), and each on its own empty state folder (every replica installs). Times are from spawn to
``/-/ready`` (marimo answering behind the proxy); the requirements are a handful of padded
wheels from a local index, so installs take measurable time. Also counted: installer runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.index import LocalIndex  # noqa: E402
from tests.support.orchestrator import Orchestrator, hermetic_env  # noqa: E402
from tests.support.wheels import build_wheel  # noqa: E402

NOTEBOOK = (
    "import marimo\napp = marimo.App()\n\n@app.cell\ndef _():\n    import bench_pkg_0\n    return\n"
)


def scenario(
    base: Path,
    index: LocalIndex,
    notebooks: Path,
    replicas: int,
    shared: bool,
    first: list[Orchestrator] | None = None,
) -> list[tuple[float, bool]]:
    """(seconds to ready, ran an installer) per replica, in start order."""
    base.mkdir(exist_ok=True)
    env = hermetic_env(index.env())
    runs = [
        Orchestrator(
            notebooks,
            base / ("shared" if shared else f"own-{number}"),
            base / f"replica-{len(first or ())}-{number}.log",
            env,
            ("--marimo-mode", "run"),
        )
        for number in range(replicas)
    ]
    ready: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 300
        while len(ready) < replicas and time.monotonic() < deadline:
            for number, run in enumerate(runs):
                if number in ready:
                    continue
                try:
                    code, _, _ = run.get("/-/ready", timeout=2)
                except OSError:
                    continue
                if code == 200:
                    ready[number] = time.monotonic() - run.started_at
            time.sleep(0.02)
        if len(ready) < replicas:
            raise SystemExit(f"not all replicas became ready; see the logs in {base}")
        return [
            (ready[number], "[requirements:uv]" in run.log_text())
            for number, run in enumerate(runs)
        ]
    finally:
        for run in [*runs, *(first or ())]:
            run.terminate()


def scale_out(
    base: Path, index: LocalIndex, notebooks: Path, replicas: int
) -> tuple[float, list[tuple[float, bool]]]:
    """Replica 1 alone on an empty shared folder until ready, then the others together."""
    base.mkdir()
    env = hermetic_env(index.env())
    one = Orchestrator(
        notebooks, base / "shared", base / "replica-1.log", env, ("--marimo-mode", "run")
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if one.get("/-/ready", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.02)
    first = time.monotonic() - one.started_at
    return first, scenario(base, index, notebooks, replicas - 1, True, [one])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--packages", type=int, default=6)
    parser.add_argument("--package-mb", type=float, default=2.0)
    parser.add_argument(
        "--index-delay",
        type=float,
        default=0.0,
        help="seconds every index request waits first (a remote index's latency)",
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as scratch:
        root = Path(scratch)
        wheels = root / "wheels"
        for number in range(options.packages):
            padding = int(options.package_mb * 1_000_000)
            build_wheel(wheels, f"bench-pkg-{number}", "1.0", padding=padding)
        notebooks = root / "notebooks"
        notebooks.mkdir()
        (notebooks / "notebook.py").write_text(NOTEBOOK, encoding="utf-8")
        (notebooks / "requirements.txt").write_text(
            "".join(f"bench-pkg-{number}\n" for number in range(options.packages)),
            encoding="utf-8",
        )
        results: dict[bool, list[list[tuple[float, bool]]]] = {True: [], False: []}
        later: list[tuple[float, list[tuple[float, bool]]]] = []
        with LocalIndex(wheels) as index:
            if options.index_delay:
                index.control.fault_rate = 1.0
                index.control.random_faults = (f"stall:{options.index_delay}",)
            for run in range(options.runs):
                order = (True, False) if run % 2 == 0 else (False, True)
                for shared in order:
                    where = root / f"run-{run}-{'shared' if shared else 'own'}"
                    results[shared].append(
                        scenario(where, index, notebooks, options.replicas, shared)
                    )
                where = root / f"run-{run}-later"
                later.append(scale_out(where, index, notebooks, options.replicas))
    shared_runs, own_runs = results[True], results[False]
    builder = [t for outcome in shared_runs for t, installed in outcome if installed]
    users = [t for outcome in shared_runs for t, installed in outcome if not installed]
    own = [t for outcome in own_runs for t, _ in outcome]
    installs = sum(installed for outcome in shared_runs for _, installed in outcome)
    print(
        f"{options.replicas} replicas in run mode, {options.runs} runs, requirements: "
        f"{options.packages} wheels of {options.package_mb} MB from a local index answering "
        f"each request after {options.index_delay} s"
    )
    print("  started together:")
    print(f"  one shared state folder: {installs} installer runs in {options.runs} runs")
    describe("the replica that built (replica 1)", builder)
    describe("the replicas that used its build (2, 3)", users)
    print("  a state folder each: every replica installs")
    describe("each replica", own)
    print("  one shared state folder, replicas 2, 3 started once replica 1 is ready")
    describe("replica 1 (installs)", [one for one, _ in later])
    describe("replicas 2, 3", [t for _, outcome in later for t, _ in outcome])
    reused = sum(installed for _, outcome in later for _, installed in outcome)
    print(f"    installer runs by replicas 2, 3: {reused}")
    print(
        f"  replicas 2, 3 vs replica 1: {statistics.median(users) / statistics.median(builder):.2f}x;"
        f" vs a replica with its own volume: {statistics.median(users) / statistics.median(own):.2f}x"
    )


def describe(label: str, times: list[float]) -> None:
    print(
        f"    {label}: median {statistics.median(times):5.2f} s "
        f"(min {min(times):5.2f}, max {max(times):5.2f}, n={len(times)})"
    )


if __name__ == "__main__":
    main()
