"""What a state volume on a network filesystem costs the environment, before and after (issue 29).

    .venv/bin/python bench/env_volume.py [--delays-ms 0,1,5] [--revisions main,WORKTREE]
        [--runs 1] [--timeout 600] [--package scipy]

For each delay (0: the state folder on plain local disk, no FUSE, the reference; otherwise the
state folder is a tests/support/slow_volume.py mount with that delay per file operation) and
each revision (a git revision exported with bench/revisions.py; ``WORKTREE`` is this working
tree's tracked files as they are now), the real orchestrator (``python -m orchestrator``, run
from the exported checkout's folder with this venv's interpreter, as bench/spawn_time.py does)
in Quix's layout: a notebooks folder with requirements.txt (pandas, plotly, polars, pyarrow),
the state folder ``state`` inside it, ``Quix__Deployment__State__Path`` set, no portal, sign-in
by token. Wheels come from a local index (tests/support/index.py) serving
``bench/.cache/env-wheels``, downloaded once from PyPI with ``pip download``.

A "container" is a ``TMPDIR`` of its own, ``container/tmp``; a new container has a fresh /tmp
at the same path, so a replacement deletes that folder and starts again with the same paths
(the after build's default ``--env-dir`` is ``$TMPDIR/marimo-orchestrator-env-<hash of the
state folder>``, the same in every container; ``--env-dir $TMPDIR/env`` is passed explicitly
when the revision's ``--help`` offers it).

Measured, in order, on one state:
1. cold start to ready: empty state, empty container, time from spawn to ``/-/ready`` 200;
2. ready after a container replacement: once the environment has a snapshot (after build with
   the environment on local disk: ``/-/status`` ``environment.snapshot`` set and
   ``snapshotting`` false; otherwise 3 s), SIGKILL of the orchestrator's process group (and
   every process of its tree), the container's TMPDIR deleted, a new one, start → ready;
   and until the environment is complete (every step finished, ``kernels_held`` false: after
   build, marimo may serve from a skeleton while the snapshot is restored, kernels held);
3. ``import pandas, plotly.express, polars, pyarrow`` with the venv's interpreter (the one
   marimo runs from: ``environment.path``, else ``state/venv``) after that replacement,
   median of 3 (the first, which writes the bytecode, is shown apart);
4. marimo's Install button: ``POST /api/packages/add`` ``{"package": NAME}`` through the
   orchestrator with the token and marimo's ``Marimo-Server-Token`` from its page, exactly as
   tests/support/orchestrator.py's ``marimo_install`` does (no session needed: without one
   marimo installs with its configured package manager into its own interpreter's venv),
   timed until it answers;
5. warm restart in the same container: SIGTERM, wait for exit, start again on the same state
   and the same TMPDIR → ready.

The interpreter's environment is the image's: ``PYTHONDONTWRITEBYTECODE`` is removed (the
Dockerfile does not set it), so the venv gets its bytecode as it would in a container.
A step that does not finish within ``--timeout`` is reported as "> timeout" and the rest of
that revision × delay is skipped. Nothing is left behind: every process is started in a
session of its own and killed by pid, and the mount's context manager unmounts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from revisions import export  # noqa: E402

from tests.support.index import LocalIndex  # noqa: E402
from tests.support.orchestrator import free_port, hermetic_env  # noqa: E402
from tests.support.slow_volume import slow_volume  # noqa: E402

PYTHON = sys.executable
WHEELS = BENCH / ".cache" / "env-wheels"
REQUIREMENTS = ["pandas", "plotly", "polars", "pyarrow"]
IMPORTS = "import pandas, plotly.express, polars, pyarrow"
NOTEBOOK = "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n    return\n"
MEASUREMENTS = {
    "cold": "Cold start to ready (empty state, requirements installed)",
    "replaced": "Ready after a container replacement (SIGKILL, fresh local disk, same state)",
    "complete": "... until a kernel may start (the packages restored, `kernels_held` false)",
    "imports": f"`{IMPORTS}` with marimo's interpreter after the replacement (median of 3)",
    "install": "marimo's Install button (`POST /api/packages/add`) through the orchestrator",
    "warm": "Warm restart of the orchestrator in the same container (SIGTERM, start again)",
}


class Timeout(Exception):
    pass


class Failed(Exception):
    pass


def ensure_wheels(package: str) -> None:
    wanted = [*REQUIREMENTS, package]
    have = {p.name.split("-")[0].lower() for p in WHEELS.glob("*.whl")}
    if all(name.replace("-", "_") in have for name in wanted):
        return
    WHEELS.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [PYTHON, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(WHEELS), *wanted],
        check=True,
    )


def http(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None = None,
    timeout: float = 10,
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@dataclass
class Run:
    """One orchestrator process, started in a session of its own, its output in ``log``."""

    checkout: Path
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: int
    token: str
    process: subprocess.Popen[bytes] = field(init=False)
    started: float = field(init=False)
    seen: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        with open(self.log, "ab") as output:
            self.started = time.monotonic()
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.checkout,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.seen.add(self.process.pid)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def remember_tree(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.seen.add(child.pid)

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def status(self) -> dict[str, Any] | None:
        try:
            code, body = http("GET", self.base + "/-/status", self.auth, timeout=5)
        except OSError:
            return None
        return dict(json.loads(body)) if code == 200 else None

    def time_to_ready(self, timeout: float) -> float:
        """Seconds from spawn to ``/-/ready`` answering 200."""
        while True:
            elapsed = time.monotonic() - self.started
            if elapsed > timeout:
                raise Timeout(f"not ready within {timeout:.0f} s")
            with contextlib.suppress(OSError):
                code, _ = http("GET", self.base + "/-/ready", self.auth, timeout=2)
                if code == 200:
                    return time.monotonic() - self.started
            if self.process.poll() is not None:
                raise Failed(f"exited with {self.process.returncode}:\n{self.tail()}")
            self.remember_tree()
            time.sleep(0.02)

    def time_to_complete(self, timeout: float) -> float:
        """Seconds from spawn until a kernel may start: marimo ready, the venv and requirements
        steps finished and no kernel held (``kernels_held``: the environment is still being
        restored; a build without it never holds)."""

        def complete(status: dict[str, Any]) -> bool:
            steps = {entry["name"]: entry["status"] for entry in status.get("steps", [])}
            finished = all(steps.get(name) in ("done", "skipped", "failed") for name in steps)
            return bool(status.get("ready")) and finished and not status.get("kernels_held")

        self.wait_status(complete, timeout, "the environment complete", interval=0.02)
        return time.monotonic() - self.started

    def wait_status(
        self, predicate: Any, timeout: float, what: str, interval: float = 0.2
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Failed(f"exited with {self.process.returncode}:\n{self.tail()}")
            status = self.status()
            if status is not None and predicate(status):
                return status
            self.remember_tree()
            time.sleep(interval)
        raise Timeout(f"{what}: not within {timeout:.0f} s")

    def install(self, package: str, timeout: float) -> float:
        """What marimo's Install button sends, through the orchestrator; seconds to its answer."""
        code, page = http("GET", self.base + "/", {**self.auth, "Accept": "text/html"})
        token = re.search(rb'<marimo-server-token data-token="([^"]+)"', page)
        if code != 200 or not token:
            raise Failed(f"marimo's page (HTTP {code}) carries no server token")
        started = time.monotonic()
        try:
            code, body = http(
                "POST",
                self.base + "/api/packages/add",
                {
                    **self.auth,
                    "Marimo-Server-Token": token.group(1).decode(),
                    "Content-Type": "application/json",
                },
                json.dumps({"package": package}).encode(),
                timeout=timeout,
            )
        except TimeoutError as error:
            raise Timeout(f"no answer within {timeout:.0f} s") from error
        elapsed = time.monotonic() - started
        answer = json.loads(body) if code == 200 else {}
        if not answer.get("success"):
            raise Failed(f"HTTP {code}: {body[:300]!r}")
        return elapsed

    def kill(self) -> None:
        """A container's end: SIGKILL to the process group and to every process of the tree."""
        self.remember_tree()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in self.seen:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.wait_gone()

    def terminate(self, timeout: float = 60) -> None:
        """A graceful stop (what tini forwards); SIGKILL if it takes longer than ``timeout``."""
        self.remember_tree()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"  (SIGTERM not obeyed in {timeout} s: killed)", file=sys.stderr)
        self.kill()

    def wait_gone(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for pid in self.seen:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(pid)
                while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    if time.monotonic() > deadline:
                        raise Failed(f"process {pid} survived SIGKILL")
                    time.sleep(0.05)


def supports_env_dir(checkout: Path, env: dict[str, str]) -> bool:
    shown = subprocess.run(
        [PYTHON, "-m", "orchestrator", "--help"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return "--env-dir" in shown


@contextlib.contextmanager
def state_volume(cell: Path, delay_ms: float) -> Iterator[Path]:
    """``notebooks/state``: a plain folder at 0 ms, else a slow_volume mount over ``volume``."""
    state = cell / "notebooks" / "state"
    state.mkdir(parents=True)
    if delay_ms == 0:
        yield state
        return
    backing = cell / "volume"
    backing.mkdir()
    with slow_volume(backing, state, delay=delay_ms / 1000):
        yield state


def venv_python(status: dict[str, Any] | None, state: Path) -> Path:
    environment = (status or {}).get("environment")
    if environment and environment.get("path"):
        return Path(environment["path"]) / "bin" / "python"
    return state / "venv" / "bin" / "python"


def time_imports(python: Path, env: dict[str, str], timeout: float) -> tuple[float, float]:
    """(first, median of 3) seconds for the imports in a fresh interpreter."""
    times = []
    for _ in range(3):
        started = time.monotonic()
        try:
            subprocess.run(
                [str(python), "-c", IMPORTS],
                env=env,
                check=True,
                capture_output=True,
                timeout=timeout,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as error:
            raise Timeout(f"imports not done within {timeout:.0f} s") from error
        except subprocess.CalledProcessError as error:
            raise Failed(f"imports failed: {error.stderr.decode()[-500:]}") from error
        times.append(time.monotonic() - started)
    return times[0], statistics.median(times)


def measure(
    revision: str,
    checkout: Path,
    delay_ms: float,
    cell: Path,
    base_env: dict[str, str],
    package: str,
    timeout: float,
) -> tuple[dict[str, float | str], list[str]]:
    """Every measurement of one revision × delay; values are seconds or a reason."""
    results: dict[str, float | str] = {}
    notes: list[str] = []
    notebooks = cell / "notebooks"
    notebooks.mkdir(parents=True)
    (notebooks / "notebook.py").write_text(NOTEBOOK)
    (notebooks / "requirements.txt").write_text("".join(f"{n}\n" for n in REQUIREMENTS))
    token = "bench-" + os.urandom(8).hex()
    has_env_dir = supports_env_dir(checkout, base_env)
    runs: list[Run] = []

    def start(container: Path, state: Path, name: str) -> Run:
        tmp = container / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {
            **base_env,
            "TMPDIR": str(tmp),
            "Quix__Deployment__State__Path": str(state),
            "Quix__Deployment__State__Enabled": "true",
            "ORCHESTRATOR_AUTH": "token",
        }
        port = free_port()
        argv = [PYTHON, "-m", "orchestrator", str(notebooks), "--state-dir", str(state)]
        argv += ["--port", str(port), "--token", token, "--host", "127.0.0.1"]
        if has_env_dir:
            argv += ["--env-dir", str(tmp / "env")]
        run = Run(checkout, argv, env, cell / f"{name}.log", port, token)
        runs.append(run)
        return run

    container = cell / "container"
    step = "cold"
    try:
        with state_volume(cell, delay_ms) as state:
            try:
                first = start(container, state, "1-cold")
                results["cold"] = first.time_to_ready(timeout)
                status = first.status() or {}
                environment = status.get("environment")
                if environment is None:
                    notes.append("/-/status has no `environment`: the venv runs from the volume")
                else:
                    notes.append(
                        f"environment: location {environment.get('location')}, "
                        f"path {environment.get('path')} ({environment.get('reason')})"
                    )
                if environment and environment.get("location") == "local":
                    started = time.monotonic()
                    snap = first.wait_status(
                        lambda s: (
                            bool(s["environment"].get("snapshot"))
                            and not s["environment"].get("snapshotting")
                        ),
                        timeout,
                        "snapshot",
                    )["environment"]["snapshot"]
                    notes.append(
                        f"snapshot ready {time.monotonic() - started:.1f} s after ready: "
                        f"{snap.get('size', 0) / 1e6:.0f} MB, {snap.get('files')} files, "
                        f"made in {snap.get('seconds')} s"
                    )
                else:
                    time.sleep(3)
                step = "replaced"
                first.kill()
                shutil.rmtree(container)  # a new container: the same paths, a fresh /tmp
                second = start(container, state, "2-replaced")
                results["replaced"] = second.time_to_ready(timeout)
                step = "complete"
                results["complete"] = second.time_to_complete(timeout)
                status = second.status()
                for entry in (status or {}).get("steps", []):
                    if entry.get("name") in ("venv", "requirements"):
                        spent = (entry.get("finished_at") or 0) - (entry.get("started_at") or 0)
                        notes.append(
                            f"after the replacement, {entry['name']} step {spent:.1f} s: "
                            f"{entry.get('message', '')[:160]}"
                        )
                python = venv_python(status, state)
                step = "imports"
                first_import, results["imports"] = time_imports(python, base_env, timeout)
                notes.append(f"first import run (writes bytecode): {first_import:.2f} s")
                step = "install"
                results["install"] = second.install(package, timeout)
                step = "warm"
                second.terminate()
                third = start(container, state, "3-warm")
                results["warm"] = third.time_to_ready(timeout)
            except Timeout as error:
                results[step] = "> timeout"
                notes.append(f"{step}: {error}")
            except Failed as error:
                results[step] = "failed"
                notes.append(f"{step} failed: {error}")
            finally:
                for run in runs:
                    with contextlib.suppress(Exception):
                        run.kill()
    except RuntimeError as error:  # the mount
        results[step] = "failed"
        notes.append(f"slow_volume: {error}")
    return results, notes


def cell_text(values: list[float | str]) -> str:
    numbers = [v for v in values if isinstance(v, float)]
    if not values:
        return "-"
    if len(numbers) < len(values):
        return " / ".join(v if isinstance(v, str) else f"{v:.2f} s" for v in values)
    return f"{statistics.median(numbers):.2f} s"


def _stop(signum: int, frame: object) -> None:
    """SIGTERM or SIGINT (ignored in a background job otherwise): unwind, so every process is
    killed and the mount unmounted by the ``finally`` blocks and context managers."""
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delays-ms", default="0,1,5")
    parser.add_argument("--revisions", default="main,WORKTREE")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per measurement")
    parser.add_argument("--package", default="scipy", help="what the Install button installs")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args()
    delays = [float(d) for d in args.delays_ms.split(",")]
    revisions = args.revisions.split(",")
    command = " ".join(["python bench/env_volume.py", *sys.argv[1:]])
    ensure_wheels(args.package)

    env = hermetic_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as in the image
    env["MARIMO_SKIP_UPDATE_CHECK"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    work = Path(tempfile.mkdtemp(prefix="bench-env-volume-"))
    checkouts: dict[str, Path] = {}
    for revision in revisions:
        checkouts[revision] = export("." if revision == "WORKTREE" else revision, work)
        # As in an image (and bench/startup.py): nothing of the orchestrator is compiled while timed.
        subprocess.run(
            [PYTHON, "-m", "compileall", "-q", "orchestrator", "jobs", "proxy"],
            cwd=checkouts[revision],
            check=True,
            env=env,
        )
    results: dict[tuple[str, float], dict[str, list[float | str]]] = {}
    all_notes: list[str] = []
    try:
        with LocalIndex(WHEELS) as index:
            base_env = {**env, **index.env()}
            for run in range(args.runs):
                for delay in delays:
                    for revision in revisions:
                        cell = work / f"{run}-{revision.replace('/', '_')}-{delay:g}ms"
                        started = time.monotonic()
                        got, notes = measure(
                            revision,
                            checkouts[revision],
                            delay,
                            cell,
                            base_env,
                            args.package,
                            args.timeout,
                        )
                        line = ", ".join(
                            f"{k} {v:.2f} s" if isinstance(v, float) else f"{k} {v}"
                            for k, v in got.items()
                        )
                        print(
                            f"[{revision} {delay:g} ms run {run + 1}] {line} "
                            f"({time.monotonic() - started:.0f} s)",
                            file=sys.stderr,
                            flush=True,
                        )
                        for note in notes:
                            print(f"    {note}", file=sys.stderr, flush=True)
                            all_notes.append(f"{revision}, {delay:g} ms: {note}")
                        slot = results.setdefault((revision, delay), {k: [] for k in MEASUREMENTS})
                        for key, value in got.items():
                            slot[key].append(value)
    finally:
        if args.keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    print(
        f"    {command}\n\n{date}; {args.runs} run(s) per cell; local index, {len(list(WHEELS.glob('*.whl')))} wheels; "
        f"Install button: `{args.package}`.\n"
    )
    for key, title in MEASUREMENTS.items():
        print(f"#### {title}\n")
        print("| revision | delay | time | ratio to 0 ms |")
        print("|---|---|---|---|")
        for revision in revisions:
            reference = results.get((revision, 0.0), {}).get(key, [])
            ref_numbers = [v for v in reference if isinstance(v, float)]
            for delay in delays:
                values = results.get((revision, delay), {}).get(key, [])
                numbers = [v for v in values if isinstance(v, float)]
                ratio = "-"
                if numbers and ref_numbers and len(numbers) == len(values):
                    ratio = f"{statistics.median(numbers) / statistics.median(ref_numbers):.1f}x"
                print(f"| {revision} | {delay:g} ms | {cell_text(values)} | {ratio} |")
        print()
    if all_notes:
        print("Notes:\n")
        for note in all_notes:
            print(f"- {note}")


if __name__ == "__main__":
    main()
