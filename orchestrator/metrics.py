"""``/-/metrics`` in Prometheus text format, fed by the board and the access log.

Imported only after the port is bound (prometheus_client is not on the start-up path). Metrics
are derived from what already happens, never computed on the hot path: the board tells about
steps and marimo, Tornado's per-request log hook about proxied requests.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

import tornado.httputil
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from orchestrator.status import StatusBoard


class RequestDurations:
    """Requests served, by route kind and status, with their durations: one Prometheus
    histogram (``orchestrator_http_request_duration_seconds``).

    Every proxied request passes here, so recording is plain Python (a dict lookup, a bisect,
    two additions) and the metric family is only built when scraped, through prometheus_client's
    custom-collector interface. Only the event loop's thread records and scrapes, so no lock is
    taken. Invariant: each series holds one count per bucket (the last is ``+Inf``), then the
    sum of durations.
    """

    NAME = "orchestrator_http_request_duration_seconds"
    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

    def __init__(self) -> None:
        self._series: dict[tuple[str, int], list[float]] = {}
        self._bounds = [*map(floatToGoString, self.BUCKETS), "+Inf"]

    def observe(self, kind: str, status: int, seconds: float) -> None:
        series = self._series.get((kind, status))
        if series is None:
            series = self._series[(kind, status)] = [0.0] * (len(self.BUCKETS) + 2)
        series[bisect_left(self.BUCKETS, seconds)] += 1
        series[-1] += seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            self.NAME,
            "HTTP requests served (proxied and own), by route kind and status.",
            labels=["kind", "status"],
        )
        for (kind, status), series in sorted(self._series.items()):
            running = 0.0
            buckets = []
            for bound, count in zip(self._bounds, series[:-1], strict=True):
                running += count
                buckets.append((bound, running))
            family.add_metric([kind, str(status)], buckets, series[-1])
        yield family


class Metrics:
    """The Prometheus registry: the board's events and gauges, and ``open_websockets`` (how
    many WebSockets the proxy relays now, asked at each scrape)."""

    def __init__(self, board: StatusBoard, open_websockets: Callable[[], int]) -> None:
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
        self.marimo_hangs = Counter(
            "orchestrator_marimo_hangs_total",
            "Times marimo stopped answering (its liveness probe missed) and was killed and "
            "restarted.",
            registry=self.registry,
        )
        self.requests = RequestDurations()
        self.registry.register(self.requests)
        Gauge(
            "orchestrator_websockets_open",
            "WebSockets relayed to marimo now.",
            registry=self.registry,
        ).set_function(open_websockets)
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
            if data["kind"] == "hang":
                self.marimo_hangs.inc()

    def observe_request(self, request: tornado.httputil.HTTPServerRequest, status: int) -> None:
        kind = "own" if request.path.startswith("/-/") else "proxied"
        self.requests.observe(kind, status, request.request_time())

    def render(self) -> bytes:
        return generate_latest(self.registry)
