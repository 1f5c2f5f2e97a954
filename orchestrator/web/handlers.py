"""``/-/healthy``, ``/-/ready``, ``/-/status``, ``/-/events`` and the loading page.

Invariant: the probes (``/-/healthy``, ``/-/ready``) are public; the others are
:class:`~orchestrator.web.protected.Protected`: they take the guard as a required argument and
serve nothing without it."""

from __future__ import annotations

import asyncio
import functools
import html
import json
import re
import threading
from pathlib import Path
from typing import Any

import tornado.iostream
import tornado.web

from orchestrator import probes
from orchestrator.status import StatusBoard, Subscriber
from orchestrator.trust.auth import Guard
from orchestrator.web.protected import Protected

STATIC_DIR = Path(__file__).parent / "static"


class StaticHandler(tornado.web.StaticFileHandler):
    """``/-/static/``: public, and only the files shipped in ``static/`` (listed once, at
    import): any other path, ``panel.js%00.css`` or ``../x`` included, is a 404 before the file
    system is asked."""

    FILES = frozenset(
        path.relative_to(STATIC_DIR).as_posix() for path in STATIC_DIR.rglob("*") if path.is_file()
    )

    def parse_url_path(self, url_path: str) -> str:
        if url_path not in self.FILES:
            raise tornado.web.HTTPError(404)
        return super().parse_url_path(url_path)


class _Board(tornado.web.RequestHandler):
    """Shows the board, never cached."""

    board: StatusBoard

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def compute_etag(self) -> None:
        return None


class BoardHandler(_Board):
    """Public: the probes. :class:`GuardedBoardHandler` is the protected kind."""

    def initialize(self, board: StatusBoard, **_: Any) -> None:
        self.board = board


class GuardedBoardHandler(Protected, _Board):
    """For a signed-in user only (the guard is a required argument)."""

    def initialize(self, board: StatusBoard, *, guard: Guard, **_: Any) -> None:
        self.board = board
        self.guard = guard


class HealthyHandler(BoardHandler):
    """Liveness: the process serves requests. Never depends on marimo or the jobs."""

    def get(self) -> None:
        self.write(probes.healthy(self.board.boot_id))

    head = get


class ReadyHandler(BoardHandler):
    """Readiness: 200 exactly while marimo is proxied."""

    def get(self) -> None:
        if not self.board.ready:
            self.set_status(503)
            self.set_header("Retry-After", probes.NOT_READY_RETRY_AFTER)
        self.write(probes.readiness(self.board.ready, self.board.phase))

    head = get


class StatusHandler(GuardedBoardHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.write(self.board.snapshot_json())


@functools.lru_cache(maxsize=16)
def _event(kind: str, payload: str) -> bytes:
    """One Server-Sent Event, encoded once for every watcher it goes to (the board hands each
    subscriber the same string, whose hash Python keeps); kind ``comment`` is a comment line
    (nothing when empty)."""
    if kind == "comment":
        return f": {payload}\n\n".encode() if payload else b""
    return f"event: {kind}\ndata: {payload}\n\n".encode()


class _Push(Subscriber):
    """Writes every event offered into its handler's output on the next loop turn (no coroutine
    woken per watcher; offered from any thread, written on the loop's) and flushes once per
    turn; while a flush is still under way, events wait in a bounded batch, and a batch that
    outgrows it ends the stream (``overflowed``)."""

    def __init__(self, handler: EventsHandler, capacity: int = 4096) -> None:
        super().__init__(capacity=1)
        self._handler = handler
        self._capacity = capacity
        self._batch: list[tuple[str, str]] = []
        self._scheduled = False
        self._flushing = False
        self.ended = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def offer(self, event: str, data: str) -> None:
        if self.overflowed or self.ended.is_set():
            return
        self._batch.append((event, data))
        if len(self._batch) > self._capacity:
            self.overflowed = True
            self._loop.call_soon_threadsafe(self.ended.set)
            return
        if not self._scheduled and not self._flushing:
            self._scheduled = True
            if threading.get_ident() == self._loop_thread:
                self._loop.call_soon(self._send)
            else:  # the board also hears from worker threads (notebook sync's scans)
                self._loop.call_soon_threadsafe(self._send)

    def _send(self) -> None:
        self._scheduled = False
        if self.ended.is_set() or not self._batch:
            return
        # A status is a full snapshot, so only the newest of a batch is worth sending; log
        # lines all go, in order.
        batch, self._batch = self._batch, []
        newest = max((i for i, (kind, _) in enumerate(batch) if kind == "status"), default=-1)
        handler = self._handler
        for index, (kind, payload) in enumerate(batch):
            if kind != "status" or index == newest:
                handler.write(_event(kind, payload))
        self._flushing = True
        handler.flush().add_done_callback(self._flushed)

    def _flushed(self, done: asyncio.Future[None]) -> None:
        self._flushing = False
        if done.cancelled() or done.exception() is not None:
            self.ended.set()
        elif self._batch:
            self._send()


class EventsHandler(GuardedBoardHandler):
    """Server-Sent Events: the current status at once, then every change and log line.

    A keep-alive comment goes out every ``keepalive`` seconds so that intermediaries do not cut
    an idle stream. A client that cannot keep up is disconnected (it reconnects and is brought up
    to date by the first event), never buffered without bound. Each event is encoded once for
    all watchers and written into each watcher's stream as it is published (:class:`_Push`).
    """

    keepalive: float

    def initialize(
        self, board: StatusBoard, *, guard: Guard, keepalive: float = 15.0, **_: Any
    ) -> None:
        super().initialize(board, guard=guard)
        self.keepalive = keepalive
        self._push: _Push | None = None

    def on_connection_close(self) -> None:
        if self._push is not None:
            self._push.ended.set()

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("X-Accel-Buffering", "no")
        self.write("retry: 1000\n\n")
        self.write(_event("status", self.board.snapshot_json()))
        for record in list(self.board.logs)[-100:]:
            self.write(f"event: log\ndata: {json.dumps(record, separators=(',', ':'))}\n\n")
        push = self._push = _Push(self)
        self.board.subscribe(push)
        try:
            push.offer("comment", "")  # flushes the above, in order with what follows
            while not push.ended.is_set():
                try:
                    async with asyncio.timeout(self.keepalive):
                        await push.ended.wait()
                except TimeoutError:
                    push.offer("comment", "keep-alive")
        finally:
            self.board.unsubscribe(push)


class LoadingPage:
    """Renders the page shown at any marimo URL while marimo is not ready.

    The current status is embedded so the page is right before its event stream connects.
    """

    def __init__(self, board: StatusBoard) -> None:
        self.board = board
        self.template = (STATIC_DIR / "loading.html").read_text(encoding="utf-8")

    def __call__(self) -> bytes:
        snapshot = self.board.snapshot_json().replace("<", "\\u003c")
        page = self.template.replace("{{STATUS_JSON}}", snapshot)
        page = page.replace("{{BOOT_ID}}", html.escape(self.board.boot_id))
        # Without JavaScript the page still shows the steps (and refreshes itself).
        page = page.replace("{{STEPS_HTML}}", steps_html(self.board.snapshot()["steps"]))
        page = page.replace("{{PHASE_TEXT}}", html.escape(_PHASES.get(self.board.phase, "")))
        return page.encode("utf-8")


_ICONS = {"pending": "○", "running": "◐", "done": "✓", "skipped": "✓", "failed": "✗"}
_STATES = {
    "pending": "Waiting",
    "running": "In progress",
    "done": "Done",
    "skipped": "Skipped",
    "failed": "Failed",
}
_LABELS = {
    "state": "Storage",
    "venv": "Python",
    "requirements": "Python packages",
    "marimo": "marimo",
}
_INTERNAL = re.compile(
    r"""(^|[\s(:'"])/\S|\bpid\b|\bvenvs?\b|\bmanifest\b|\bsite-packages\b|\.pth\b""",
    re.IGNORECASE,
)
"""A message meant for us (a path, a pid, the venv): the page says the step's state instead
(loading.js ``plainMessage`` has the same rule)."""
_PHASES = {
    "starting": "Starting…",
    "ready": "marimo is running.",
    "degraded": "marimo is running, but something needs your attention.",
    "failed": "marimo could not be started.",
    "stopping": "The server is stopping.",
}


def steps_html(steps: list[dict[str, Any]]) -> str:
    """The steps as the page's script draws them (icon, name, state in words, message)."""
    items = []
    for step in steps:
        status = str(step["status"])
        name = str(step["name"])
        items.append(
            f'<li class="{html.escape(status)}" data-step="{html.escape(name)}" '
            f'data-status="{html.escape(status)}">'
            f'<span class="icon" aria-hidden="true">{_ICONS.get(status, "?")}</span>'
            f'<span class="name">{html.escape(_LABELS.get(name, name))}</span>'
            f'<span class="state">{html.escape(_STATES.get(status, status))}</span>'
            f'<span class="msg">{html.escape(_plain(step))}</span></li>'
        )
    return "".join(items)


def _plain(step: dict[str, Any]) -> str:
    """A step's message, unless it holds internals; a failed step's is its reason: always said."""
    message = str(step.get("message") or "")
    if step.get("status") == "failed":
        return message
    return "" if _INTERNAL.search(message) else message


class LoadingPageHandler(GuardedBoardHandler):
    """``/-/loading``: the page itself, whatever marimo's state, for direct links."""

    def initialize(
        self, board: StatusBoard, *, guard: Guard, page: LoadingPage | None = None, **_: Any
    ) -> None:
        super().initialize(board, guard=guard)
        assert page is not None
        self.page = page

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(self.page())
