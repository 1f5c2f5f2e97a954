"""``/-/events`` fan-out and the orchestrator's own memory, idle and under load.

    .venv/bin/python bench/events.py [--watchers 500] [--changes 20]

500 watchers hold /-/events open; the test then causes status changes (marimo restarts through
the restart API are too slow to repeat, so it triggers reinstall requests, each of which
publishes several status changes) and measures, for every change, the delay between the
orchestrator stamping it and each watcher receiving it. Memory is the RSS of the orchestrator
process alone (marimo and installers excluded), idle and with the watchers attached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.index import LocalIndex  # noqa: E402
from tests.support.orchestrator import Orchestrator, hermetic_env  # noqa: E402
from tests.support.wheels import build_wheel  # noqa: E402


async def watch(
    run: Orchestrator,
    delays: list[float],
    ready: asyncio.Event,
    count: list[int],
    stop: asyncio.Event,
    measuring: asyncio.Event,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", run.port)
    writer.write(
        f"GET /-/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {run.token}\r\n\r\n".encode()
    )
    await writer.drain()
    count[0] += 1
    if count[0] >= count[1]:
        ready.set()
    try:
        while not stop.is_set():
            line = await asyncio.wait_for(reader.readline(), timeout=60)
            if line.startswith(b"data: {") and b'"phase"' in line:
                received = time.time()
                status = json.loads(line[6:])
                if measuring.is_set():
                    delays.append(received - status["at"])
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-events-"))
    build_wheel(work / "wheels", "bench-pkg", "1.0")
    notebooks = work / "notebooks"
    notebooks.mkdir()
    (notebooks / "notebook.py").write_text("import marimo\napp = marimo.App()\n")
    (notebooks / "requirements.txt").write_text("bench-pkg\n")
    with LocalIndex(work / "wheels") as index:
        run = Orchestrator(notebooks, work / "state", work / "o.log", hermetic_env(index.env()))
        try:
            run.wait_ready()
            process = psutil.Process(run.process.pid)
            idle = process.memory_info().rss / 2**20
            delays: list[float] = []
            ready, stop, measuring = asyncio.Event(), asyncio.Event(), asyncio.Event()
            count = [0, args.watchers]
            watchers = [
                asyncio.create_task(watch(run, delays, ready, count, stop, measuring))
                for _ in range(args.watchers)
            ]
            await asyncio.wait_for(ready.wait(), 60)
            await asyncio.sleep(1)
            loaded = process.memory_info().rss / 2**20
            measuring.set()
            for _ in range(args.changes):
                before = len(delays)
                await asyncio.get_running_loop().run_in_executor(
                    None,
                    lambda: __import__("urllib.request").request.urlopen(
                        __import__("urllib.request").request.Request(
                            run.base + "/-/restart",
                            data=b'{"scope": "install"}',
                            headers={"Content-Type": "application/json", **run.auth},
                            method="POST",
                        ),
                        timeout=30,
                    ),
                )
                deadline = time.monotonic() + 30
                while len(delays) < before + args.watchers and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(1)
            peak = process.memory_info().rss / 2**20
            stop.set()
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        finally:
            run.kill_everything()
    delays.sort()
    p50 = statistics.median(delays) * 1000
    p99 = delays[int(len(delays) * 0.99) - 1] * 1000
    print(
        f"/-/events fan-out: {args.watchers} watchers, {args.changes} restart requests, {len(delays)} deliveries measured"
    )
    print("| measure | value |")
    print("|---|---|")
    print(f"| delivery p50 | {p50:.1f} ms |")
    print(f"| delivery p99 | {p99:.1f} ms |")
    print(f"| delivery max | {delays[-1] * 1000:.1f} ms |")
    print(f"| orchestrator RSS idle (marimo excluded) | {idle:.1f} MiB |")
    print(f"| orchestrator RSS with {args.watchers} watchers | {loaded:.1f} MiB |")
    print(f"| orchestrator RSS after the changes | {peak:.1f} MiB |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watchers", type=int, default=500)
    parser.add_argument("--changes", type=int, default=20)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
