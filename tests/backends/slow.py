"""Slow backend: accepts the request, answers only after ``delay`` (or when released)."""

from __future__ import annotations

import asyncio
import contextlib

from tornado.web import Application, RequestHandler


class SlowHandler(RequestHandler):
    def initialize(self, delay: float, release: asyncio.Event) -> None:
        self.delay = delay
        self.release = release

    async def get(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.release.wait(), self.delay)
        self.finish("finally")


def make_app(delay: float, release: asyncio.Event) -> Application:
    return Application([(r"/.*", SlowHandler, {"delay": delay, "release": release})])
