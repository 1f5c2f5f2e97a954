"""Viewers of a run-mode app served by several replicas: what each of them got, request by
request, while something happens to the replicas (a requirements change, say).

One viewer per replica loads the app page and then makes an API call with the page's server
token (``POST /api/home/workspace_files``, marimo's file list: no session needed, and a POST,
which the proxy never retries, so a failure cannot hide behind a retry), in a loop. Optionally a
tab per replica keeps the app's WebSocket open, as a browser tab does, and reconnects when it is
closed; what closed it is recorded.

The loops stop when told, and at the latest after ``max_seconds`` or ``max_requests``: they
only ever reach the replicas on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from typing import NamedTuple

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.support.orchestrator import Orchestrator

_TOKEN = re.compile(rb'<marimo-server-token data-token="([^"]+)"')


class Sample(NamedTuple):
    at: float
    """``time.monotonic()`` when the answer came."""
    replica: int
    what: str
    """``page`` or ``api``."""
    code: int | str
    """The HTTP status, or the name of the error when none came."""
    ok: bool
    """A 200 that is what a viewer wants: the app's page, or marimo's answer to the call."""


class Close(NamedTuple):
    at: float
    replica: int
    code: int | None
    """The close code the tab received; None when it could not connect (``refused``)."""
    refused: str = ""


def _post(run: Orchestrator, path: str, body: bytes, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        run.base + path,
        data=body,
        headers={"Marimo-Server-Token": token, "Content-Type": "application/json", **run.auth},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Viewers:
    """A viewer (and optionally a tab) per replica, from ``__enter__`` to ``__exit__``."""

    def __init__(
        self,
        replicas: list[Orchestrator],
        *,
        tabs: bool = False,
        notebook: str = "notebook.py",
        max_seconds: float = 900.0,
        max_requests: int = 200_000,
    ) -> None:
        self.replicas = replicas
        self.notebook = notebook
        self.samples: list[Sample] = []
        self.closes: list[Close] = []
        self.stop = threading.Event()
        self._until = time.monotonic() + max_seconds
        self._max_requests = max_requests
        self._lock = threading.Lock()
        targets = [self._view] + ([self._tab] if tabs else [])
        self.threads = [
            threading.Thread(target=target, args=(number,), daemon=True)
            for number in range(len(replicas))
            for target in targets
        ]

    def __enter__(self) -> Viewers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _going(self) -> bool:
        return (
            not self.stop.is_set()
            and time.monotonic() < self._until
            and len(self.samples) < self._max_requests
        )

    def _record(self, sample: Sample) -> None:
        with self._lock:
            self.samples.append(sample)

    def _view(self, number: int) -> None:
        run = self.replicas[number]
        while self._going():
            token = None
            try:
                code, _, body = run.get(
                    f"/?file={self.notebook}", {"Accept": "text/html"}, timeout=30
                )
                found = _TOKEN.search(body) if code == 200 else None
                token = found.group(1).decode() if found else None
                self._record(Sample(time.monotonic(), number, "page", code, token is not None))
            except OSError as error:
                self._record(Sample(time.monotonic(), number, "page", type(error).__name__, False))
            if token is None:
                time.sleep(0.05)  # between two attempts: this loop is a viewer, not a flood
                continue
            try:
                code, body = _post(
                    run, "/api/home/workspace_files", b'{"includeMarkdown": false}', token
                )
                ok = code == 200 and b'"files"' in body
                self._record(Sample(time.monotonic(), number, "api", code, ok))
            except OSError as error:
                self._record(Sample(time.monotonic(), number, "api", type(error).__name__, False))
            time.sleep(0.01)

    def _tab(self, number: int) -> None:
        run = self.replicas[number]
        url = f"{run.base.replace('http', 'ws')}/ws?file={self.notebook}&session_id="
        while self._going():
            try:
                with connect(
                    url + f"s_{os.urandom(4).hex()}", open_timeout=30, additional_headers=run.auth
                ) as socket_:
                    while self._going():
                        try:
                            json.loads(socket_.recv(timeout=0.5))
                        except TimeoutError:
                            continue
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else None
                with self._lock:
                    self.closes.append(Close(time.monotonic(), number, code))
            except (InvalidStatus, OSError) as error:
                with self._lock:
                    self.closes.append(Close(time.monotonic(), number, None, repr(error)))
                time.sleep(0.2)  # before trying again, as marimo's frontend does

    def failures(self) -> list[Sample]:
        """Every answer a viewer would have noticed."""
        with self._lock:
            return [sample for sample in self.samples if not sample.ok]

    def of(self, number: int) -> list[Sample]:
        with self._lock:
            return [sample for sample in self.samples if sample.replica == number]
