"""Requests as a browser or an API client sends them to an orchestrator (a real one or the
in-process web side: anything with ``port``, ``base`` and ``auth``), and the sign-in cookie."""

from __future__ import annotations

import http.client
import urllib.parse
from typing import Protocol

COOKIE = "marimo_orchestrator_session"
HTML = {"Accept": "text/html"}


class Served(Protocol):
    """What these helpers need of :class:`tests.support.orchestrator.Orchestrator` or
    :class:`tests.support.in_process.InProcess`."""

    port: int
    base: str

    @property
    def auth(self) -> dict[str, str]: ...


def request(
    run: Served,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A raw request: the path goes on the wire exactly as given (no normalisation)."""
    connection = http.client.HTTPConnection("127.0.0.1", run.port, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def first_events(run: Served) -> bytes:
    """The burst /-/events sends at once: the status and the recent log lines."""
    connection = http.client.HTTPConnection("127.0.0.1", run.port, timeout=30)
    try:
        connection.request("GET", "/-/events", headers=run.auth)
        response = connection.getresponse()
        assert response.status == 200
        data = b""
        while b"event: status" not in data or not data.endswith(b"\n\n"):
            data += response.read1(65536)
        return data
    finally:
        connection.close()


def login(run: Served, token: str, next_path: str = "/") -> tuple[int, dict[str, str], bytes]:
    """The sign-in form posted from this site's page."""
    form = urllib.parse.urlencode({"token": token, "next": next_path}).encode()
    return request(
        run,
        "POST",
        "/-/login",
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": run.base},
        form,
    )


def cookie_of(headers: dict[str, str]) -> str:
    """The ``Cookie`` header a browser sends back after the ``Set-Cookie`` in ``headers``."""
    value = headers["set-cookie"]
    assert value.startswith(COOKIE + "=")
    return value.split(";", 1)[0]
