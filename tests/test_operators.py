"""What operators use: /-/metrics in Prometheus format, and JSON logs tagged with the step."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from pathlib import Path

import pytest

from tests.support.orchestrator import OrchestratorFactory


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{key}="{val}"' in head for key, val in labels.items()):
            return float(value)
    raise AssertionError(f"{name} {labels} not in metrics")


def session_cookie(port: int, token: str) -> str:
    """Signs in through the login form, as a browser does; the session cookie to send back."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST",
            "/-/login",
            urllib.parse.urlencode({"token": token, "next": "/"}),
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "Origin": f"http://127.0.0.1:{port}",
            },
        )
        response = connection.getresponse()
        response.read()
        assert response.status == 303, response.status
        return response.headers["Set-Cookie"].split(";", 1)[0]
    finally:
        connection.close()


def test_metrics_describe_steps_requests_and_marimo(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n")
    run = orchestrator(notebook_dir)
    run.wait_ready()
    assert run.get("/-/metrics", signed_in=False)[0] == 401, "metrics are behind auth by default"
    for _ in range(3):
        assert run.get("/health")[0] == 200  # proxied to marimo, an API client's bearer token
    cookie = session_cookie(run.port, run.token)
    for _ in range(3):
        # A browser's session: proxied beneath RequestHandler (proxy/direct.py), counted alike.
        assert run.get("/health", {"Cookie": cookie}, signed_in=False)[0] == 200
    code, headers, body = run.get("/-/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert (
        metric(text, "orchestrator_step_outcomes_total", step="requirements", outcome="done") == 1
    )
    assert (
        metric(text, "orchestrator_step_duration_seconds_count", step="marimo", outcome="done") == 1
    )
    assert metric(text, "orchestrator_ready") == 1
    assert (
        metric(
            text, "orchestrator_http_request_duration_seconds_count", kind="proxied", status="200"
        )
        >= 6
    )
    assert metric(text, "orchestrator_websockets_open") == 0
    assert run.token not in text


def test_public_metrics_and_json_logs(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n")
    run = orchestrator(notebook_dir, None, "--metrics-public", "--log-format", "json")
    run.wait_ready()
    assert run.get("/-/metrics", signed_in=False)[0] == 200
    run.get(f"/-/login?token={run.token}", signed_in=False)
    records = []
    for line in run.log_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
        else:
            assert line.startswith("marimo-orchestrator is serving"), line
    assert records, "JSON lines were written"
    assert all(
        {"time", "level", "step", "source", "message"} <= record.keys() for record in records
    )
    assert any(record["step"] == "requirements" and record["source"] == "uv" for record in records)
    assert any(record["step"] == "marimo" and record["source"] == "marimo" for record in records)
    assert run.token not in run.log_text()


def test_request_durations_expose_what_a_prometheus_histogram_would() -> None:
    """The per-request histogram is counted without prometheus_client on the hot path; what a
    scraper reads must be exactly what prometheus_client's own Histogram would have written."""
    import random

    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from orchestrator.metrics import RequestDurations

    reference_registry = CollectorRegistry()
    reference = Histogram(
        RequestDurations.NAME,
        "HTTP requests served (proxied and own), by route kind and status.",
        ["kind", "status"],
        buckets=RequestDurations.BUCKETS,
        registry=reference_registry,
    )
    registry = CollectorRegistry()
    durations = RequestDurations()
    registry.register(durations)
    chooser = random.Random(7)
    for _ in range(3000):
        kind, status = chooser.choice(["own", "proxied"]), chooser.choice([200, 304, 503])
        # Bucket bounds themselves too: a duration equal to a bound belongs to that bucket.
        seconds = chooser.choice([chooser.random() / 20, 0.001, 0.0025, 10.0, 42.0])
        reference.labels(kind, str(status)).observe(seconds)
        durations.observe(kind, status, seconds)

    def lines(registry: CollectorRegistry) -> dict[str, float]:
        values = {}
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith("#") or "_created" in line:
                continue
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
        return values

    expected, got = lines(reference_registry), lines(registry)
    assert expected.keys() == got.keys() and len(got) == 2 * 3 * (len(RequestDurations.BUCKETS) + 3)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name
