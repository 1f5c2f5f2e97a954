"""Echo backend: reports what reached it (method, raw target, headers, body size and hash).

Also serves ``/download/<n>``: ``n`` bytes streamed with a ``Content-Length``, in 1 MiB writes,
and ``/truncated``: a body cut short by closing the connection.
"""

from __future__ import annotations

import hashlib
import json

from tornado.http1connection import HTTP1Connection
from tornado.web import Application, RequestHandler, stream_request_body

ECHOED_BODY_LIMIT = 64 * 1024
"""Bodies up to this size are echoed back verbatim (latin-1 text) as well as hashed."""


@stream_request_body
class EchoHandler(RequestHandler):
    def prepare(self) -> None:
        if isinstance(self.request.connection, HTTP1Connection):
            self.request.connection.set_max_body_size(1 << 40)
        self._size = 0
        self._sha = hashlib.sha256()
        self._head = bytearray()

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        self._sha.update(chunk)
        if len(self._head) < ECHOED_BODY_LIMIT:
            self._head += chunk[: ECHOED_BODY_LIMIT - len(self._head)]

    def _echo(self, *args: str) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "method": self.request.method,
                    "uri": self.request.uri,
                    "headers": list(self.request.headers.get_all()),
                    "body_size": self._size,
                    "body_sha256": self._sha.hexdigest(),
                    "body": bytes(self._head).decode("latin-1"),
                }
            )
        )

    get = head = post = put = patch = delete = options = _echo

    def compute_etag(self) -> None:
        return None


class DownloadHandler(RequestHandler):
    BLOCK = bytes(range(256)) * 4096  # 1 MiB

    async def get(self, size: str) -> None:
        remaining = int(size)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(remaining))
        while remaining > 0:
            block = self.BLOCK[: min(remaining, len(self.BLOCK))]
            self.write(block)
            await self.flush()
            remaining -= len(block)

    def head(self, size: str) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", size)


class TruncatedHandler(RequestHandler):
    """Promises 1000 bytes, sends 500, then cuts the connection."""

    async def get(self) -> None:
        self.set_header("Content-Length", "1000")
        self.write(b"x" * 500)
        await self.flush()
        assert isinstance(self.request.connection, HTTP1Connection)
        self.request.connection.close()
        self._finished = True  # nothing more can be sent; keep Tornado from trying


def make_app() -> Application:
    return Application(
        [
            (r"/download/(\d+)", DownloadHandler),
            (r"/truncated", TruncatedHandler),
            (r"/.*", EchoHandler),
        ]
    )
