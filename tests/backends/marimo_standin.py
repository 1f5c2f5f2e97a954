"""A stand-in for marimo behind the orchestrator's proxy, for the tests of what stands in front of
it (sign-in, origins, Host rules, limits, sessions) that need no kernel.

Like marimo started by the orchestrator (``--token``), it answers only requests that carry its
token as a bearer credential (the proxy adds it; a client never has it), and 401 otherwise:

* ``/`` (and ``/?file=...``): an editor page, HTML with marimo's ``<marimo-...>`` elements;
* ``/health``, ``/api/status``: JSON, as marimo's;
* ``/ws``: a notebook's WebSocket: sends ``{"op": "kernel-ready"}`` at once, then echoes;
* ``/terminal/ws``: a terminal's WebSocket: echoes what is typed, as a shell's terminal does;
* anything else: 404.
"""

from __future__ import annotations

import json

from tornado.web import Application, HTTPError, RequestHandler
from tornado.websocket import WebSocketHandler

PAGE = (
    "<!DOCTYPE html><html><head><title>marimo</title></head><body>"
    '<marimo-server-token data-token="stand-in-server-token" hidden></marimo-server-token>'
    "<marimo-filename hidden>{file}</marimo-filename>"
    '<div id="root">a notebook</div></body></html>'
)


def _authorized(handler: RequestHandler, token: str) -> bool:
    return handler.request.headers.get("Authorization") == f"Bearer {token}"


class _Http(RequestHandler):
    def initialize(self, token: str) -> None:
        self.token = token

    def prepare(self) -> None:
        if not _authorized(self, self.token):
            raise HTTPError(401)

    def get(self) -> None:
        if self.request.path == "/":
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(PAGE.format(file=self.get_query_argument("file", "")))
        elif self.request.path in ("/health", "/api/status"):
            self.finish({"status": "healthy"})
        else:
            raise HTTPError(404)


class _Notebook(WebSocketHandler):
    def initialize(self, token: str) -> None:
        self.token = token

    async def get(self, *args: str, **kwargs: str) -> None:
        if not _authorized(self, self.token):
            self.set_status(401)
            self.finish()
            return
        await super().get(*args, **kwargs)

    def open(self, *args: str, **kwargs: str) -> None:
        self.write_message(json.dumps({"op": "kernel-ready", "data": {}}))

    def on_message(self, message: str | bytes) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


class _Terminal(_Notebook):
    def open(self, *args: str, **kwargs: str) -> None:
        self.write_message("$ ")


def make_app(token: str) -> Application:
    """marimo's part of the routes, answering requests that carry ``token``."""
    arguments = {"token": token}
    return Application(
        [
            (r"/ws", _Notebook, arguments),
            (r"/terminal/ws", _Terminal, arguments),
            (r"/.*", _Http, arguments),
        ]
    )
