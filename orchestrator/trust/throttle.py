"""Sign-in throttling: per client, with exponential backoff, under a global ceiling.

A client may fail ``free`` times; each further failure blocks it for ``base * 2**n`` seconds
(at most ``longest``). A success clears its record. Across all clients, at most ``ceiling``
failures per minute are accepted; past that every attempt waits for the minute to pass (the
backstop when clients share an address or spread over many). Failures are logged in aggregate:
one line for the first failure after a quiet minute, then one summary per minute.

Invariants: memory is bounded (``MAX_CLIENTS`` records at most, the oldest dropped first); no
token is ever seen here, only client addresses.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from tornado.httputil import HTTPServerRequest

log = logging.getLogger("orchestrator")

MAX_CLIENTS = 10_000
WINDOW = 60.0


@dataclass
class _Record:
    failures: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


def client_address(request: HTTPServerRequest, trust_proxy: bool) -> str:
    """The client's address: the last hop a trusted proxy in front saw, else the peer's."""
    if trust_proxy:
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return request.remote_ip or "unknown"


class SignInThrottle:
    def __init__(
        self,
        free: int = 5,
        base: float = 1.0,
        longest: float = 300.0,
        ceiling: int = 600,
    ) -> None:
        self.free = free
        self.base = base
        self.longest = longest
        self.ceiling = ceiling
        self._clients: dict[str, _Record] = {}
        self._window_start = 0.0
        self._window_failures = 0
        self._window_refused = 0
        self._window_clients: set[str] = set()
        self._summary_due = 0.0

    def wait(self, client: str) -> float:
        """Seconds this client must wait before trying again (0: go ahead)."""
        now = time.monotonic()
        self._roll(now)
        record = self._clients.get(client)
        wait = max(0.0, record.blocked_until - now) if record is not None else 0.0
        if self._window_failures >= self.ceiling:
            wait = max(wait, self._window_start + WINDOW - now)
        if wait > 0:
            self._window_refused += 1
        return wait

    def failed(self, client: str) -> None:
        now = time.monotonic()
        self._roll(now)
        record = self._clients.pop(client, None) or _Record()
        self._clients[client] = record  # most recent last: the oldest go first when full
        record.failures += 1
        record.last = now
        beyond = record.failures - self.free
        if beyond >= 0:
            record.blocked_until = now + min(self.longest, self.base * 2.0**beyond)
        if len(self._clients) > MAX_CLIENTS:
            del self._clients[next(iter(self._clients))]
        if self._window_failures == 0 and now >= self._summary_due:
            log.warning(
                "a sign-in failed (wrong or unknown token); further failures are summarised "
                "once a minute"
            )
            self._summary_due = now + WINDOW
        self._window_failures += 1
        self._window_clients.add(client)

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))

    def _roll(self, now: float) -> None:
        if now - self._window_start < WINDOW:
            return
        if self._window_failures > 1 or self._window_refused:
            log.warning(
                "%d failed sign-ins in the last minute from %d client(s); %d attempt(s) "
                "refused by the throttle",
                self._window_failures,
                len(self._window_clients),
                self._window_refused,
            )
        self._window_start = now
        self._window_failures = 0
        self._window_refused = 0
        self._window_clients = set()
        stale = now - self.longest - WINDOW
        if len(self._clients) > MAX_CLIENTS // 2:
            self._clients = {
                key: record for key, record in self._clients.items() if record.last > stale
            }
