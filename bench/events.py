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
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.index import LocalIndex  # noqa: E402
from tests.support.orchestrator import Orchestrator, hermetic_env  # noqa: E402
from tests.support.wheels import build_wheel  # noqa: E402

WATCHERS = """
import asyncio, json, sys, time

async def watch(port, token, lines, ready, count, measuring, stop):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /-/events HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n"
        f"Authorization: Bearer {token}\\r\\n\\r\\n".encode()
    )
    await writer.drain()
    count[0] += 1
    if count[0] >= count[1]:
        ready.set()
    try:
        while not stop.is_set():
            line = await reader.readline()
            if not line:
                return
            if measuring[0] and line.startswith(b"data: {"):
                lines.append((time.time(), line))  # parsed after the run, not on the clock
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()

async def main():
    port, token, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    lines, ready, stop, count, measuring = [], asyncio.Event(), asyncio.Event(), [0, n], [False]
    tasks = [
        asyncio.create_task(watch(port, token, lines, ready, count, measuring, stop))
        for _ in range(n)
    ]
    await ready.wait()
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    print("ready", flush=True)
    await stdin.readline()  # "measure"
    measuring[0] = True
    await stdin.readline()  # "stop"
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    delays = []
    for received, line in lines:
        status = json.loads(line[6:])
        if "phase" in status and "at" in status:
            delays.append(received - status["at"])
    print(json.dumps(delays), flush=True)

asyncio.run(main())
"""


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-events-"))
    build_wheel(work / "wheels", "bench-pkg", "1.0")
    notebooks = work / "notebooks"
    notebooks.mkdir()
    (notebooks / "notebook.py").write_text("import marimo\napp = marimo.App()\n")
    (notebooks / "requirements.txt").write_text("bench-pkg\n")
    with LocalIndex(work / "wheels") as index:
        run = Orchestrator(notebooks, work / "state", work / "o.log", hermetic_env(index.env()))
        watchers: subprocess.Popen[str] | None = None
        try:
            run.wait_ready()
            process = psutil.Process(run.process.pid)
            idle = process.memory_info().rss / 2**20
            watchers = subprocess.Popen(
                [sys.executable, "-c", WATCHERS, str(run.port), run.token, str(args.watchers)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert watchers.stdin is not None and watchers.stdout is not None
            loop = asyncio.get_running_loop()
            line = await asyncio.wait_for(loop.run_in_executor(None, watchers.stdout.readline), 60)
            assert line.strip() == "ready", line
            await asyncio.sleep(1)
            loaded = process.memory_info().rss / 2**20
            watchers.stdin.write("measure\n")
            watchers.stdin.flush()
            await asyncio.sleep(0.5)
            for _ in range(args.changes):
                await loop.run_in_executor(
                    None,
                    lambda: urllib.request.urlopen(
                        urllib.request.Request(
                            run.base + "/-/restart",
                            data=b'{"scope": "install"}',
                            headers={"Content-Type": "application/json", **run.auth},
                            method="POST",
                        ),
                        timeout=30,
                    ),
                )
                # Let the reinstall's status changes reach every watcher before the next one.
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and run.status()["phase"] != "ready":
                    await asyncio.sleep(0.05)
                await asyncio.sleep(1)
            peak = process.memory_info().rss / 2**20
            watchers.stdin.write("stop\n")
            watchers.stdin.flush()
            delays: list[float] = json.loads(
                await loop.run_in_executor(None, watchers.stdout.readline)
            )
        finally:
            if watchers is not None:
                watchers.kill()
                watchers.wait()
            run.kill_everything()
    delays.sort()
    p50 = statistics.median(delays) * 1000
    p99 = delays[int(len(delays) * 0.99) - 1] * 1000
    print(
        f"/-/events fan-out: {args.watchers} watchers (in their own process),"
        f" {args.changes} restart requests, {len(delays)} deliveries measured"
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
