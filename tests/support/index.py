"""A PEP 503 "simple" package index on 127.0.0.1, served from a folder of wheels.

Tests can hold a download until they release it (to keep a job running on purpose, without
sleeping), and count every request (to prove that nothing was fetched).
"""

from __future__ import annotations

import hashlib
import http.server
import random
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class IndexControl:
    wheels: Path
    requests: list[str] = field(default_factory=list)
    held: dict[str, threading.Event] = field(default_factory=dict)
    arrived: dict[str, threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: list[str] = field(default_factory=list)
    """Queued answers for the next requests, in order: "503", "reset" or "stall:<seconds>"."""
    served_faults: list[str] = field(default_factory=list)
    fault_rate: float = 0.0
    """With no queued fault: the share of requests answered with a random fault."""
    random_faults: tuple[str, ...] = ("503", "reset", "stall:2")
    chooser: random.Random = field(default_factory=lambda: random.Random(7))
    stall_midway: dict[str, float] = field(default_factory=dict)
    """project → seconds: its downloads send half the file, then nothing for that long."""

    def hold(self, project: str) -> threading.Event:
        """Downloads of ``project``'s files wait until the returned event is set."""
        release = threading.Event()
        self.held[normalize(project)] = release
        self.arrived[normalize(project)] = threading.Event()
        return release

    def release_all(self) -> None:
        for event in self.held.values():
            event.set()


class _Handler(http.server.BaseHTTPRequestHandler):
    control: IndexControl
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        control = self.control
        with control.lock:
            control.requests.append(self.path)
            fault = control.faults.pop(0) if control.faults else None
            if (
                fault is None
                and control.fault_rate
                and control.chooser.random() < control.fault_rate
            ):
                fault = control.chooser.choice(control.random_faults)
            if fault:
                control.served_faults.append(fault)
        if fault == "503":
            self._send(503, b"unavailable", "text/plain")
            return
        if fault == "reset":
            import socket
            import struct

            # RST instead of FIN: what a flaky load balancer does.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if fault and fault.startswith("stall:"):
            threading.Event().wait(float(fault.split(":", 1)[1]))
        path = self.path.split("?", 1)[0]
        wheels = sorted(control.wheels.glob("*.whl"))
        if path in ("/simple", "/simple/"):
            names = sorted({normalize(w.name.split("-")[0]) for w in wheels})
            links = "".join(f'<a href="/simple/{n}/">{n}</a>\n' for n in names)
            self._send(200, f"<html><body>{links}</body></html>".encode(), "text/html")
            return
        if match := re.fullmatch(r"/simple/([^/]+)/?", path):
            project = normalize(match.group(1))
            files = [w for w in wheels if normalize(w.name.split("-")[0]) == project]
            if not files:
                self._send(404, b"not found", "text/plain")
                return
            links = "".join(
                f'<a href="/files/{w.name}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">'
                f"{w.name}</a>\n"
                for w in files
            )
            self._send(200, f"<html><body>{links}</body></html>".encode(), "text/html")
            return
        if match := re.fullmatch(r"/files/([^/]+)", path):
            target = control.wheels / match.group(1)
            if not target.is_file():
                self._send(404, b"not found", "text/plain")
                return
            project = normalize(target.name.split("-")[0])
            if project in control.held:
                control.arrived[project].set()
                control.held[project].wait(timeout=120)
            if (stall := control.stall_midway.get(project)) is not None:
                body = target.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                threading.Event().wait(stall)
                self.close_connection = True
                return
            self._send(200, target.read_bytes(), "application/octet-stream")
            return
        self._send(404, b"not found", "text/plain")


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients killed on purpose
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class LocalIndex:
    def __init__(self, wheels: Path) -> None:
        self.control = IndexControl(wheels)
        handler = type("Handler", (_Handler,), {"control": self.control})
        self.server = _QuietServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/simple"

    def __enter__(self) -> LocalIndex:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.control.release_all()
        self.server.shutdown()
        self.server.server_close()

    def env(self) -> dict[str, str]:
        """Point both installers at this index, and only at it."""
        return {
            "PIP_CONFIG_FILE": "/dev/null",
            "PIP_INDEX_URL": self.url,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "UV_INDEX_URL": self.url,
            "UV_NO_CONFIG": "1",
        }
