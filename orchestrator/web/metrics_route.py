"""``/-/metrics``: the route exists from the start; prometheus_client is imported after bind."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import tornado.web

if TYPE_CHECKING:
    import asyncio

    from orchestrator.metrics import Metrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsHandler(tornado.web.RequestHandler):
    """Registered with the other routes at start; the metrics themselves arrive just after."""

    def initialize(self, public: bool, metrics: asyncio.Future[Metrics], **_: Any) -> None:
        self.public = public
        self.metrics = metrics

    async def prepare(self) -> None:
        guard = self.application.settings.get("guard")
        if not self.public and guard is not None:
            await guard.admit(self)

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        if not self.metrics.done():
            self.set_status(503)
            self.set_header("Retry-After", "1")
            self.finish({"error": "metrics are not collected yet"})
            return
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.metrics.result().render())
