"""``/-/metrics`` in Prometheus text format, fed by the board and the access log.

Imported only after the port is bound (prometheus_client is not on the start-up path). Metrics
are derived from what already happens, never computed on the hot path: the board tells about
steps and marimo, Tornado's per-request log hook about proxied requests.
"""

from __future__ import annotations

import time
from typing import Any

import tornado.httputil
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from orchestrator.status import StatusBoard
from proxy.websocket import WebSocketRelay


class Metrics:
    def __init__(self, board: StatusBoard) -> None:
        self.registry = CollectorRegistry()
        self.step_seconds = Histogram(
            "orchestrator_step_duration_seconds",
            "Duration of startup steps by outcome.",
            ["step", "outcome"],
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=self.registry,
        )
        self.step_outcomes = Counter(
            "orchestrator_step_outcomes_total",
            "Steps finished, by outcome.",
            ["step", "outcome"],
            registry=self.registry,
        )
        self.retries = Counter(
            "orchestrator_step_retries_total",
            "Retries after transient failures, by step.",
            ["step"],
            registry=self.registry,
        )
        self.marimo_restarts = Counter(
            "orchestrator_marimo_restarts_total",
            "marimo stops, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.requests = Histogram(
            "orchestrator_http_request_duration_seconds",
            "HTTP requests served (proxied and own), by route kind and status.",
            ["kind", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        Gauge(
            "orchestrator_websockets_open",
            "WebSockets relayed to marimo now.",
            registry=self.registry,
        ).set_function(lambda: WebSocketRelay.open_relays)
        Gauge(
            "orchestrator_sse_watchers", "Clients watching /-/events now.", registry=self.registry
        ).set_function(lambda: len(board.subscribers))
        Gauge(
            "orchestrator_ready", "1 while marimo is proxied.", registry=self.registry
        ).set_function(lambda: 1 if board.ready else 0)
        Gauge(
            "orchestrator_uptime_seconds", "Seconds since start.", registry=self.registry
        ).set_function(lambda: time.time() - board.started_at)
        board.listeners.append(self.on_event)

    def on_event(self, event: str, step: str | None, data: dict[str, Any]) -> None:
        if event == "finished" and step is not None:
            self.step_outcomes.labels(step, data["outcome"]).inc()
            if data.get("seconds") is not None:
                self.step_seconds.labels(step, data["outcome"]).observe(data["seconds"])
        elif event == "retrying" and step is not None:
            self.retries.labels(step).inc()
        elif event == "marimo_down":
            self.marimo_restarts.labels(data["kind"]).inc()

    def observe_request(self, request: tornado.httputil.HTTPServerRequest, status: int) -> None:
        kind = "own" if request.path.startswith("/-/") else "proxied"
        self.requests.labels(kind, str(status)).observe(request.request_time())

    def render(self) -> bytes:
        return generate_latest(self.registry)
