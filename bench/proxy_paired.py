"""The proxy from several git revisions at one connection, in paired rounds: is one slower?

    .venv/bin/python bench/proxy_paired.py REV [REV ...] [--rounds 30] [--duration 2]
        [--path /health] [--calls]

``bench/proxy.py`` answers "how do we compare with nginx"; its three rounds of 5 s cannot tell
a 3 % difference between two builds of our own proxy apart on this machine, where one round's
CPU per request moves by a quarter from the next. Here each revision's ``proxy/`` (``.``: the
working tree's tracked files) runs alone in a process (``bench/proxy.py``'s
``STANDALONE_PROXY``) in front of one bare ``marimo edit``, and every round runs ``wrk -t1
-c1`` against each of them back to back, in an order that rotates, so the machine's drift
touches all of them alike. Each revision is
then compared with the first one round by round: the median of those paired ratios, with a 95 %
bootstrap interval. An interval that holds 1.00 is "no difference this machine can see".

``--calls`` also counts, under cProfile, the Python function calls each revision makes per
request: a figure that does not move with the machine's load (it counts work, not time; C code
such as system calls and regular expressions counts once per call, whatever it costs).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))  # after the project: bench/proxy.py must not hide proxy/

from revisions import export  # noqa: E402
from startup import start_quiet  # noqa: E402


def _load_proxy_bench() -> ModuleType:
    """``bench/proxy.py``, whose name is taken by the ``proxy`` package."""
    spec = importlib.util.spec_from_file_location("bench_proxy", ROOT / "bench" / "proxy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_proxy"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_bench = _load_proxy_bench()
STANDALONE_PROXY: str = _bench.STANDALONE_PROXY
cpu_seconds = _bench.cpu_seconds
free_port = _bench.free_port
wait_http = _bench.wait_http

PYTHON = sys.executable

NOTEBOOK = "import marimo\n\napp = marimo.App()\n"

PROFILED_PROXY = """
import asyncio, cProfile, pstats, signal, sys
sys.path.insert(0, sys.argv[1])
import tornado.httpserver, tornado.web
from proxy.routes import proxy_rules
import proxy.routes as routes
OPEN = {}  # no sign-in, by name where the proxy requires a guard (older revisions take none)
if hasattr(routes, "admit_everyone"):
    OPEN = dict(guard=routes.admit_everyone, admits_at_once=routes.admits_everyone_at_once)
from proxy.upstream import Upstream

profile = cProfile.Profile()

def dump() -> None:
    profile.disable()
    pstats.Stats(profile).dump_stats(sys.argv[4])
    asyncio.get_running_loop().stop()

async def main() -> None:
    upstream = Upstream("127.0.0.1", int(sys.argv[2]), 1, None)
    app = tornado.web.Application(
        proxy_rules(lambda: upstream, lambda: b"loading", **OPEN), compress_response=False
    )
    server = tornado.httpserver.HTTPServer(app, xheaders=False)
    server.listen(int(sys.argv[3]), "127.0.0.1")
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, profile.enable)
    loop.add_signal_handler(signal.SIGUSR2, dump)
    await asyncio.Event().wait()

try:
    asyncio.run(main())
except RuntimeError:
    pass  # the loop stopped by dump()
"""


def wrk(port: int, path: str, seconds: int) -> int:
    """Requests completed in one ``wrk -t1 -c1`` run."""
    out = subprocess.run(
        ["wrk", "-t1", "-c1", f"-d{seconds:g}s", f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"(\d+) requests in", out)
    if found is None:
        raise SystemExit(f"wrk printed no request count:\n{out}")
    return int(found.group(1))


def interval(ratios: list[float]) -> tuple[float, float, float]:
    """Median of ``ratios`` and its 95 % bootstrap interval (seeded: the same input, the same
    interval)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    return statistics.median(ratios), medians[50], medians[1949]


def count_calls(
    source: Path, marimo_port: int, path: str, work: Path, processes: list[subprocess.Popen[bytes]]
) -> float:
    import pstats

    port = free_port()
    out = work / f"calls-{port}.prof"
    process = start_quiet(
        [PYTHON, "-c", PROFILED_PROXY, str(source), str(marimo_port), str(port), str(out)]
    )
    processes.append(process)
    wait_http(f"http://127.0.0.1:{port}{path}")
    wrk(port, path, 1)  # warm: the pool's connection is open, the imports done
    process.send_signal(signal.SIGUSR1)
    requests = wrk(port, path, 3)
    process.send_signal(signal.SIGUSR2)
    if not requests:
        raise SystemExit(f"{source}: no request completed under the profiler")
    process.wait(timeout=60)
    stats = pstats.Stats(str(out))
    return stats.total_calls / requests  # type: ignore[attr-defined,no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revisions", nargs="+", help="git revisions; '.' is the working tree")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--duration", type=int, default=2, help="whole seconds per wrk run")
    parser.add_argument("--path", default="/health")
    parser.add_argument("--calls", action="store_true", help="also count calls per request")
    args = parser.parse_args()
    if args.rounds < 1 or args.duration < 1:
        raise SystemExit("--rounds and --duration must be at least 1")
    # A revision named twice runs twice (an A/A comparison): each is labelled by its position.
    labels = [
        rev if args.revisions.count(rev) == 1 else f"{rev} (#{i + 1})"
        for i, rev in enumerate(args.revisions)
    ]
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: bench/proxy.py installs it (apt-get install wrk)")

    work = Path(tempfile.mkdtemp(prefix="bench-paired-"))
    processes: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str]) -> subprocess.Popen[bytes]:
        process = start_quiet(argv)
        processes.append(process)
        return process

    try:
        (work / "notebook.py").write_text(NOTEBOOK)
        marimo_port = free_port()
        marimo = [PYTHON, "-m", "marimo", "edit", "--headless", "--no-token"]
        start([*marimo, "-p", str(marimo_port), "--host", "127.0.0.1", str(work / "notebook.py")])
        wait_http(f"http://127.0.0.1:{marimo_port}/health")
        exported = {rev: export(rev, work, "proxy") for rev in dict.fromkeys(args.revisions)}
        sources = {label: exported[rev] for label, rev in zip(labels, args.revisions, strict=True)}
        ports: dict[str, tuple[int, int]] = {}
        for revision, source in sources.items():
            port = free_port()
            process = start(
                [PYTHON, "-c", STANDALONE_PROXY, str(source), str(marimo_port), str(port)]
            )
            ports[revision] = (port, process.pid)
        for port, _ in ports.values():
            wait_http(f"http://127.0.0.1:{port}{args.path}")
            wrk(port, args.path, 1)  # warm
        rps: dict[str, list[float]] = {label: [] for label in labels}
        cpu: dict[str, list[float]] = {label: [] for label in labels}
        loads = []
        for round_ in range(args.rounds):
            shift = round_ % len(labels)  # every revision takes every place in turn
            order = labels[shift:] + labels[:shift]
            for revision in order:
                port, pid = ports[revision]
                before = cpu_seconds([pid])
                requests = wrk(port, args.path, args.duration)
                if not requests:
                    raise SystemExit(f"{revision}: no request completed in {args.duration} s")
                spent = cpu_seconds([pid]) - before
                rps[revision].append(requests / args.duration)
                cpu[revision].append(spent / requests * 1e6)
            loads.append(os.getloadavg()[0])
        calls = (
            {r: count_calls(s, marimo_port, args.path, work, processes) for r, s in sources.items()}
            if args.calls
            else {}
        )
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)

    command = " ".join(["bench/proxy_paired.py", *sys.argv[1:]])
    print(
        f"\n`{command}`: {args.rounds} rounds of `wrk -t1 -c1 -d{args.duration:g}s {args.path}` per "
        f"revision, load average {min(loads):.1f} to {max(loads):.1f}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
    )
    print(
        "| revision | req/s (median) | CPU µs/req (median) | req/s vs first [95 % CI] "
        "| CPU vs first [95 % CI] |" + (" Python calls/req |" if calls else "")
    )
    print("|---|---:|---:|---:|---:|" + ("---:|" if calls else ""))
    first = labels[0]
    for revision in labels:
        row = (
            f"| {revision} | {statistics.median(rps[revision]):.0f} "
            f"| {statistics.median(cpu[revision]):.0f} |"
        )
        if revision == first:
            row += " 1 | 1 |"
        else:
            for series in (rps, cpu):
                ratios = [a / b for a, b in zip(series[revision], series[first], strict=True)]
                median, low, high = interval(ratios)
                row += f" {median:.3f} [{low:.3f} to {high:.3f}] |"
        if calls:
            row += f" {calls[revision]:.0f} |"
        print(row)


if __name__ == "__main__":
    main()
