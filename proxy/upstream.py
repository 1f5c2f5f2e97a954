"""What the proxy needs to know about marimo, and nothing more."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Upstream:
    """One running marimo process as the proxy sees it.

    ``generation`` changes every time marimo is (re)started: a connection opened against one
    generation must never be reused for another, and a WebSocket whose upstream vanished while
    the current generation differs (or is ``None``) was cut by a restart, not by an error.
    ``authorization`` is the value of the ``Authorization`` header injected into every proxied
    request and upgrade; it is a secret and must never be logged or echoed to a client.
    """

    host: str
    port: int
    generation: int
    authorization: str | None = None

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"


UpstreamLookup = Callable[[], "Upstream | None"]
"""Answers at once, never waits: the current upstream when marimo is ready, else ``None``."""
