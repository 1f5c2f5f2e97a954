"""How soon a warm start spawns marimo, for several git revisions side by side.

    .venv/bin/python bench/spawn_time.py REV [REV ...] [--runs 15]

On a warm state the orchestrator starts marimo before anything else (jobs/head_start.py), and
marimo's own start is most of a warm start: every millisecond spent importing before that spawn
is a millisecond on the time to a working editor. Each revision is exported with ``git
archive`` (``.``: the working tree's tracked files, as they are), byte-compiled as an image
installs it, and started in turn (``python -m orchestrator`` from that copy,
with this venv) on one warm state; an audit hook (a ``sitecustomize`` on ``PYTHONPATH``) notes
the wall-clock time and the number of imported modules at the first ``subprocess.Popen`` that
runs marimo. The orchestrator is then killed (its parent-death watch stops marimo).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))  # after the project: bench/proxy.py must not hide proxy/

from revisions import export  # noqa: E402
from startup import orchestrator_argv, start_quiet  # noqa: E402

from tests.support.orchestrator import free_port  # noqa: E402

PYTHON = sys.executable

PROBE = """
import os, sys, time

def _on_spawn(event, args):
    if event == "subprocess.Popen" and any("marimo" == str(a) for a in args[1] or ()):
        try:
            with open(os.environ["SPAWN_AT"], "x") as report:
                report.write(f"{time.time()!r} {len(sys.modules)}")
        except FileExistsError:
            pass  # a later spawn, or marimo's own process (it inherits PYTHONPATH)

if os.environ.get("SPAWN_AT"):
    sys.addaudithook(_on_spawn)
"""


def warm(checkout: Path, notebooks: Path, state: Path) -> None:
    """Runs the orchestrator once until marimo is ready, then stops it: the state is warm."""
    port = free_port()
    process = start_quiet(orchestrator_argv(notebooks, state, port), cwd=checkout)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            url = f"http://127.0.0.1:{port}/-/ready"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
            time.sleep(0.2)  # an external process preparing its state: polled
        raise SystemExit("the orchestrator did not become ready within 300 s")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def spawn_after(checkout: Path, notebooks: Path, state: Path, probe: Path) -> tuple[float, int]:
    """Seconds from starting the orchestrator to its spawning marimo, and modules imported."""
    marker = probe / "spawned"
    marker.unlink(missing_ok=True)
    env = dict(os.environ, SPAWN_AT=str(marker), PYTHONPATH=str(probe))
    started = time.time()
    process = start_quiet(orchestrator_argv(notebooks, state, free_port()), env=env, cwd=checkout)
    try:
        while not (marker.exists() and marker.read_text()):
            if process.poll() is not None:
                raise SystemExit(f"{checkout.name}: the orchestrator exited ({process.returncode})")
            time.sleep(0.002)  # another process's file: nothing to wait on but polling
        at, modules = marker.read_text().split()
        return float(at) - started, int(modules)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        gone_with(notebooks)


def gone_with(notebooks: Path, timeout: float = 30) -> None:
    """Waits until no process runs on ``notebooks`` (the killed orchestrator's marimo, stopped by
    its parent-death watch), so the next run does not share the cores with it."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = []
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if str(notebooks) in (process.info["cmdline"] or []):
                    busy.append(process)
        if not busy:
            return
        psutil.wait_procs(busy, timeout=1)
    raise SystemExit(f"a process still runs on {notebooks} {timeout} s after its orchestrator died")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revisions", nargs="+", help="git revisions; '.' is the working tree")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-spawn-"))
    try:
        notebooks = work / "notebooks"
        notebooks.mkdir()
        (notebooks / "notebook.py").write_text("import marimo\n\napp = marimo.App()\n")
        probe = work / "probe"
        probe.mkdir()
        (probe / "sitecustomize.py").write_text(PROBE)
        state = work / "state"
        checkouts = {revision: export(revision, work) for revision in args.revisions}
        for checkout in checkouts.values():
            # As in an image (and bench/startup.py): nothing is compiled while timed.
            subprocess.run(
                [PYTHON, "-m", "compileall", "-q", "orchestrator", "jobs", "proxy"],
                cwd=checkout,
                check=True,
                env=dict(os.environ, PYTHONDONTWRITEBYTECODE=""),
            )
        warm(checkouts[args.revisions[0]], notebooks, state)
        seconds: dict[str, list[float]] = {r: [] for r in args.revisions}
        modules: dict[str, int] = {}
        for run in range(args.runs):
            order = args.revisions if run % 2 == 0 else args.revisions[::-1]
            for revision in order:
                took, count = spawn_after(checkouts[revision], notebooks, state, probe)
                seconds[revision].append(took)
                modules[revision] = count
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n`bench/spawn_time.py {' '.join(sys.argv[1:])}`, load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| revision | marimo spawned after, ms (median, min to max) | modules imported by then |")
    print("|---|---:|---:|")
    for revision in args.revisions:
        values = sorted(seconds[revision])
        print(
            f"| {revision} | {statistics.median(values) * 1000:.0f} "
            f"({values[0] * 1000:.0f} to {values[-1] * 1000:.0f}) | {modules[revision]} |"
        )


if __name__ == "__main__":
    main()
