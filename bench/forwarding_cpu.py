"""CPU per sequential proxied request, for several checkouts of ``proxy/``, alternating.

    .venv/bin/python bench/forwarding_cpu.py CHECKOUT [CHECKOUT ...] [--runs 8] [--requests 5000]

Each CHECKOUT is a directory holding a ``proxy/`` package (this repository, or a
``git worktree add --detach /tmp/x <revision>``). For each, a child process runs
``proxy.routes.proxy_rules`` in front of a Tornado ``/health`` handler, with a keep-alive client
sending requests one at a time, all three on one event loop, and reports its CPU time per request
after a warm-up. The checkouts are run in turn, ``--runs`` times; the table gives the minimum and
the median of each. This isolates the proxy's own per-request work from scheduling and from
marimo (what ``bench/proxy.py``'s one-connection figure also includes); on this 2-core machine
its noise is about ±20 µs, so compare minimums over several runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import asyncio, socket, sys, time
sys.path.insert(0, sys.argv[1])
import tornado.httpserver, tornado.web
from proxy.routes import proxy_rules
import proxy.routes as routes
OPEN = {}  # no sign-in, by name where the proxy requires a guard (older revisions take none)
if hasattr(routes, "admit_everyone"):
    OPEN = dict(guard=routes.admit_everyone, admits_at_once=routes.admits_everyone_at_once)
from proxy.upstream import MarimoSession, Upstream


class Health(tornado.web.RequestHandler):
    def get(self):
        self.write("ok")


def listen(app):
    server = tornado.httpserver.HTTPServer(app)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    server.add_sockets([sock])
    return sock.getsockname()[1]


async def main(requests):
    backend = listen(tornado.web.Application([(r"/health", Health)]))
    # As the orchestrator builds it (older checkouts lack the constructor that says so).
    upstream = Upstream("127.0.0.1", backend, 1, "Bearer token", MarimoSession(backend))
    proxy = listen(
        tornado.web.Application(
            proxy_rules(lambda: upstream, lambda: b"loading", **OPEN), compress_response=False
        )
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
    request = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n"

    async def one():
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)

    for _ in range(300):
        await one()
    started = time.process_time()
    for _ in range(requests):
        await one()
    print((time.process_time() - started) / requests * 1e6)


asyncio.run(main(int(sys.argv[2])))
"""


def one_run(checkout: Path, requests: int) -> float:
    output = subprocess.run(
        [sys.executable, "-c", CHILD, str(checkout), str(requests)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    figures: dict[Path, list[float]] = {checkout: [] for checkout in args.checkouts}
    for run in range(args.runs):
        for checkout in args.checkouts:
            figures[checkout].append(one_run(checkout, args.requests))
        print(f"run {run + 1}: " + ", ".join(f"{v[-1]:.0f}" for v in figures.values()), flush=True)
    first = min(figures[args.checkouts[0]])
    print("\n| checkout | min µs/req | median µs/req | min vs the first |")
    print("|---|---:|---:|---:|")
    for checkout, values in figures.items():
        print(
            f"| {checkout} | {min(values):.0f} | {statistics.median(values):.0f}"
            f" | {min(values) / first:.2f}x |"
        )


if __name__ == "__main__":
    main()
