"""What the proxy needs to know about marimo, and nothing more."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

RESTART_CODE = 1012
"""The close code of a WebSocket whose marimo restarts or is replaced: the tab reconnects."""
RESTART_REASON = "marimo is restarting"

SocketCloser = Callable[[int, str], None]
"""Ends one relayed WebSocket with a close code and reason (both sides)."""


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


class Traffic:
    """What the proxy has open toward one marimo process: requests being forwarded and
    WebSockets being relayed. Its marimo is *retired* once the proxy routes new requests to
    another one (a switch of environment, jobs/marimo.py): then what is still open is drained.

    Invariants:

    * :attr:`open` counts requests from the moment they start connecting to marimo until they
      let go of their connection (given back or closed), and relayed WebSockets from the end
      of both handshakes until both connections ended; each is counted in and out once;
    * once :meth:`retire` is called, every WebSocket relayed to this marimo is closed with
      :data:`RESTART_CODE`, those opened later as soon as they register; nothing is ever
      reopened toward a retired marimo by the pool (:meth:`proxy.pool.ConnectionPool.release`).
    """

    __slots__ = ("_sockets", "requests", "retired")

    def __init__(self) -> None:
        self.requests = 0
        self._sockets: dict[object, SocketCloser] = {}
        self.retired = False

    @property
    def open(self) -> int:
        """Requests and WebSockets still open toward this marimo."""
        return self.requests + len(self._sockets)

    def socket_opened(self, key: object, close: SocketCloser) -> None:
        """A WebSocket relayed to this marimo (closed at once when it is already retired)."""
        self._sockets[key] = close
        if self.retired:
            close(RESTART_CODE, RESTART_REASON)

    def socket_ended(self, key: object) -> None:
        self._sockets.pop(key, None)

    def retire(self) -> None:
        """New requests go elsewhere: every WebSocket relayed here closes as for a restart."""
        if self.retired:
            return
        self.retired = True
        for close in list(self._sockets.values()):
            close(RESTART_CODE, RESTART_REASON)

    def __repr__(self) -> str:
        return f"Traffic(requests={self.requests}, sockets={len(self._sockets)})"


@dataclass(frozen=True)
class Upstream:
    """One running marimo process as the proxy sees it.

    ``generation`` changes every time marimo is (re)started: a connection opened against one
    generation must never be reused for another, and a WebSocket whose upstream vanished while
    the current generation differs (or is ``None``) was cut by a restart, not by an error.
    ``authorization`` is the value of the ``Authorization`` header injected into every proxied
    request and upgrade; it is a secret and must never be logged or echoed to a client.
    ``session``, when set, is marimo's session cookie as the proxy learns it (see
    :class:`MarimoSession`). ``traffic`` is what the proxy has open toward this process, so
    that a marimo being replaced can be drained (see :class:`Traffic`).
    """

    host: str
    port: int
    generation: int
    authorization: str | None = field(default=None, repr=False)
    session: MarimoSession | None = field(default=None, repr=False, compare=False)
    traffic: Traffic = field(default_factory=Traffic, repr=False, compare=False)

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
