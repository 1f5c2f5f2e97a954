"""The reliability suite's client mix straight against marimo, without the proxy: which sockets
marimo itself closes with ``1000 MARIMO_SHUTDOWN``.

    .venv/bin/python bench/ws_takeover.py [--seconds 30] [--own-files] [--no-load]

Five socket loops connect (``/ws?session_id=s_load_N``), read the first message, close, wait a
second and connect again, beside 145 HTTP loops (marimo's page and ``/api/status``), as
``tests/test_reliability.py`` does through the proxy. By default all five loops open the same
notebook; ``--own-files`` gives each its own.

What it shows (issue 17, point 10): with one notebook shared by several session ids, marimo
closes live sockets with ``MARIMO_SHUTDOWN``; with one notebook each, never. marimo edits a file
in one session: a client with another session id that connects while the owner's socket is
between a close and its reconnect *resumes* the orphaned session (renaming it to its own id),
and the next reconnect of either id calls ``disconnect_main_consumer()``, which ends whoever is
the session's editor by then: another client's live socket. Under load the loops drift apart,
so one lands in another's one-second gap; without load they stay in step and it never happens.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NOTEBOOK = "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n    x = 1\n    return\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def mix(base: str, seconds: float, own_files: bool, load: bool) -> collections.Counter[str]:
    from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    AsyncHTTPClient.configure(None, max_clients=300)
    client = AsyncHTTPClient()
    for _ in range(300):
        try:
            if (await client.fetch(base + "/health", raise_error=False)).code == 200:
                break
        except OSError:
            pass
        await asyncio.sleep(0.1)
    outcomes: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + seconds

    async def fetch_loop(kind: str, path: str, accept: str) -> None:
        while time.monotonic() < deadline:
            try:
                response = await client.fetch(
                    base + path, headers={"Accept": accept}, request_timeout=30
                )
                outcomes[f"{kind}:{response.code}"] += 1
            except HTTPClientError as error:
                outcomes[f"{kind}:{error.code}"] += 1

    async def ws_loop(n: int) -> None:
        name = f"load_{n}.py" if own_files else "load_0.py"
        url = base.replace("http", "ws") + f"/ws?session_id=s_load_{n}&file={name}"
        while time.monotonic() < deadline:
            connection = await websocket_connect(HTTPRequest(url))
            message = await connection.read_message()
            if message:
                outcomes[f"ws:ok ({json.loads(message)['op']})"] += 1
            else:
                outcomes[f"ws:closed {connection.close_code} {connection.close_reason}"] += 1
            connection.close()
            await asyncio.sleep(1)

    tasks = [ws_loop(n) for n in range(5)]
    if load:
        tasks += [fetch_loop("page", "/?file=load_0.py", "text/html") for _ in range(60)]
        tasks += [fetch_loop("api", "/api/status", "application/json") for _ in range(85)]
    await asyncio.gather(*tasks)
    client.close()
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--own-files", action="store_true", help="one notebook per socket loop")
    parser.add_argument("--no-load", action="store_true", help="the socket loops alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for n in range(5):
            Path(folder, f"load_{n}.py").write_text(NOTEBOOK, encoding="utf-8")
        port = free_port()
        argv = [sys.executable, "-m", "marimo", "edit", folder, "--headless", "--no-token"]
        argv += ["--host", "127.0.0.1", "-p", str(port), "--skip-update-check"]
        marimo = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "MARIMO_SKIP_UPDATE_CHECK": "1"},
        )
        try:
            outcomes = asyncio.run(
                mix(f"http://127.0.0.1:{port}", args.seconds, args.own_files, not args.no_load)
            )
        finally:
            marimo.terminate()
            marimo.wait(10)
    print(json.dumps(dict(sorted(outcomes.items()))))


if __name__ == "__main__":
    main()
