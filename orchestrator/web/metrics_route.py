"""``/-/metrics``: the route exists from the start; prometheus_client is imported after bind.

Invariant: signed-in users only unless ``--metrics-public``; the guard is a required argument
(:mod:`orchestrator.web.protected`), so the route cannot be wired without it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.trust.auth import Guard
from orchestrator.web.protected import Protected

if TYPE_CHECKING:
    import asyncio

    from orchestrator.metrics import Metrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsHandler(Protected):
    """Registered with the other routes at start; the metrics themselves arrive just after.
    Signed-in users only, unless ``public`` (``--metrics-public``); the guard is required
    either way."""

    def initialize(
        self, public: bool, metrics: asyncio.Future[Metrics], *, guard: Guard, **_: Any
    ) -> None:
        self.public = public
        self.metrics = metrics
        self.guard = guard

    async def prepare(self) -> None:
        if not self.public:
            await super().prepare()

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        if not self.metrics.done():
            self.set_status(503)
            self.set_header("Retry-After", "1")
            self.finish({"error": "metrics are not collected yet"})
            return
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.metrics.result().render())
