"""The proxy in front of a real ``marimo edit``, with the token injected by the proxy alone.

One marimo serves every test that leaves it intact (module fixture); the test that kills marimo
starts its own. marimo gets ``MARIMO_OUTPUT_MAX_BYTES`` raised so a cell can send a WebSocket
message larger than Tornado's default 10 MiB limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest, HTTPResponse
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.websocket import WebSocketClientConnection, websocket_connect

from orchestrator.status import StatusBoard
from tests.support.proxy_harness import (
    LOADING_PAGE,
    RawClient,
    Switch,
    async_test,
    closed_port,
    run_proxy,
    wait_for,
)
from tests.test_proxy_streaming import MiB, python_heap_peak, rss

pytestmark = pytest.mark.marimo  # every test here starts a real marimo

NOTEBOOK = """import marimo

app = marimo.App()


@app.cell
def _():
    x = 1
    return
"""

STATIC = Path(__import__("marimo").__file__).parent / "_static"
BIG_OUTPUT = 12 * 1000 * 1000
"""Characters of the cell output sent as one WebSocket message (above Tornado's 10 MiB)."""


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
    process: subprocess.Popen[bytes]
    directory: Path
    log: Path = field(repr=False)

    @property
    def authorization(self) -> str:
        return f"Bearer {self.token}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL to marimo's whole process group (kernels included); waits for the exit."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue


def _wait_healthy(marimo: Marimo) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if marimo.process.poll() is not None:
            pytest.fail(
                f"marimo exited with {marimo.process.returncode}:\n{marimo.log.read_text()}"
            )
        try:
            with urllib.request.urlopen(f"{marimo.base}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)  # polling an external process: there is nothing to wait on instead
    pytest.fail(f"marimo did not become healthy:\n{marimo.log.read_text()}")


def start_marimo(directory: Path) -> Marimo:
    """A ``marimo edit`` of a folder holding ``hello.py``, on a free port, answering /health."""
    notebooks = directory / "notebooks"
    notebooks.mkdir(parents=True, exist_ok=True)
    (notebooks / "hello.py").write_text(NOTEBOOK, encoding="utf-8")
    token = secrets.token_urlsafe(24)
    token_file = directory / "token"
    token_file.write_text(token, encoding="utf-8")
    port = closed_port()
    log = directory / "marimo.log"
    env = {
        **os.environ,
        "HOME": str(directory),
        "XDG_CONFIG_HOME": str(directory / "config"),
        "XDG_STATE_HOME": str(directory / "state"),
        "XDG_CACHE_HOME": str(directory / "cache"),
        "MARIMO_SKIP_UPDATE_CHECK": "1",
        "MARIMO_OUTPUT_MAX_BYTES": str(4 * BIG_OUTPUT),
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
            cwd=directory,
            start_new_session=True,
        )
    marimo = Marimo(port, token, process, notebooks, log)
    try:
        _wait_healthy(marimo)
    except BaseException:
        marimo.stop()
        raise
    return marimo


@pytest.fixture(scope="module")
def marimo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Marimo]:
    started = start_marimo(tmp_path_factory.mktemp("marimo"))
    try:
        yield started
    finally:
        started.stop()


def injecting(marimo: Marimo, generation: int = 1) -> Switch:
    switch = Switch()
    switch.point(marimo.port, generation, authorization=marimo.authorization)
    return switch


async def fetch(url: str, **kwargs: Any) -> HTTPResponse:
    client = SimpleAsyncHTTPClient(force_instance=True, max_body_size=1 << 30)
    try:
        return await client.fetch(HTTPRequest(url, **kwargs), raise_error=False)
    finally:
        client.close()


async def open_session(
    ws_base: str, session: str, **kwargs: Any
) -> tuple[WebSocketClientConnection, list[dict[str, Any]]]:
    """The editor's kernel socket for ``hello.py``, read up to ``kernel-ready``."""
    conn = await websocket_connect(
        HTTPRequest(f"{ws_base}/ws?session_id={session}&file=hello.py", **kwargs),
        max_message_size=64 * MiB,
    )
    seen: list[dict[str, Any]] = []
    while True:
        message = await conn.read_message()
        assert isinstance(message, str), f"socket closed before kernel-ready: {seen}"
        seen.append(json.loads(message))
        if seen[-1]["op"] == "kernel-ready":
            return conn, seen


async def drain_close(conn: WebSocketClientConnection) -> tuple[int | None, str | None]:
    while await conn.read_message() is not None:
        pass
    return conn.close_code, conn.close_reason


def server_token(page: bytes) -> str:
    found = re.search(rb'<marimo-server-token data-token="([^"]+)"', page)
    assert found, "marimo's page carries no server token"
    return found.group(1).decode()


@async_test(timeout=60)
async def test_real_marimo_page_and_kernel_socket_through_the_proxy(marimo: Marimo) -> None:
    async with run_proxy(injecting(marimo)) as proxy:
        page = await fetch(f"{proxy.base}/", headers={"Accept": "text/html"})
        assert page.code == 200
        assert page.headers["Content-Type"].startswith("text/html")
        assert b"<html" in page.body and b"marimo" in page.body
        assert marimo.token.encode() not in page.body

        # In directory mode marimo needs the file in the query: it must survive the proxy.
        conn, seen = await open_session(proxy.ws_base, secrets.token_hex(8))
        assert seen[-1]["op"] == "kernel-ready"
        conn.close(1000)
        await drain_close(conn)  # until the proxy completed the closing handshake
        # The proxy closes its leg to marimo in turn; let that finish before the loop ends.
        proxy.pool.close()
        await wait_for(lambda: not _connections_to(marimo.port))


@async_test(timeout=60)
async def test_header_rules_with_real_marimo(marimo: Marimo) -> None:
    """The browser never needs (nor sees) marimo's token, its own Authorization is replaced,
    and marimo's skew-protection header and cookies cross both ways."""
    async with run_proxy(injecting(marimo)) as proxy:
        page = await fetch(
            f"{proxy.base}/?file=hello.py",
            headers={"Accept": "text/html", "Authorization": "Bearer from-the-browser"},
        )
        assert page.code == 200
        for name, value in page.headers.get_all():
            assert marimo.token not in value, name
        assert "TornadoServer" not in page.headers.get("Server", "")
        token = server_token(page.body)

        conn, _ = await open_session(proxy.ws_base, session := secrets.token_hex(8))
        try:
            run = {"cellIds": ["Hbol"], "codes": ["x = 1"]}
            without = await fetch(
                f"{proxy.base}/api/kernel/run",
                method="POST",
                body=json.dumps(run),
                headers={"Marimo-Session-Id": session},
            )
            assert without.code == 401  # marimo's own skew protection, relayed as it is
            accepted = await fetch(
                f"{proxy.base}/api/kernel/run",
                method="POST",
                body=json.dumps(run),
                headers={"Marimo-Session-Id": session, "Marimo-Server-Token": token},
            )
            assert (accepted.code, json.loads(accepted.body)) == (200, {"success": True})
            assert accepted.headers.get_list("Set-Cookie"), "marimo's session cookie passes"
        finally:
            conn.close(1000)
            await drain_close(conn)

        # Without the injected token marimo refuses: the injection is what let all this in.
        proxy.switch.point(marimo.port, authorization=None)
        refused = await fetch(f"{proxy.base}/api/status", headers={"Accept": "application/json"})
        assert refused.code in (401, 403)


@async_test(timeout=60)
async def test_marimo_checks_its_cookie_instead_of_signing_a_new_one_per_request(
    marimo: Marimo,
) -> None:
    """With the orchestrator's upstream (which keeps marimo's session cookie), a client with no
    cookie costs marimo a signature check: after the first answer, no response carries a newly
    signed cookie. A cookie marimo does not accept falls back to the token, and the new one is
    kept."""
    switch = Switch()
    switch.point(marimo.port, authorization=marimo.authorization, session=True)
    name = f"session_{marimo.port}"
    wants_json = {"Accept": "application/json"}
    async with run_proxy(switch) as proxy:
        first = await fetch(f"{proxy.base}/api/status", headers=wants_json)
        assert first.code == 200, first.body
        assert [c.split("=")[0] for c in first.headers.get_list("Set-Cookie")] == [name]
        for _ in range(3):
            again = await fetch(f"{proxy.base}/api/status", headers=wants_json)
            assert again.code == 200, again.body
            assert again.headers.get_list("Set-Cookie") == []

        assert switch.upstream is not None and switch.upstream.session is not None
        switch.upstream.session.cookie = f"{name}=eyJhY2Nlc3NfdG9rZW4iOiAieCJ9.forged.sig"
        refused_cookie = await fetch(f"{proxy.base}/api/status", headers=wants_json)
        assert refused_cookie.code == 200, "the token still lets the request in"
        assert [c.split("=")[0] for c in refused_cookie.headers.get_list("Set-Cookie")] == [name]
        settled = await fetch(f"{proxy.base}/api/status", headers=wants_json)
        assert (settled.code, settled.headers.get_list("Set-Cookie")) == (200, [])


def _editor_assets() -> list[Path]:
    index = (STATIC / "index.html").read_text(encoding="utf-8")
    names = set(re.findall(r'\./assets/([^"\']+\.(?:js|css))', index))
    return [STATIC / "assets" / name for name in names]


@async_test(timeout=120)
async def test_largest_assets_download_intact_and_gzip_with_etags(marimo: Marimo) -> None:
    biggest = max((STATIC / "assets").iterdir(), key=lambda p: p.stat().st_size)
    editor = max(_editor_assets(), key=lambda p: p.stat().st_size)
    assert editor.suffix == ".js" and editor.stat().st_size > 500_000
    async with run_proxy(injecting(marimo)) as proxy:
        auth = {"Authorization": marimo.authorization}
        for asset in (biggest, editor):
            path = f"/assets/{asset.name}"
            direct = await fetch(f"{marimo.base}{path}", headers=auth)
            proxied = await fetch(f"{proxy.base}{path}", decompress_response=False)
            assert direct.code == proxied.code == 200
            assert proxied.body == direct.body == asset.read_bytes()
            assert proxied.headers["Content-Length"] == str(asset.stat().st_size)
            assert proxied.headers["ETag"] == direct.headers["ETag"]

        # The editor's biggest bundle, gzip-encoded on the way (marimo sends it uncompressed).
        path = f"/assets/{editor.name}"
        gz = {"Accept-Encoding": "gzip"}
        zipped = await fetch(f"{proxy.base}{path}", headers=gz, decompress_response=False)
        direct = await fetch(f"{marimo.base}{path}", headers={**auth, **gz})
        assert direct.headers.get("Content-Encoding") is None  # marimo did not compress it
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert "Content-Length" not in zipped.headers
        assert gzip.decompress(zipped.body) == direct.body
        assert len(zipped.body) < len(direct.body) / 2
        assert zipped.headers["ETag"] == "W/" + direct.headers["ETag"]
        assert "accept-encoding" in zipped.headers["Vary"].lower()
        # Revalidation with the weak tag still reaches marimo's 304 (it compares weakly).
        again = await fetch(
            f"{proxy.base}{path}",
            headers={**gz, "If-None-Match": zipped.headers["ETag"]},
            decompress_response=False,
        )
        assert (again.code, again.body) == (304, b"")
        assert again.headers["ETag"] == zipped.headers["ETag"]


@async_test(timeout=180)
async def test_200_mb_upload_streams_to_real_marimo_with_flat_memory(marimo: Marimo) -> None:
    """200 MB reach marimo while the proxy's memory stays flat. The body is one JSON string
    with a stray byte at its very end: marimo's error names that last byte's offset, which it
    can only know after reading everything. Its answer is relayed untouched."""
    size = 200 * MiB
    blocks = size // MiB
    async with run_proxy(injecting(marimo)) as proxy:
        client = await RawClient.connect(proxy.port)
        try:
            await client.send(
                "POST /api/kernel/execute HTTP/1.1\nHost: t\nContent-Type: application/json\n"
                f"Content-Length: {size}\n"
            )
            baseline, peak = rss(), 0
            with python_heap_peak() as heap:
                for i in range(blocks):
                    block = b"a" * MiB
                    if i == 0:
                        block = b'{"code": "' + block[10:]
                    if i == blocks - 1:
                        block = block[:-3] + b'"}!'
                    await client.stream.write(block)
                    if i % 8 == 0:
                        peak = max(peak, rss())
                response = await client.read_response()
        finally:
            client.close()
        assert response.status == 500, response.body  # marimo's answer to a malformed body
        # msgspec numbers bytes from 1: the stray one is the body's last.
        assert json.loads(response.body)["detail"].endswith(f"trailing characters (byte {size})")
        assert heap[0] < 40 * MiB, f"Python heap peaked at {heap[0] / MiB:.0f} MiB"
        assert peak - baseline < 40 * MiB, f"RSS grew by {(peak - baseline) / MiB:.0f} MiB"


@async_test(timeout=90)
async def test_kernel_execute_events_arrive_while_the_cell_still_runs(
    marimo: Marimo, tmp_path: Path
) -> None:
    """``POST /api/kernel/execute`` streams SSE: the first ``stdout`` event reaches the client
    while the code is still blocked (on a file only the test creates after receiving it)."""
    trigger = tmp_path / "go"
    code = (
        "import pathlib, time\n"
        "print('first', flush=True)\n"
        f"while not pathlib.Path({str(trigger)!r}).exists():\n"
        "    time.sleep(0.01)\n"
        "print('second', flush=True)\n"
    )
    async with run_proxy(injecting(marimo)) as proxy:
        conn, _ = await open_session(proxy.ws_base, session := secrets.token_hex(8))
        client = await RawClient.connect(proxy.port)
        try:
            body = json.dumps({"code": code}).encode()
            await client.send(
                "POST /api/kernel/execute HTTP/1.1\nHost: t\nContent-Type: application/json\n"
                f"Accept-Encoding: gzip\nMarimo-Session-Id: {session}\n"
                f"Content-Length: {len(body)}\n",
                body,
            )
            head = await client.read_head()
            assert head.status == 200
            assert (head.get("Content-Type") or "").startswith("text/event-stream")
            assert head.get("Content-Encoding") is None  # event streams are never compressed
            received = b""
            while b"first" not in received:
                received += await client.read_chunk()
            assert b"event: stdout" in received and b"second" not in received
            assert not trigger.exists()  # so the cell was still blocked when it arrived
            trigger.touch()
            while b"event: done" not in received:
                chunk = await client.read_chunk()
                assert chunk, f"stream ended early: {received!r}"
                received += chunk
            assert b"second" in received
        finally:
            client.close()
            conn.close(1000)
            await drain_close(conn)


@async_test(timeout=60)
async def test_subprotocol_and_close_codes_are_marimos(marimo: Marimo) -> None:
    async with run_proxy(injecting(marimo)) as proxy:
        # marimo selects no subprotocol; offered ones must not be invented by the proxy.
        conn = await websocket_connect(
            HTTPRequest(f"{proxy.ws_base}/ws?session_id={secrets.token_hex(8)}&file=hello.py"),
            subprotocols=["marimo-v1", "other"],
        )
        assert conn.selected_subprotocol is None
        conn.close(1000)
        await drain_close(conn)

        # marimo ends a kiosk socket without a session with its own code and reason.
        kiosk = f"/ws?session_id={secrets.token_hex(8)}&file=none.py&kiosk=true"
        direct = await websocket_connect(
            HTTPRequest(
                f"ws://127.0.0.1:{marimo.port}{kiosk}",
                headers={"Authorization": marimo.authorization},
            )
        )
        proxied = await websocket_connect(HTTPRequest(f"{proxy.ws_base}{kiosk}"))
        expected = await drain_close(direct)
        assert expected == (1000, "MARIMO_NO_SESSION")
        assert await drain_close(proxied) == expected

        # A handshake marimo refuses is refused with marimo's status.
        proxy.switch.point(marimo.port, authorization=None)
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(f"{proxy.ws_base}/ws?session_id=s&file=hello.py")
        assert refused.value.code == 403


@async_test(timeout=120)
async def test_twelve_megabyte_cell_output_crosses_as_one_message(marimo: Marimo) -> None:
    """A cell output larger than Tornado's default 10 MiB WebSocket limit reaches the browser."""
    async with run_proxy(injecting(marimo)) as proxy:
        page = await fetch(f"{proxy.base}/?file=hello.py", headers={"Accept": "text/html"})
        conn, _ = await open_session(proxy.ws_base, session := secrets.token_hex(8))
        try:
            run = {"cellIds": ["Hbol"], "codes": [f"'y' * {BIG_OUTPUT}"]}
            accepted = await fetch(
                f"{proxy.base}/api/kernel/run",
                method="POST",
                body=json.dumps(run),
                headers={
                    "Marimo-Session-Id": session,
                    "Marimo-Server-Token": server_token(page.body),
                },
            )
            assert accepted.code == 200, accepted.body
            while True:
                message = await conn.read_message()
                assert message is not None, "socket closed before the output arrived"
                if len(message) > BIG_OUTPUT:
                    break
            data = json.loads(message)
            assert data["op"] == "cell-op"
            output = data["data"]["output"]["data"]
            assert output.count("y") >= BIG_OUTPUT
        finally:
            conn.close(1000)
            await drain_close(conn)


async def _outage_answers(base: str) -> None:
    """During the outage: the loading page for a navigation, 503 for an API call; never 502."""
    page = await fetch(f"{base}/?file=hello.py", headers={"Accept": "text/html"})
    assert (page.code, page.body) == (200, LOADING_PAGE)
    api = await fetch(f"{base}/api/status", headers={"Accept": "application/json"})
    assert api.code == 503 and api.headers["Retry-After"]


@async_test(timeout=180)
async def test_marimo_killed_mid_session_then_replaced(tmp_path: Path) -> None:
    """SIGKILL to marimo under an open editor socket: 1012 for the socket, loading page or
    503 while marimo is away (before and after the supervisor notices), then a reconnect to the
    new marimo works. The lookup is the orchestrator's own status board."""
    board = StatusBoard()
    first = start_marimo(tmp_path / "first")
    second: Marimo | None = None
    try:
        board.marimo_up(first.process.pid, "127.0.0.1", first.port, first.token)
        async with run_proxy(Switch(), lookup=board.upstream) as proxy:
            conn, _ = await open_session(proxy.ws_base, session := secrets.token_hex(8))
            assert (await fetch(f"{proxy.base}/health")).code == 200
            first.kill()
            # The supervisor has not noticed yet: the socket still learns marimo is restarting.
            assert await asyncio.wait_for(drain_close(conn), 30) == (1012, "marimo is restarting")
            await _outage_answers(proxy.base)  # marimo's port refuses: not ready, not 502

            board.marimo_down("marimo exited unexpectedly with code -9", 1, [], "crash")
            await _outage_answers(proxy.base)
            with pytest.raises(HTTPClientError) as refused:
                await websocket_connect(f"{proxy.ws_base}/ws?session_id={session}&file=hello.py")
            assert refused.value.code == 503

            second = start_marimo(tmp_path / "second")
            board.marimo_up(second.process.pid, "127.0.0.1", second.port, second.token)
            conn, seen = await open_session(proxy.ws_base, session)
            assert seen[-1]["op"] == "kernel-ready"
            assert (await fetch(f"{proxy.base}/health")).code == 200
            conn.close(1000)
            await drain_close(conn)
    finally:
        first.stop()
        if second is not None:
            second.stop()
