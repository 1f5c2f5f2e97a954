"""The probes answered while Tornado loads, and the hand-over of everything else to Tornado.

Real sockets on 127.0.0.1 and a real Tornado server; requests are raw bytes, as a platform's
probe or a browser would send them.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import tornado.httpserver
import tornado.web

from orchestrator.early import EarlyResponder
from orchestrator.listen import bind
from tests.support.orchestrator import OrchestratorFactory, free_port
from tests.support.proxy_harness import async_test


async def exchange(port: int, request: bytes, pause_after: int | None = None) -> bytes:
    """Send ``request`` (in two writes when ``pause_after`` is set) and read until closed or
    a complete response to it arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if pause_after is None:
        writer.write(request)
    else:
        writer.write(request[:pause_after])
        await writer.drain()
        await asyncio.sleep(0)  # the server sees the first part on its own
        writer.write(request[pause_after:])
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    body = b"" if request.startswith(b"HEAD") else await reader.readexactly(length)
    writer.close()
    return head + body


class Echo(tornado.web.RequestHandler):
    def get(self, path: str) -> None:
        self.write({"served_by": "tornado", "path": path})

    def post(self, path: str) -> None:
        self.write({"served_by": "tornado", "path": path, "body": self.request.body.decode()})


def status_and_json(response: bytes) -> tuple[int, dict[str, object], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body) if body else {}, head


@async_test(timeout=30)
async def test_probes_are_answered_and_everything_else_waits_for_tornado() -> None:
    port = free_port()
    sockets = bind("127.0.0.1", port)
    early = EarlyResponder(sockets, "boot-1", "'self'")

    code, body, head = status_and_json(
        await exchange(port, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
    )
    assert (code, body) == (200, {"status": "alive", "boot_id": "boot-1"})
    assert b"Cache-Control: no-store" in head and b"frame-ancestors 'self'" in head
    code, body, head = status_and_json(
        await exchange(port, b"GET /-/ready HTTP/1.1\r\nHost: x\r\n\r\n")
    )
    assert (code, body) == (503, {"ready": False, "phase": "starting"})
    assert b"Retry-After: 2" in head
    response = await exchange(port, b"HEAD /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"\r\n\r\n")
    assert early.answered == 3

    # Not probes: a page, a probe path with a body, a head split across two writes. None is
    # answered before Tornado takes over, and Tornado then gets each request whole.
    waiting = [
        asyncio.ensure_future(exchange(port, b"GET /notebook?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")),
        asyncio.ensure_future(
            exchange(
                port,
                b"POST /-/healthy HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            )
        ),
        asyncio.ensure_future(
            exchange(port, b"GET /split HTTP/1.1\r\nHost: x\r\n\r\n", pause_after=7)
        ),
    ]
    done, _ = await asyncio.wait(waiting, timeout=0.5)
    assert not done, "nothing but a probe is answered before the hand-over"
    assert early.answered == 3

    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/(.*)", Echo)]))
    early.hand_over(server)
    answers = [status_and_json(response) for response in await asyncio.gather(*waiting)]
    assert [(code, body) for code, body, _ in answers] == [
        (200, {"served_by": "tornado", "path": "notebook"}),
        (200, {"served_by": "tornado", "path": "-/healthy", "body": "hello"}),
        (200, {"served_by": "tornado", "path": "split"}),
    ]
    # And new connections go to Tornado directly.
    code, body, _ = status_and_json(
        await exchange(port, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
    )
    assert body == {"served_by": "tornado", "path": "-/healthy"}
    server.stop()
    await server.close_all_connections()


def test_a_port_in_use_is_named() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        bind("127.0.0.1", port)
    except Exception as error:
        assert str(error) == f"port {port} on 127.0.0.1 is already in use"
    else:
        raise AssertionError("binding a taken port succeeded")
    finally:
        taken.close()


def test_the_first_probe_and_the_full_server_report_one_boot(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    run = orchestrator(notebook_dir)
    run.wait_listening()
    code, _, body = run.get("/-/healthy", signed_in=False)
    assert code == 200
    first = json.loads(body)["boot_id"]
    status = run.wait_for(lambda s: s["steps"][0]["status"] != "pending", what="the jobs")
    assert status["boot_id"] == first
    assert run.terminate() == 0
