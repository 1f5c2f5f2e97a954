"""Startup, side by side in one run: medians and ratios.

    .venv/bin/python bench/startup.py [--runs 5]

Questions answered (each timed from process spawn, on this machine, alternating the contenders):
1. first response on the public port (``/-/healthy``, what a platform's probe asks), empty state,
   an install held open the whole time, vs a bare Tornado hello-world (the floor); and the first
   loading page a browser gets (``GET /``, served by Tornado once it has taken over);
2. marimo ready through the proxy on a warm state vs bare ``python -m marimo edit`` reaching
   ``/health``, plus how many installer processes the warm start spawned;
3. cold start to ready (venv created, requirements installed from a local index);
4. the earlier images' approach (venv, ``pip install -r``, then marimo), cold and warm.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.index import LocalIndex  # noqa: E402
from tests.support.orchestrator import free_port, hermetic_env  # noqa: E402
from tests.support.wheels import build_wheel  # noqa: E402

FLOOR = """
import tornado.ioloop, tornado.web, sys
class Hello(tornado.web.RequestHandler):
    def get(self): self.write("ok")
app = tornado.web.Application([(r"/.*", Hello)])
app.listen(int(sys.argv[1]), "127.0.0.1")
tornado.ioloop.IOLoop.current().start()
"""
NOTEBOOK = (
    "import marimo\napp = marimo.App()\n\n@app.cell\ndef _():\n    import bench_pkg_0\n    return\n"
)


def answered(url: str, want: int = 200, headers: dict[str, str] | None = None) -> bool:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == want)
    except urllib.error.HTTPError as error:
        return error.code == want
    except OSError:
        return False


def start_quiet(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """``argv`` started in a session of its own (so its whole group can be signalled), its
    output discarded."""
    return subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def time_until(
    argv: list[str],
    url: str,
    env: dict[str, str],
    timeout: float = 600,
    cwd: Path | None = None,
    headers: dict[str, str] | None = None,
) -> float:
    started = time.monotonic()
    process = start_quiet(argv, env=env, cwd=cwd)
    try:
        while time.monotonic() - started < timeout:
            if answered(url, headers=headers):
                return time.monotonic() - started
            if process.poll() is not None:
                raise RuntimeError(f"{argv[:4]} exited with {process.returncode}")
            time.sleep(0.005)
        raise RuntimeError(f"{url} did not answer within {timeout} s")
    finally:
        import contextlib
        import os
        import signal

        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def time_until_ready_pushed(argv: list[str], port: int, env: dict[str, str]) -> float:
    """Seconds from spawn until marimo answers ``/health`` through the proxy, learning of
    readiness the way the loading page does: one ``/-/events`` stream, no polling."""
    import http.client
    import json

    started = time.monotonic()
    process = start_quiet(argv, env=env)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{argv[:4]} exited with {process.returncode}")
            try:
                stream = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                stream.request("GET", "/-/events", headers={"Accept": "text/event-stream"})
                events = stream.getresponse()
                break
            except OSError:
                time.sleep(0.005)
        event = ""
        while line := events.fp.readline():
            text = line.decode().rstrip("\r\n")
            if text.startswith("event: "):
                event = text[7:]
            elif event == "status" and text.startswith("data: ") and json.loads(text[6:])["ready"]:
                break
        if not answered(f"http://127.0.0.1:{port}/health"):
            raise RuntimeError("ready was announced but /health did not answer through the proxy")
        elapsed = time.monotonic() - started
        stream.close()
        return elapsed
    finally:
        import contextlib
        import os
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)


def orchestrator_argv(notebooks: Path, state: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "orchestrator",
        str(notebooks),
        "--port",
        str(port),
        "--state-dir",
        str(state),
        "--host",
        "127.0.0.1",
        "--auth",
        "none",
    ]


def earlier_script(notebooks: Path, state: Path, port: int) -> list[str]:
    """The earlier images' start script. Here the "image" is this virtualenv, which
    ``--system-site-packages`` does not reach: a .pth layers it in, as the orchestrator does."""
    from jobs.venv import image_site_dirs

    venv = state / "venv"
    layer = "\\n".join(image_site_dirs())
    create = (
        f'{sys.executable} -m venv --system-site-packages "{venv}" && '
        f'printf "{layer}\\n" > "$(echo {venv}/lib/python*/site-packages)/_image.pth"'
    )
    script = (
        f'{{ [ -x "{venv}/bin/python" ] || {{ {create}; }}; }} && '
        f'"{venv}/bin/python" -m pip install -q -r "{notebooks}/requirements.txt" && '
        f'exec "{venv}/bin/python" -m marimo edit "{notebooks}" --headless --no-token '
        f"--skip-update-check --host 127.0.0.1 -p {port}"
    )
    return ["bash", "-c", script]


def median_of(runs: int, measure: Callable[[], float]) -> list[float]:
    return [measure() for _ in range(runs)]


def row(name: str, values: list[float], reference: float | None) -> str:
    med = statistics.median(values)
    ratio = f"{med / reference:.2f}x" if reference else "-"
    return f"| {name} | {med:.3f} | {min(values):.3f} | {max(values):.3f} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--packages", type=int, default=20, help="wheels in the requirements file")
    args = parser.parse_args()
    # Installed, the orchestrator runs from bytecode (pip compiles what it installs, the image
    # included). A checkout run with PYTHONDONTWRITEBYTECODE set, as on this machine, would
    # otherwise compile every module from source at every start: do what pip does, once.
    import compileall

    for package in ("orchestrator", "jobs", "proxy"):
        compileall.compile_dir(ROOT / package, quiet=1)
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    wheels = work / "wheels"
    for number in range(args.packages):
        build_wheel(wheels, f"bench-pkg-{number}", "1.0", padding=200_000)
    notebooks = work / "notebooks"
    notebooks.mkdir()
    (notebooks / "notebook.py").write_text(NOTEBOOK)
    (notebooks / "requirements.txt").write_text(
        "".join(f"bench-pkg-{n}\n" for n in range(args.packages))
    )
    floor_script = work / "floor.py"
    floor_script.write_text(FLOOR)

    results: dict[str, list[float]] = {
        k: []
        for k in (
            "floor",
            "first",
            "page",
            "marimo",
            "warm",
            "warm_pushed",
            "cold",
            "old_cold",
            "old_warm",
        )
    }
    installers_in_warm: list[int] = []
    with LocalIndex(wheels) as index:
        env = hermetic_env(index.env())
        warm_state = work / "warm-state"
        port = free_port()
        time_until(
            orchestrator_argv(notebooks, warm_state, port), f"http://127.0.0.1:{port}/-/ready", env
        )
        old_warm_state = work / "old-warm"
        port = free_port()
        time_until(
            earlier_script(notebooks, old_warm_state, port), f"http://127.0.0.1:{port}/health", env
        )
        for run in range(args.runs):
            port = free_port()
            results["floor"].append(
                time_until(
                    [sys.executable, str(floor_script), str(port)], f"http://127.0.0.1:{port}/", env
                )
            )
            release = index.control.hold("bench-pkg-0")
            port = free_port()
            state = work / f"held-{run}"
            results["first"].append(
                time_until(
                    orchestrator_argv(notebooks, state, port),
                    f"http://127.0.0.1:{port}/-/healthy",
                    env,
                )
            )
            port = free_port()
            results["page"].append(
                time_until(
                    orchestrator_argv(notebooks, work / f"held-page-{run}", port),
                    f"http://127.0.0.1:{port}/",
                    env,
                    headers={"Accept": "text/html"},
                )
            )
            release.set()
            index.control.held.clear()
            port = free_port()
            results["marimo"].append(
                time_until(
                    [
                        sys.executable,
                        "-m",
                        "marimo",
                        "edit",
                        str(notebooks),
                        "--headless",
                        "--no-token",
                        "--skip-update-check",
                        "--host",
                        "127.0.0.1",
                        "-p",
                        str(port),
                    ],
                    f"http://127.0.0.1:{port}/health",
                    env,
                )
            )
            before = len(index.control.requests)
            port = free_port()
            results["warm"].append(
                time_until(
                    orchestrator_argv(notebooks, warm_state, port),
                    f"http://127.0.0.1:{port}/-/ready",
                    env,
                )
            )
            installers_in_warm.append(len(index.control.requests) - before)
            before = len(index.control.requests)
            port = free_port()
            results["warm_pushed"].append(
                time_until_ready_pushed(orchestrator_argv(notebooks, warm_state, port), port, env)
            )
            installers_in_warm.append(len(index.control.requests) - before)
            port = free_port()
            results["cold"].append(
                time_until(
                    orchestrator_argv(notebooks, work / f"cold-{run}", port),
                    f"http://127.0.0.1:{port}/-/ready",
                    env,
                )
            )
            port = free_port()
            results["old_cold"].append(
                time_until(
                    earlier_script(notebooks, work / f"old-cold-{run}", port),
                    f"http://127.0.0.1:{port}/health",
                    env,
                )
            )
            port = free_port()
            results["old_warm"].append(
                time_until(
                    earlier_script(notebooks, old_warm_state, port),
                    f"http://127.0.0.1:{port}/health",
                    env,
                )
            )

    floor = statistics.median(results["floor"])
    bare = statistics.median(results["marimo"])
    old_cold = statistics.median(results["old_cold"])
    old_warm = statistics.median(results["old_warm"])
    print(
        f"Startup, {args.runs} runs each, {args.packages} wheels of 200 KB from a local index; seconds from spawn.\n"
    )
    print("| contender | median | min | max | ratio |")
    print("|---|---|---|---|---|")
    print(row("bare Tornado hello-world, first response (floor)", results["floor"], floor))
    print(row("orchestrator, first response, empty state, install held", results["first"], floor))
    print(row("orchestrator, first loading page (GET / as a browser)", results["page"], floor))
    print(row("bare `python -m marimo edit`, /health", results["marimo"], bare))
    print(row("orchestrator, warm state, /-/ready polled every 5 ms", results["warm"], bare))
    print(
        row(
            "orchestrator, warm state, /health through the proxy once /-/events says ready",
            results["warm_pushed"],
            bare,
        )
    )
    print(row("earlier approach, warm (venv, pip install -r, marimo)", results["old_warm"], bare))
    print(row("earlier approach, cold", results["old_cold"], old_cold))
    print(row("orchestrator, cold state, /-/ready", results["cold"], old_cold))
    print(
        f"\nIndex requests during warm orchestrator starts: {installers_in_warm} (0 = no install ran)"
    )
    print(
        f"Earlier approach warm vs orchestrator warm: {old_warm / statistics.median(results['warm']):.2f}x slower"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    main()
