"""Dependencies in notebook headers (issue 25): the header scan's cost, a warm start, and a cold
start with the packages in headers against the same packages in requirements.txt.

    .venv/bin/python bench/headers.py [--notebooks 50] [--scans 200] [--runs 3]

Questions answered, on this machine:
1. the header scan (``jobs.sources.collect``, what the requirements step and the live watcher
   call) over a folder of marimo notebooks each carrying a PEP 723 header: with a cold
   ``HeaderCache`` (every notebook read and parsed; the OS page cache is warm) and with a warm
   one (nothing changed: no notebook read), median of ``--scans``; goal ≤ 20 ms;
2. a real orchestrator started twice on such a folder: the second (warm) start's requirements
   step, how many installer runs its log shows and how many requests reach the local index
   (goal: "skipped", 0, 0);
3. cold start (empty state: venv created, packages installed from the local index) to
   ``/-/ready`` and to the requirements step's end, the packages declared in the notebooks'
   headers vs the same packages in requirements.txt (the same notebooks without headers),
   alternating, ``--runs`` each; goal ≤ 1.05x.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs.script_headers import HeaderCache  # noqa: E402
from jobs.sources import collect  # noqa: E402
from tests.support.index import LocalIndex  # noqa: E402
from tests.support.orchestrator import Orchestrator, hermetic_env  # noqa: E402
from tests.support.wheels import build_wheel  # noqa: E402

PACKAGES = [f"bench-hdr-{n}" for n in range(4)]


def cell(number: int) -> str:
    return (
        "\n\n@app.cell\n"
        f"def _(mo):\n"
        f"    # cell {number}: some text so the file is the size of a real notebook\n"
        f"    values_{number} = [x * {number} for x in range(100)]\n"
        f'    mo.md(f"cell {number}: {{sum(values_{number})}}")\n'
        f"    return (values_{number},)\n"
    )


def notebook(number: int, with_header: bool) -> str:
    """A marimo notebook of ~25 cells importing two of :data:`PACKAGES` (declared in its header
    when ``with_header``)."""
    wanted = [PACKAGES[number % len(PACKAGES)], PACKAGES[(number + 1) % len(PACKAGES)]]
    header = ""
    if with_header:
        listed = "".join(f'#     "{name}",\n' for name in wanted)
        header = (
            '# /// script\n# requires-python = ">=3.11"\n'
            f'# dependencies = [\n#     "marimo",\n{listed}# ]\n# ///\n\n'
        )
    imports = "".join(f"    import {name.replace('-', '_')}\n" for name in wanted)
    body = "".join(cell(n) for n in range(25))
    return (
        f'{header}import marimo\n\n__generated_with = "0.0"\napp = marimo.App(width="medium")\n'
        f"\n\n@app.cell\ndef _():\n    import marimo as mo\n{imports}    return (mo,)\n"
        f'{body}\n\nif __name__ == "__main__":\n    app.run()\n'
    )


def folder(path: Path, count: int, with_headers: bool) -> Path:
    path.mkdir(parents=True)
    for number in range(count):
        (path / f"notebook_{number:02}.py").write_text(notebook(number, with_headers))
    if not with_headers:
        (path / "requirements.txt").write_text("".join(f"{name}\n" for name in PACKAGES))
    return path


def scan_times(path: Path, scans: int) -> tuple[list[float], list[float], int, int]:
    """(cold times, warm times, headers found, notebooks read by the warm scans)."""
    python = platform.python_version()
    cold, warm = [], []
    found = 0
    for _ in range(scans):
        started = time.perf_counter()
        declared = collect(path, None, {}, python, cache=HeaderCache())
        cold.append(time.perf_counter() - started)
        found = len(declared.headers)
    cache = HeaderCache()
    collect(path, None, {}, python, cache=cache)
    first_reads = cache.reads
    for _ in range(scans):
        started = time.perf_counter()
        collect(path, None, {}, python, cache=cache)
        warm.append(time.perf_counter() - started)
    return cold, warm, found, cache.reads - first_reads


def installer_runs(run: Orchestrator) -> int:
    return sum(
        1
        for line in run.log_text().splitlines()
        if "[requirements:uv]" in line or "[requirements:pip]" in line
    )


def cold_start(
    notebooks: Path, state: Path, log: Path, env: dict[str, str]
) -> tuple[float, float, float]:
    """(seconds from spawn to /-/ready, from spawn to the requirements step's end, the step's
    own duration) on an empty state."""
    run = Orchestrator(notebooks, state, log, env)
    try:
        run.wait_ready(timeout=600)
        spawned = time.monotonic() - run.started_at
        status = run.wait_for(
            lambda s: run.step(s, "requirements")["status"] in ("done", "failed"),
            timeout=600,
            what="the requirements step's end",
        )
        step = run.step(status, "requirements")
        assert step["status"] == "done", step
        installed_at = step["finished_at"]
        # /-/status times are wall clock; the spawn is on the monotonic clock.
        since_spawn = installed_at - (time.time() - (time.monotonic() - run.started_at))
        assert run.terminate() == 0
        return spawned, since_spawn, step["finished_at"] - step["started_at"]
    finally:
        run.kill_everything()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--notebooks", type=int, default=50)
    parser.add_argument("--scans", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-headers-"))
    try:
        wheels = work / "wheels"
        for name in PACKAGES:
            build_wheel(wheels, name, "1.0", padding=100_000)
        with_headers = folder(work / "headers", args.notebooks, True)
        with_requirements = folder(work / "requirements", args.notebooks, False)
        size = sum(p.stat().st_size for p in with_headers.glob("*.py")) // args.notebooks

        cold, warm, found, warm_reads = scan_times(with_headers, args.scans)

        with LocalIndex(wheels) as index:
            env = hermetic_env(index.env())
            # 2. warm start on the headers folder (the state inside it, as in Quix's layout).
            state = with_headers / "state"
            first = Orchestrator(with_headers, state, work / "first.log", env)
            try:
                step = first.step(
                    first.wait_for(
                        lambda s: s["ready"] and first.step(s, "requirements")["status"] == "done",
                        timeout=600,
                        what="first start installed",
                    ),
                    "requirements",
                )
                first_message = step["message"]
                assert first.terminate() == 0
            finally:
                first.kill_everything()
            before = len(index.control.requests)
            second = Orchestrator(with_headers, state, work / "second.log", env)
            try:
                status = second.wait_ready(timeout=600)
                warm_ready = time.monotonic() - second.started_at
                warm_step = second.step(status, "requirements")
                warm_requests = len(index.control.requests) - before
                warm_installers = installer_runs(second)
                assert second.terminate() == 0
            finally:
                second.kill_everything()
            shutil.rmtree(state, ignore_errors=True)

            # 3. cold starts, alternating.
            times: dict[str, list[tuple[float, float, float]]] = {"headers": [], "requirements": []}
            for run in range(args.runs):
                for name, path in (("headers", with_headers), ("requirements", with_requirements)):
                    state = work / f"state-{name}-{run}"
                    times[name].append(cold_start(path, state, work / f"{name}-{run}.log", env))
                    shutil.rmtree(state, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.2f} ms"

    print(
        f"    .venv/bin/python bench/headers.py --notebooks {args.notebooks} "
        f"--scans {args.scans} --runs {args.runs}\n"
    )
    print(
        f"#### Header scan (`jobs.sources.collect`), {args.notebooks} notebooks of ~{size // 1024} KB "
        f"with headers ({found} found), median of {args.scans}\n"
    )
    print("| HeaderCache | median | min | max | goal |")
    print("|---|---|---|---|---|")
    print(
        f"| cold (every notebook read) | {ms(cold)} | {min(cold) * 1000:.2f} ms | {max(cold) * 1000:.2f} ms | ≤ 20 ms |"
    )
    print(
        f"| warm (nothing changed; notebooks read: {warm_reads}) | {ms(warm)} | "
        f"{min(warm) * 1000:.2f} ms | {max(warm) * 1000:.2f} ms | ≤ 20 ms |"
    )
    print("\n#### Warm start on that folder (second start of a real orchestrator)\n")
    print("| requirements step | installer runs in its log | requests to the index | ready after |")
    print("|---|---|---|---|")
    print(
        f"| {warm_step['status']} ({warm_step['message']}) | {warm_installers} | {warm_requests} "
        f"| {warm_ready:.2f} s |"
    )
    print(f"\nFirst start's step message: {first_message}")
    print(
        f"\n#### Cold start, {len(PACKAGES)} wheels (100 KB each) from a local index, "
        f"{args.runs} alternating runs each, medians\n"
    )
    print(
        "| declared in | to /-/ready | to requirements step done | the step itself "
        "| per run (ready / done / step) |"
    )
    print("|---|---|---|---|---|")
    for name, label in (
        ("requirements", "requirements.txt (notebooks without headers)"),
        ("headers", f"the {args.notebooks} notebooks' headers"),
    ):
        values = times[name]
        per_run = ", ".join(f"{r:.2f} / {d:.2f} / {t:.2f}" for r, d, t in values)
        print(
            f"| {label} | {statistics.median(v[0] for v in values):.2f} s | "
            f"{statistics.median(v[1] for v in values):.2f} s | "
            f"{statistics.median(v[2] for v in values):.2f} s | {per_run} |"
        )

    def ratio(column: int) -> float:
        return statistics.median(v[column] for v in times["headers"]) / statistics.median(
            v[column] for v in times["requirements"]
        )

    print(
        f"\nRatio headers / requirements.txt: to ready {ratio(0):.3f}x, to installed "
        f"{ratio(1):.3f}x, the step itself {ratio(2):.3f}x (goal ≤ 1.05x)"
    )


if __name__ == "__main__":
    main()
