"""Who may use the orchestrator: sessions, tokens, and the check every protected route makes.

Modes: ``quix`` (tokens validated by the Quix portal), ``token`` (one shared access token) and
``none`` (explicit opt-in). A session is a signed, HttpOnly cookie carrying only a random id and
its issue time; the signing secret lives in the state directory (mode 0600) so sessions survive
restarts. Tokens are never put in a cookie, a log line, the status or a page.

Invariants: :meth:`Guard.admit` is awaited before any protected handler does anything (for
WebSockets: before the upgrade); a request it refuses has already been answered; nothing here
raises into a handler.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import tornado.web
from tornado.httputil import HTTPServerRequest

from orchestrator.auth_modes import AuthMode

if TYPE_CHECKING:
    from orchestrator.quix import QuixPortal

log = logging.getLogger("orchestrator")

COOKIE = "marimo_orchestrator_session"
SESSION_SECONDS = 8 * 3600


def load_secret(path: Path | None) -> bytes:
    """The cookie-signing secret kept in ``path``, or a new one for now.

    Only reads: nothing is written (or fsynced) before the port answers. A new secret is
    persisted once the ``state`` step resolves the directory (orchestrator/secret_adoption.py).
    """
    if path is not None:
        try:
            data = path.read_bytes()
            if len(data) >= 32:
                return data
        except OSError:
            pass
    return secrets.token_bytes(48)


@dataclass(frozen=True)
class Session:
    sid: str
    issued_at: float


class Verifier:
    """Is this token good? Answers True/False; raises PortalUnavailable on a Quix outage."""

    def __init__(self, mode: AuthMode, token: str | None, portal: QuixPortal | None) -> None:
        self.mode = mode
        self._token = token
        self._portal = portal

    async def accepts(self, token: str) -> bool:
        if not token:
            return False
        if self.mode == "token":
            return self._token is not None and hmac.compare_digest(
                token.encode(), self._token.encode()
            )
        if self.mode == "quix":
            assert self._portal is not None
            return await self._portal.is_allowed(token)
        return True


def same_origin(handler: tornado.web.RequestHandler) -> bool:
    """No Origin header (not a browser's cross-site request) or one naming this very host."""
    origin = handler.request.headers.get("Origin")
    if origin is None:
        return True
    host = urlsplit(origin).netloc.lower()
    allowed = {handler.request.host.lower()}
    forwarded = handler.request.headers.get("X-Forwarded-Host")
    if forwarded:
        allowed.add(forwarded.split(",")[0].strip().lower())
    return host in allowed


def wants_html(handler: tornado.web.RequestHandler) -> bool:
    request = handler.request
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")


def safe_next(value: str | None) -> str:
    """Only a path on this server: never another host (open redirect), never a scheme."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return "/"  # no header injection through a redirect
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


class Guard:
    def __init__(
        self,
        mode: AuthMode,
        verifier: Verifier,
        secure_cookies: bool,
        session_seconds: float = SESSION_SECONDS,
    ) -> None:
        self.mode = mode
        self.verifier = verifier
        self.secure_cookies = secure_cookies
        self.session_seconds = session_seconds
        self._revoked: set[str] = set()
        self._user_tokens: dict[str, str] = {}
        self.latest_user_token: str | None = None
        """The token of the Quix user who signed in last (kept in memory only)."""

    # -- sessions ------------------------------------------------------------------------------

    def session(self, handler: tornado.web.RequestHandler) -> Session | None:
        return self._session_from(handler.get_signed_cookie(COOKIE, max_age_days=1))

    def _session_from(self, raw: bytes | None) -> Session | None:
        """The live session a verified cookie value names, if any."""
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            session = Session(sid=str(data["sid"]), issued_at=float(data["iat"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.sid in self._revoked:
            return None
        if not 0 <= time.time() - session.issued_at <= self.session_seconds:
            return None
        return session

    def open_session(self, handler: tornado.web.RequestHandler, token: str | None) -> None:
        sid = secrets.token_urlsafe(24)
        if token and self.mode == "quix":
            self._user_tokens[sid] = token  # for portal calls made on this user's behalf
            self.latest_user_token = token
        value = json.dumps({"sid": sid, "iat": time.time()})
        if self.secure_cookies:
            # Inside the portal's cross-site iframe a cookie must be Secure, SameSite=None and
            # Partitioned (CHIPS: browsers that block third-party cookies keep partitioned
            # ones). Python 3.11's cookie module cannot write Partitioned: built by hand.
            signed = handler.create_signed_value(COOKIE, value).decode()
            handler.add_header(
                "Set-Cookie",
                f"{COOKIE}={signed}; Path=/; Max-Age={int(self.session_seconds)}; "
                "HttpOnly; Secure; SameSite=None; Partitioned",
            )
            return
        handler.set_signed_cookie(
            COOKIE,
            value,
            expires_days=self.session_seconds / 86400,
            httponly=True,
            path="/",
            samesite="Lax",
        )

    def close_session(self, handler: tornado.web.RequestHandler) -> None:
        session = self.session(handler)
        if session is not None:
            self._revoked.add(session.sid)
            self._user_tokens.pop(session.sid, None)
        handler.clear_cookie(COOKIE, path="/")
        if self.secure_cookies:
            handler.add_header(
                "Set-Cookie",
                f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=None; Partitioned",
            )

    def token_of_request(
        self, request: HTTPServerRequest, cookie_secret: str | bytes
    ) -> str | None:
        """The Quix user's token behind a request (its bearer, or its session's), if any."""
        if self.mode != "quix":
            return None
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and bearer.strip():
            return bearer.strip()
        morsel = request.cookies.get(COOKIE)
        if morsel is None:
            return None
        raw = tornado.web.decode_signed_value(cookie_secret, COOKIE, morsel.value, max_age_days=1)
        session = self._session_from(raw)
        return self._user_tokens.get(session.sid) if session is not None else None

    def user_token(self, handler: tornado.web.RequestHandler) -> str | None:
        """The signed-in Quix user's token, for calls made on their behalf (never shown)."""
        bearer = _bearer(handler)
        if bearer is not None:
            return bearer
        session = self.session(handler)
        return self._user_tokens.get(session.sid) if session is not None else None

    # -- the check -----------------------------------------------------------------------------

    def admits_at_once(self, request: HTTPServerRequest, cookie_secret: str | bytes) -> bool:
        """True when :meth:`admit` would let the request through without waiting or answering:
        no authentication, or a live session cookie. False means "ask :meth:`admit`", never
        "refuse" (a bearer token, a sign-in redirect and every refusal are :meth:`admit`'s)."""
        if "Upgrade" in request.headers:
            return False  # admit() checks a WebSocket's origin first
        if self.mode == "none":
            return True
        morsel = request.cookies.get(COOKIE)
        if morsel is None:
            return False
        raw = tornado.web.decode_signed_value(cookie_secret, COOKIE, morsel.value, max_age_days=1)
        return self._session_from(raw) is not None

    async def admit(self, handler: tornado.web.RequestHandler) -> bool:
        """True to let the request through; otherwise it has been answered (302/401/403/503)."""
        upgrade = handler.request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and not same_origin(handler):
            handler.set_status(403)
            handler.finish("cross-origin WebSocket upgrades are refused")
            return False
        if self.mode == "none" or self.session(handler) is not None:
            return True
        token = _bearer(handler)
        if token is not None:
            from orchestrator.quix import PortalUnavailable

            try:
                if await self.verifier.accepts(token):
                    if self.mode == "quix":
                        self.latest_user_token = token
                    return True
            except PortalUnavailable:
                handler.set_status(503)
                handler.set_header("Retry-After", "5")
                handler.finish({"error": "the Quix portal cannot check tokens right now"})
                return False
        if wants_html(handler) and token is None:
            handler.redirect("/-/login?next=" + quote(handler.request.uri or "/", safe=""))
            return False
        handler.set_status(401)
        handler.set_header("WWW-Authenticate", 'Bearer realm="marimo-orchestrator"')
        handler.set_header("Cache-Control", "no-store")
        handler.finish({"error": "sign in first: a session cookie or Authorization: Bearer"})
        return False


def _bearer(handler: tornado.web.RequestHandler) -> str | None:
    value = handler.request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
