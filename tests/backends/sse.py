"""SSE backend: event 1 at once, event 2 only once the test sets ``trigger``
(``/quiet``: the stream opens at once, its first event comes only once triggered).

If the proxy closes the connection while the stream waits, ``disconnected`` is set.
"""

from __future__ import annotations

import asyncio

from tornado.web import Application, RequestHandler


class EventsHandler(RequestHandler):
    def initialize(
        self, trigger: asyncio.Event, produced: list[str], disconnected: asyncio.Event
    ) -> None:
        self.trigger = trigger
        self.produced = produced
        self.disconnected = disconnected

    def on_connection_close(self) -> None:
        self.disconnected.set()
        self.trigger.set()

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.write('data: {"n": 1}\n\n')
        self.produced.append("1")
        await self.flush()
        await self.trigger.wait()
        if self.disconnected.is_set():
            return
        self.write('data: {"n": 2}\n\n')
        self.produced.append("2")
        await self.flush()
        self.finish()


class QuietHandler(EventsHandler):
    """Opens the stream (headers only) and sends its first event only once triggered."""

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        await self.flush()
        await self.trigger.wait()
        if self.disconnected.is_set():
            return
        self.write('data: {"n": 1}\n\n')
        self.produced.append("1")
        self.finish()


class Feed:
    """What the test controls and observes: the trigger for event 2, what was produced, and
    whether the proxy closed the connection."""

    def __init__(self) -> None:
        self.trigger = asyncio.Event()
        self.produced: list[str] = []
        self.disconnected = asyncio.Event()


def make_app(feed: Feed) -> Application:
    kwargs = {"trigger": feed.trigger, "produced": feed.produced, "disconnected": feed.disconnected}
    return Application([(r"/events", EventsHandler, kwargs), (r"/quiet", QuietHandler, kwargs)])
