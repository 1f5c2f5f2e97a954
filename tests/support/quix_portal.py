"""A small fake of the Quix portal API, faithful to reference/quix.md, recording every call.

Implements: the permissions query (both documented shapes: status code, or a true/false body),
the deployment restart call, and the file commit call. It can be taken down (503s) or made to
hang (accept, never answer) to test outages, made to refuse given file paths (400; the reference
does not say which ones), and made to answer the permission query with any status, content type
and body (what a captive proxy or a sign-in page in front would send).
Everything it is asked is kept in ``calls`` for assertions.
"""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit


@dataclass
class PortalState:
    workspace_id: str = "ws-test"
    deployment_id: str = "dep-test"
    application_id: str = "app-test"
    allowed_tokens: set[str] = field(default_factory=set)
    body_shape: str = "status"
    """"status": 200/401 with an empty body; "boolean": always 200, body true/false."""
    down: bool = False
    refused_files: set[str] = field(default_factory=set)
    """Application file paths the file call answers 400 for (a path the portal will not take)."""
    hanging: bool = False
    """Every call waits (answering nothing) until ``release`` is set."""
    release: threading.Event = field(default_factory=threading.Event)
    permission_reply: tuple[int, str, bytes] | None = None
    """(status, Content-Type, body) answered to every permission query instead of the above;
    a 3xx status gets ``Location: /elsewhere``."""
    calls: list[dict[str, object]] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def permission_queries(self) -> int:
        return sum(1 for call in self.calls if str(call["path"]).startswith("/auth/permissions"))


class _Handler(http.server.BaseHTTPRequestHandler):
    state: PortalState
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: object = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _raw(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value[7:] if value.startswith("Bearer ") else None

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        parts = urlsplit(self.path)
        state = self.state
        token = self._token()
        with state.lock:
            state.calls.append(
                {
                    "method": self.command,
                    "path": parts.path,
                    "query": parse_qs(parts.query),
                    "token": token,
                    "x_version": self.headers.get("X-Version"),
                    "body": body,
                }
            )
        if state.hanging:
            state.release.wait(120)
            return
        if state.down:
            self._answer(503, {"error": "portal down"})
            return
        allowed = token in state.allowed_tokens
        if parts.path == "/elsewhere":
            self._raw(200, "application/json", b"true")
            return
        if parts.path == "/auth/permissions/query" and state.permission_reply is not None:
            self._raw(*state.permission_reply)
            return
        if parts.path == "/auth/permissions/query" and self.command == "GET":
            query = parse_qs(parts.query)
            wanted = query.get("resourceId") == [state.workspace_id]
            if state.body_shape == "boolean":
                self._answer(200, bool(allowed and wanted))
            else:
                self._answer(200 if allowed and wanted else 401)
            return
        if not allowed:
            self._answer(401, {"error": "unauthorized"})
            return
        if (
            parts.path == f"/workspaces/{state.workspace_id}/deployments/update"
            and self.command == "POST"
        ):
            self._answer(200 if json.loads(body or "[]") == [state.deployment_id] else 400)
            return
        prefix = f"/workspaces/{state.workspace_id}/files/{state.application_id}/"
        if parts.path.startswith(prefix) and self.command == "POST":
            if parts.path[len(prefix) :] in state.refused_files:
                self._answer(400, {"error": "invalid file path"})
                return
            with state.lock:
                state.files.append((parts.path[len(prefix) :], body))
            self._answer(200)
            return
        self._answer(404, {"error": "no such call"})

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle
    do_PATCH = _handle


class FakeQuixPortal:
    def __init__(self) -> None:
        self.state = PortalState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def env(self) -> dict[str, str]:
        """What Quix injects into a deployment's container."""
        return {
            "Quix__Portal__Api": self.url,
            "Quix__Workspace__Id": self.state.workspace_id,
            "Quix__Deployment__Id": self.state.deployment_id,
            "Quix__Application__Id": self.state.application_id,
            "Quix__Sdk__Token": "sdk-token-not-a-user",
        }

    def __enter__(self) -> FakeQuixPortal:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.release.set()
        self.server.shutdown()
        self.server.server_close()
