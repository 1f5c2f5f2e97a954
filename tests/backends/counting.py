"""Counting backend: an HTTP server that counts the TCP connections it accepted."""

from __future__ import annotations

from typing import Any

from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.web import Application, RequestHandler


class CountingServer(HTTPServer):
    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.connections = 0

    def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
        self.connections += 1
        super().handle_stream(stream, address)


class OkHandler(RequestHandler):
    def get(self) -> None:
        self.finish("ok")

    def post(self) -> None:
        self.finish(b"posted %d" % len(self.request.body))


def make_app() -> Application:
    return Application([(r"/.*", OkHandler)])
