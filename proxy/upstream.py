"""What the proxy needs to know about marimo, and nothing more."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


class MarimoSession:
    """marimo's own session cookie, learnt from its answers and sent back on the proxy's behalf.

    marimo answers every request it authenticates by the token (``Authorization``) by signing a
    fresh ``session_<port>`` cookie into the response; a request carrying a valid cookie costs
    it one signature check and no new cookie (what each costs marimo: bench/RESULTS.md). The
    proxy therefore keeps the newest cookie marimo handed out and adds it to requests whose
    client sent none of that name.

    Invariants:

    * the cookie is as much a secret as the token: it never appears in a repr, a log line or a
      response the proxy writes (marimo's own ``Set-Cookie`` still crosses, as every header does);
    * it is only an optimisation: ``Authorization`` is sent as well, so a cookie marimo no longer
      accepts costs nothing but the fallback to the token, after which the new cookie is learnt;
    * a client's own cookie of that name is never replaced or shadowed;
    * one instance belongs to one marimo process (one :class:`Upstream` generation).
    """

    __slots__ = ("cookie", "name")

    def __init__(self, port: int) -> None:
        # marimo names its cookie after the port it serves on (no base URL is configured).
        self.name = f"session_{port}"
        self.cookie: str | None = None  # "name=value", as a Cookie header carries it

    def __repr__(self) -> str:
        return f"MarimoSession({self.name!r}, known={self.cookie is not None})"


@dataclass(frozen=True)
class Upstream:
    """One running marimo process as the proxy sees it.

    ``generation`` changes every time marimo is (re)started: a connection opened against one
    generation must never be reused for another, and a WebSocket whose upstream vanished while
    the current generation differs (or is ``None``) was cut by a restart, not by an error.
    ``authorization`` is the value of the ``Authorization`` header injected into every proxied
    request and upgrade; it is a secret and must never be logged or echoed to a client.
    ``session``, when set, is marimo's session cookie as the proxy learns it (see
    :class:`MarimoSession`).
    """

    host: str
    port: int
    generation: int
    authorization: str | None = field(default=None, repr=False)
    session: MarimoSession | None = field(default=None, repr=False, compare=False)

    @classmethod
    def for_marimo(cls, host: str, port: int, generation: int, token: str) -> Upstream:
        """The marimo process at ``host:port`` started with ``token``: the token sent as a bearer
        credential, and a :class:`MarimoSession` of its own."""
        return cls(host, port, generation, f"Bearer {token}", MarimoSession(port))

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"


UpstreamLookup = Callable[[], "Upstream | None"]
"""Answers at once, never waits: the current upstream when marimo is ready, else ``None``."""
