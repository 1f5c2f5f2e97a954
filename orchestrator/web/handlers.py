"""``/-/healthy``, ``/-/ready``, ``/-/status``, ``/-/events`` and the loading page."""

from __future__ import annotations

import asyncio
import functools
import html
import json
from pathlib import Path
from typing import Any

import tornado.iostream
import tornado.web

from orchestrator.auth import Guard
from orchestrator.status import StatusBoard

STATIC_DIR = Path(__file__).parent / "static"


class BoardHandler(tornado.web.RequestHandler):
    """Public unless :attr:`protected`: then the guard admits the request before anything runs."""

    board: StatusBoard
    protected = True

    async def prepare(self) -> None:
        guard: Guard | None = self.application.settings.get("guard")
        if self.protected and guard is not None:
            await guard.admit(self)  # a refused request is answered, so the method is skipped

    def initialize(self, board: StatusBoard, **_: Any) -> None:
        self.board = board

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def compute_etag(self) -> None:
        return None


class HealthyHandler(BoardHandler):
    """Liveness: the process serves requests. Never depends on marimo or the jobs."""

    protected = False

    def get(self) -> None:
        self.write({"status": "alive", "boot_id": self.board.boot_id})

    head = get


class ReadyHandler(BoardHandler):
    """Readiness: 200 exactly while marimo is proxied."""

    protected = False

    def get(self) -> None:
        if not self.board.ready:
            self.set_status(503)
            self.set_header("Retry-After", "2")
        self.write({"ready": self.board.ready, "phase": self.board.phase})

    head = get


class StatusHandler(BoardHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.write(self.board.snapshot_json())


@functools.lru_cache(maxsize=16)
def _event(kind: str, payload: str) -> bytes:
    """One Server-Sent Event, encoded once for every watcher it goes to (the board hands each
    subscriber the same string, whose hash Python keeps)."""
    return f"event: {kind}\ndata: {payload}\n\n".encode()


class EventsHandler(BoardHandler):
    """Server-Sent Events: the current status at once, then every change and log line.

    A keep-alive comment goes out at least every ``keepalive`` seconds so that intermediaries do
    not cut an idle stream. A client that cannot keep up is disconnected (it reconnects and is
    brought up to date by the first event), never buffered without bound.
    """

    keepalive: float

    def initialize(self, board: StatusBoard, keepalive: float = 15.0, **_: Any) -> None:
        super().initialize(board)
        self.keepalive = keepalive
        self._closed = False

    def on_connection_close(self) -> None:
        self._closed = True

    async def _send(self, event: str, data: str) -> None:
        self.write(f"event: {event}\ndata: {data}\n\n")
        await self.flush()

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("X-Accel-Buffering", "no")
        subscriber = self.board.subscribe()
        try:
            self.write("retry: 1000\n\n")
            await self._send("status", self.board.snapshot_json())
            for record in list(self.board.logs)[-100:]:
                self.write(f"event: log\ndata: {json.dumps(record, separators=(',', ':'))}\n\n")
            await self.flush()
            while not self._closed and not subscriber.overflowed:
                try:
                    async with asyncio.timeout(self.keepalive):  # no task per wait
                        event, data = await subscriber.queue.get()
                except TimeoutError:
                    self.write(": keep-alive\n\n")
                    await self.flush()
                    continue
                # Drain what is already queued and flush once. A status is a full snapshot, so
                # only the newest queued one is worth sending; log lines all go, in order.
                batch = [(event, data)]
                while not subscriber.queue.empty():
                    batch.append(subscriber.queue.get_nowait())
                newest = (
                    max(i for i, (kind, _) in enumerate(batch) if kind == "status")
                    if any(kind == "status" for kind, _ in batch)
                    else -1
                )
                for index, (kind, payload) in enumerate(batch):
                    if kind != "status" or index == newest:
                        self.write(_event(kind, payload))
                await self.flush()
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            self.board.unsubscribe(subscriber)


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
    "state": "State volume",
    "venv": "Environment",
    "requirements": "Requirements",
    "marimo": "marimo",
}
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
            f'<span class="msg">{html.escape(str(step.get("message") or ""))}</span></li>'
        )
    return "".join(items)


class LoadingPageHandler(BoardHandler):
    """``/-/loading``: the page itself, whatever marimo's state, for direct links."""

    def initialize(self, board: StatusBoard, page: LoadingPage | None = None, **_: Any) -> None:
        super().initialize(board)
        assert page is not None
        self.page = page

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(self.page())
