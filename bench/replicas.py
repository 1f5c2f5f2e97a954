"""Run mode replicas: time to ready on one shared state folder vs a state folder each; with
``--switch``, the requests that fail while a requirements change moves every replica.

    .venv/bin/python bench/replicas.py [--runs 3] [--replicas 3] [--packages 6] [--package-mb 2]
        [--index-delay 0]
    .venv/bin/python bench/replicas.py --switch [--runs 3] [--replicas 3] [--packages 6]
        [--package-mb 2]

Each run starts ``--replicas`` orchestrators in run mode at the same moment, twice, alternating
which scenario goes first: all on one empty state folder (one builds, the others use what it
built), and each on its own empty state folder (every replica installs). Times are from spawn to
``/-/ready`` (marimo answering behind the proxy); the requirements are a handful of padded
wheels from a local index, so installs take measurable time. Also counted: installer runs.

``--switch``: each run starts ``--replicas`` orchestrators in run mode on one shared state folder,
waits until they serve, then, under a steady load (a viewer per replica loading the app page and
making an API call, and a tab per replica holding the app's WebSocket: tests/support/viewers.py),
adds a package to the requirements and waits until every replica serves from the new
environment with one marimo left. Counted: every answer that was not a 200 with the app (or
marimo's answer to the call), and the close codes the tabs saw.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.index import LocalIndex  # noqa: E402
from tests.support.orchestrator import Orchestrator, hermetic_env  # noqa: E402
from tests.support.viewers import Viewers  # noqa: E402
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


def marimo_pythons(run: Orchestrator) -> list[str]:
    """The interpreters of the replica's marimo server processes (two while it switches)."""
    import psutil

    found = []
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(run.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.cmdline()[1:3] == ["-m", "marimo"]:
                    found.append(child.cmdline()[0])
    return found


def switch_under_load(
    base: Path, index: LocalIndex, notebooks: Path, replicas: int, packages: int
) -> tuple[Viewers, float]:
    """One requirements change across ``replicas`` replicas under load: what the viewers saw,
    and the seconds from the change until every replica served from the new environment."""
    base.mkdir()
    requirements = notebooks / "requirements.txt"
    requirements.write_text(
        "".join(f"bench-pkg-{number}\n" for number in range(packages)), encoding="utf-8"
    )
    env = hermetic_env(index.env())
    runs = [
        Orchestrator(
            notebooks, base / "shared", base / f"replica-{n}.log", env, ("--marimo-mode", "run")
        )
        for n in range(replicas)
    ]
    try:
        deadline = time.monotonic() + 300
        while not all(ready(run) for run in runs):
            if time.monotonic() > deadline:
                raise SystemExit(f"not all replicas became ready; see the logs in {base}")
            time.sleep(0.1)
        (first,) = {python for run in runs for python in marimo_pythons(run)}
        with Viewers(runs, tabs=True) as viewers:
            changed = time.monotonic()
            requirements.write_text(
                requirements.read_text(encoding="utf-8") + "bench-pkg-extra\n", encoding="utf-8"
            )
            deadline = changed + 600
            while True:
                pythons = [marimo_pythons(run) for run in runs]
                if all(len(p) == 1 and p[0] != first for p in pythons) and all(
                    ready(run) for run in runs
                ):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"the replicas did not all move; see the logs in {base}")
                time.sleep(0.1)
            took = time.monotonic() - changed
            after = time.monotonic() + 2.0  # the load goes on a little on the new environment
            while time.monotonic() < after:
                time.sleep(0.1)
        return viewers, took
    finally:
        for run in runs:
            run.terminate()


def ready(run: Orchestrator) -> bool:
    try:
        return run.get("/-/ready", timeout=2)[0] == 200
    except OSError:
        return False


def switch_main(options: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-replicas-switch-") as scratch:
        root = Path(scratch)
        wheels = root / "wheels"
        padding = int(options.package_mb * 1_000_000)
        for number in range(options.packages):
            build_wheel(wheels, f"bench-pkg-{number}", "1.0", padding=padding)
        build_wheel(wheels, "bench-pkg-extra", "1.0", padding=padding)
        notebooks = root / "notebooks"
        notebooks.mkdir()
        (notebooks / "notebook.py").write_text(NOTEBOOK, encoding="utf-8")
        print(
            f"{options.replicas} replicas in run mode on one state folder, a requirements change "
            f"under load ({options.packages} + 1 wheels of {options.package_mb} MB), "
            f"{options.runs} runs"
        )
        failed_total = requests_total = 0
        with LocalIndex(wheels) as index:
            for run in range(options.runs):
                viewers, took = switch_under_load(
                    root / f"run-{run}", index, notebooks, options.replicas, options.packages
                )
                failed = viewers.failures()
                codes = collections.Counter(str(sample.code) for sample in failed)
                closes = collections.Counter(
                    str(close.code) if close.code else "refused" for close in viewers.closes
                )
                failed_total += len(failed)
                requests_total += len(viewers.samples)
                print(
                    f"  run {run + 1}: {len(failed)} of {len(viewers.samples)} requests failed "
                    f"{dict(codes) or ''}; every replica moved within {took:.1f} s; "
                    f"WebSocket closes {dict(closes)}"
                )
        print(f"  in all: {failed_total} of {requests_total} requests failed")


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
    parser.add_argument(
        "--switch",
        action="store_true",
        help="count the requests that fail while a requirements change moves every replica",
    )
    options = parser.parse_args()
    if options.switch:
        switch_main(options)
        return
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
