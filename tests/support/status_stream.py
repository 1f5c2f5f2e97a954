"""A test's view of an orchestrator's status as it changes: its ``/-/events`` stream.

Waiting on a condition by polling ``/-/status`` every 50 ms cost the test and the orchestrator
a request each time, and the test a scan of the process table (``remember_tree``), about 4 ms
of CPU per poll here, all spent while nothing changed. The stream instead hands over each
status the orchestrator publishes, at once, and costs nothing while nothing happens.

Invariants: every status event that arrives is returned, in order, none twice; a read waits at
most the time it is given and never blocks beyond it (``select`` on the raw socket, so a quiet
stream is not an error); an ended stream (a restart, a replaced orchestrator, a revoked
session) raises ``OSError`` and the caller opens a new one; the request is HTTP/1.0, so the
answer comes unchunked and the stream is the body as written.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Mapping
from typing import Any

_HEAD_END = b"\r\n\r\n"
_EVENT_END = b"\n\n"


class StatusStream:
    """One open ``GET /-/events``; raises ``OSError`` unless it is answered 200."""

    def __init__(self, port: int, headers: Mapping[str, str], timeout: float = 5) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            lines = [
                "GET /-/events HTTP/1.0",
                f"Host: 127.0.0.1:{port}",
                "Accept: text/event-stream",
                *(f"{name}: {value}" for name, value in headers.items()),
            ]
            self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            self._buffer = b""
            deadline = time.monotonic() + timeout
            while _HEAD_END not in self._buffer:
                if not self._receive(deadline - time.monotonic()):
                    raise TimeoutError("no answer to GET /-/events")
            head, _, self._buffer = self._buffer.partition(_HEAD_END)
            status_line = head.split(b"\r\n", 1)[0]
            if status_line.split(b" ")[1:2] != [b"200"]:
                raise ConnectionRefusedError(
                    f"GET /-/events: {status_line.decode(errors='replace')}"
                )
        except BaseException:
            self._sock.close()
            raise

    def _receive(self, timeout: float) -> bool:
        """Reads what has arrived within ``timeout``; False if nothing did."""
        readable, _, _ = select.select([self._sock], [], [], max(timeout, 0))
        if not readable:
            return False
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the event stream ended")
        self._buffer += chunk
        return True

    def statuses(self, timeout: float) -> list[dict[str, Any]]:
        """The statuses published since the last call, waiting up to ``timeout`` for one."""
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while True:
            while _EVENT_END in self._buffer:
                event, _, self._buffer = self._buffer.partition(_EVENT_END)
                fields = dict(
                    line.split(": ", 1) for line in event.decode().splitlines() if ": " in line
                )
                if fields.get("event") == "status":
                    found.append(json.loads(fields["data"]))
            if found or not self._receive(deadline - time.monotonic()):
                return found

    def close(self) -> None:
        self._sock.close()
