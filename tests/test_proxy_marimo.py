"""The proxy in front of a real ``marimo edit``, with the token injected by the proxy alone."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from tornado.httpclient import HTTPRequest
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.websocket import websocket_connect

from tests.conftest_proxy import Switch, async_test, closed_port, run_proxy, wait_for

NOTEBOOK = """import marimo

app = marimo.App()


@app.cell
def _():
    x = 1
    return
"""


def _connections_to(port: int) -> list[object]:
    return [
        c
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    ]


@dataclass
class Marimo:
    port: int
    token: str


def _wait_healthy(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"marimo exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)  # polling an external process: there is nothing to wait on instead
    pytest.fail(f"marimo did not become healthy:\n{log.read_text()}")


@pytest.fixture
def marimo(tmp_path: Path) -> Iterator[Marimo]:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "hello.py").write_text(NOTEBOOK, encoding="utf-8")
    token = secrets.token_urlsafe(24)
    token_file = tmp_path / "token"
    token_file.write_text(token, encoding="utf-8")
    port = closed_port()
    log = tmp_path / "marimo.log"
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "MARIMO_SKIP_UPDATE_CHECK": "1",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "marimo", "edit", str(notebooks)),
                *("--headless", "--no-sandbox", "--skip-update-check"),
                *("--host", "127.0.0.1", "-p", str(port)),
                *("--token-password-file", str(token_file)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
        )
    try:
        _wait_healthy(process, port, log)
        yield Marimo(port, token)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue


@async_test(timeout=60)
async def test_real_marimo_page_and_kernel_socket_through_the_proxy(marimo: Marimo) -> None:
    switch = Switch()
    switch.point(marimo.port, authorization=f"Bearer {marimo.token}")
    async with run_proxy(switch) as proxy:
        client = SimpleAsyncHTTPClient(force_instance=True)
        try:
            page = await client.fetch(
                HTTPRequest(f"{proxy.base}/", headers={"Accept": "text/html"}),
                raise_error=False,
            )
        finally:
            client.close()
        assert page.code == 200
        assert page.headers["Content-Type"].startswith("text/html")
        assert b"<html" in page.body and b"marimo" in page.body
        assert marimo.token.encode() not in page.body

        # In directory mode marimo needs the file in the query: it must survive the proxy.
        session = secrets.token_hex(8)
        conn = await websocket_connect(
            HTTPRequest(f"{proxy.ws_base}/ws?session_id={session}&file=hello.py")
        )
        try:
            first = await conn.read_message()
            assert isinstance(first, str)
            assert json.loads(first)["op"] == "kernel-ready"
        finally:
            conn.close(1000)
        while await conn.read_message() is not None:
            pass  # until the proxy completed the closing handshake
        # The proxy closes its leg to marimo in turn; let that finish before the loop ends.
        proxy.pool.close()
        await wait_for(lambda: not _connections_to(marimo.port))
