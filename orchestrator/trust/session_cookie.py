"""The session cookie codec: what a session cookie says, how it is written, read and cleared.

A session is a signed, HttpOnly cookie carrying a random id, its issue time and what ties it to
its credential: in ``token`` mode a keyed digest of the access token (a new token ends every
session made with the old one), in ``quix`` mode the user's token sealed with AES-GCM under a
key derived from the signing secret (trust/session_crypto.py), so the portal can be asked
again, after a restart too. A Quix token too long to be sealed within :data:`COOKIE_BUDGET` is
kept in this process's memory instead (that session then ends with the process).

Invariants: every signature is made and checked with the secret :class:`SigningSecret` holds at
that moment (nothing caches it, so an adopted or rotated secret takes effect at once); a cookie
is read as a session only when its signature, its age (at most ``session_seconds`` since
sign-in, none from the future), its binding (``token`` mode) and its credential (``quix`` mode)
all hold; a token is never put in a cookie in plain text; every table kept here is bounded
(:data:`MAX_TRACKED`). Whether a session was ended (logged out) is the guard's to say
(orchestrator/trust/auth.py), not the cookie's.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TypeVar

import tornado.web
from tornado.httputil import HTTPServerRequest

from orchestrator.trust.auth_modes import AuthMode
from orchestrator.trust.origins import is_https
from orchestrator.trust.signing import SigningSecret

log = logging.getLogger("orchestrator")

COOKIE = "marimo_orchestrator_session"
COOKIE_BUDGET = 3800
"""Bytes a session cookie may take (browsers keep 4096 per cookie, name and attributes included).
A Quix token too long to be sealed within it is kept in memory instead: that session then ends
with the process."""
MAX_TRACKED = 10_000
"""Entries a per-session table keeps at most (the oldest goes first)."""

_V = TypeVar("_V")


def remember(table: dict[str, _V], sid: str, value: _V) -> None:
    """``table[sid] = value`` as the newest entry, the oldest dropped past :data:`MAX_TRACKED`."""
    table.pop(sid, None)
    table[sid] = value
    if len(table) > MAX_TRACKED:
        del table[next(iter(table))]


@dataclass(frozen=True)
class Session:
    sid: str
    issued_at: float
    binding: str = ""
    """``token`` mode: the keyed digest of the access token the session was made with."""
    sealed: str = ""
    """``quix`` mode: the user's token, sealed (orchestrator/trust/session_crypto.py)."""


class SessionCookies:
    """Writes and reads the session cookie of one auth ``mode``, signed with ``secret``.

    ``credential`` is what a ``token``-mode session is bound to (the access token, or ``""``
    when sessions rest on the signing secret alone); ``cross_site`` makes the cookie Secure,
    SameSite=None and Partitioned (else Lax, Secure over https)."""

    def __init__(
        self,
        mode: AuthMode,
        secret: SigningSecret,
        *,
        session_seconds: float,
        credential: str,
        cross_site: bool,
        trust_proxy: bool,
    ) -> None:
        self.mode = mode
        self.secret = secret
        self.session_seconds = session_seconds
        self.cross_site = cross_site
        self._credential = credential
        self._trust_proxy = trust_proxy
        self._binding: tuple[bytes, str] | None = None
        self._memory_tokens: dict[str, str] = {}
        """Quix tokens too long for the cookie, by session id (this process only)."""

    def _expected_binding(self, secret: bytes) -> str:
        from orchestrator.trust.session_crypto import binding

        if self._binding is None or self._binding[0] is not secret:
            self._binding = (secret, binding(secret, self._credential))
        return self._binding[1]

    # -- reading -------------------------------------------------------------------------------

    def of_handler(self, handler: tornado.web.RequestHandler) -> Session | None:
        """The session the request's cookie names, if it is a valid one."""
        return self.read(handler.get_cookie(COOKIE))

    def of_request(self, request: HTTPServerRequest) -> Session | None:
        """As :meth:`of_handler`, for a request no handler serves (the proxy's fast path)."""
        morsel = request.cookies.get(COOKIE)
        return None if morsel is None else self.read(morsel.value)

    def read(self, value: str | None) -> Session | None:
        """The session a cookie value names, when it is signed with the secret in force, not
        too old, and carries what its mode requires."""
        if value is None:
            return None
        raw = tornado.web.decode_signed_value(self.secret.current(), COOKIE, value, max_age_days=1)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            session = Session(
                sid=str(data["sid"]),
                issued_at=float(data["iat"]),
                binding=str(data.get("cb", "")),
                sealed=str(data.get("ct", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if not 0 <= time.time() - session.issued_at <= self.session_seconds:
            return None
        if self.mode == "token":
            expected = self._expected_binding(self.secret.current())
            if not hmac.compare_digest(session.binding.encode(), expected.encode()):
                return None  # made with another access token
        if self.mode == "quix" and not session.sealed and session.sid not in self._memory_tokens:
            return None
        return session

    def credential(self, session: Session) -> str | None:
        """A Quix session's token: unsealed from its cookie, or from memory."""
        if not session.sealed:
            return self._memory_tokens.get(session.sid)
        from orchestrator.trust.session_crypto import unseal

        return unseal(self.secret.current(), session.sealed)

    def forget(self, sid: str) -> None:
        """Drop what this process keeps of session ``sid`` (it ended)."""
        self._memory_tokens.pop(sid, None)

    # -- writing -------------------------------------------------------------------------------

    def write(self, handler: tornado.web.RequestHandler, token: str | None) -> str:
        """A new session's cookie set on ``handler``'s answer (the Quix user's ``token`` sealed
        in it); its session id."""
        from orchestrator.trust.session_crypto import seal

        sid = secrets.token_urlsafe(24)
        payload: dict[str, object] = {"sid": sid, "iat": time.time()}
        secret = self.secret.current()
        if self.mode == "token":
            payload["cb"] = self._expected_binding(secret)
        if token and self.mode == "quix":
            payload["ct"] = seal(secret, token)
        value = json.dumps(payload, separators=(",", ":"))
        signed = tornado.web.create_signed_value(secret, COOKIE, value)
        if self.mode == "quix" and len(signed) > COOKIE_BUDGET:
            del payload["ct"]
            value = json.dumps(payload, separators=(",", ":"))
            signed = tornado.web.create_signed_value(secret, COOKIE, value)
            remember(self._memory_tokens, sid, token or "")
            log.warning(
                "a Quix token is too long to keep in the session cookie; that session is kept "
                "in memory and ends when the orchestrator restarts"
            )
        if self.cross_site:
            # Inside the portal's cross-site iframe a cookie must be Secure, SameSite=None and
            # Partitioned (CHIPS: browsers that block third-party cookies keep partitioned
            # ones). Python 3.11's cookie module cannot write Partitioned: built by hand.
            handler.add_header(
                "Set-Cookie",
                f"{COOKIE}={signed.decode()}; Path=/; Max-Age={int(self.session_seconds)}; "
                "HttpOnly; Secure; SameSite=None; Partitioned",
            )
            return sid
        handler.set_cookie(
            COOKIE,
            signed,
            expires_days=self.session_seconds / 86400,
            httponly=True,
            path="/",
            samesite="Lax",
            secure=is_https(handler.request, self._trust_proxy),
        )
        return sid

    def clear(self, handler: tornado.web.RequestHandler) -> None:
        """The cookie removed from the browser (both kinds, when it may be a cross-site one)."""
        handler.clear_cookie(COOKIE, path="/")
        if self.cross_site:
            handler.add_header(
                "Set-Cookie",
                f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=None; Partitioned",
            )
