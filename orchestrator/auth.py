"""Who may use the orchestrator: sessions, tokens, and the check every protected route makes.

Modes: ``quix`` (tokens validated by the Quix portal), ``token`` (one shared access token) and
``none`` (explicit opt-in). A session is a signed, HttpOnly cookie carrying a random id, its
issue time and what ties it to its credential: in ``token`` mode a keyed digest of the access
token (a new token ends every session made with the old one), in ``quix`` mode the user's token
sealed with AES-GCM under a key derived from the signing secret (orchestrator/session_crypto.py),
so the portal can be asked again, after a restart too. The signing secret lives in the state
directory (mode 0600) so sessions survive restarts; ended sessions are remembered there too
(orchestrator/revocations.py). Tokens are never put in a cookie in plain text, a log line, the
status or a page.

Session lifetime: at most ``session_seconds`` (8 h) from sign-in; ended earlier by logging out,
by a new ``ORCHESTRATOR_TOKEN``, or (``quix``) when the portal no longer accepts the token. A
Quix session is re-checked at most every ``quix_recheck`` seconds; while the portal cannot be
reached it is kept for ``quix_grace`` seconds, then ended. Ending a session also closes the
WebSockets (marimo's editor and terminal) opened with it.

Invariants: :meth:`Guard.admit` is awaited before any protected handler does anything (for
WebSockets: before the upgrade); a request it refuses has already been answered; nothing here
raises into a handler. Token guesses are throttled (orchestrator/throttle.py).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import secrets
import string
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, urlsplit

import tornado.web
from tornado.httputil import HTTPServerRequest

from orchestrator.auth_modes import AuthMode
from orchestrator.revocations import Revocations
from orchestrator.secret_rotation import SignOut
from orchestrator.throttle import SignInThrottle, client_address

if TYPE_CHECKING:
    from orchestrator.quix import QuixPortal

log = logging.getLogger("orchestrator")

COOKIE = "marimo_orchestrator_session"
SESSION_SECONDS = 8 * 3600
QUIX_RECHECK = 300.0
QUIX_GRACE = 30 * 60.0
PORTAL_RETRY = 30.0
"""While the portal cannot be reached, how often a session in its grace period asks again (at
most; every ``quix_recheck`` when that is shorter)."""
MAX_TRACKED = 10_000
COOKIE_BUDGET = 3800
"""Bytes a session cookie may take (browsers keep 4096 per cookie, name and attributes included).
A Quix token too long to be sealed within it is kept in memory instead: that session then ends
with the process."""

Outcome = Literal["ok", "rejected", "throttled", "portal"]


def load_secret(path: Path | None) -> bytes:
    """The cookie-signing secret kept in ``path``, or a new one for now.

    Only reads: nothing is written (or fsynced) before the port answers. A new secret is
    persisted once the ``state`` step resolves the directory (orchestrator/secret_adoption.py).
    """
    if path is not None:
        try:
            with open(path, "rb") as handle:
                # Only our own file: one another user put there would be theirs to forge with.
                if os.fstat(handle.fileno()).st_uid == os.getuid():
                    data = handle.read()
                    if len(data) >= 32:
                        return data
        except OSError:
            pass
    return secrets.token_bytes(48)


@dataclass(frozen=True)
class Session:
    sid: str
    issued_at: float
    binding: str = ""
    """``token`` mode: the keyed digest of the access token the session was made with."""
    sealed: str = ""
    """``quix`` mode: the user's token, sealed (orchestrator/session_crypto.py)."""


class Verifier:
    """Is this token good? Answers True/False; raises PortalUnavailable on a Quix outage."""

    def __init__(self, mode: AuthMode, token: str | None, portal: QuixPortal | None) -> None:
        self.mode = mode
        self._token = token
        self._portal = portal

    @property
    def token(self) -> str | None:
        return self._token

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


def is_https(request: HTTPServerRequest, trust_proxy: bool) -> bool:
    """Came over https: directly, or per ``X-Forwarded-Proto`` from a trusted proxy."""
    if request.protocol == "https":
        return True
    if trust_proxy:
        forwarded = request.headers.get("X-Forwarded-Proto", "")
        return forwarded.split(",")[-1].strip().lower() == "https"
    return False


def _origin_tuple(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """None for what names no origin (an unbalanced ``[``, a port out of range, no host)."""
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    if parts.hostname is None:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def same_origin(handler: tornado.web.RequestHandler, trust_proxy: bool) -> bool:
    """No Origin header (not a browser's cross-site request) or one naming this very site:
    the same scheme, host and port (the scheme and host as a trusted proxy in front saw them)."""
    request = handler.request
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:  # "http://[": no origin at all, so not ours (fails closed)
        return False
    claimed = _origin_tuple(parts.scheme.lower(), parts.netloc)
    if claimed is None:
        return False
    scheme = "https" if is_https(request, trust_proxy) else "http"
    hosts = [request.host]
    forwarded = request.headers.get("X-Forwarded-Host")
    if forwarded and trust_proxy:
        hosts.append(forwarded.split(",")[-1].strip())
    return any(_origin_tuple(scheme, host) == claimed for host in hosts)


def wants_html(handler: tornado.web.RequestHandler) -> bool:
    request = handler.request
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")


def safe_next(value: str | None) -> str:
    """Only a path on this server: never another host (open redirect), never a scheme."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return "/"
    if "\\" in value:
        return "/"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return "/"  # no header injection through a redirect
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    # A Location header is Latin-1 on the wire: other characters (and spaces) go percent-encoded.
    return quote(value, safe=string.punctuation)


class Guard:
    def __init__(
        self,
        mode: AuthMode,
        verifier: Verifier,
        *,
        trust_proxy: bool = False,
        session_seconds: float = SESSION_SECONDS,
        quix_recheck: float = QUIX_RECHECK,
        quix_grace: float = QUIX_GRACE,
        throttle: SignInThrottle | None = None,
        framed: bool = False,
        token_generated: bool = False,
        secret: Callable[[], str | bytes],
        on_admit: Callable[[HTTPServerRequest], None],
        rotate: Callable[[], SignOut],
    ) -> None:
        self.mode = mode
        self.binds_token = not token_generated
        """Token-mode sessions carry a digest of the access token, so a new ``--token`` ends the
        sessions made with the old one. A token generated at start is new at every start without
        anyone choosing to rotate it: its sessions rest on the persistent signing secret alone,
        and survive restarts as open tabs must."""
        self.cross_site_cookie = mode == "quix" or framed
        """The sign-in cookie is Secure, SameSite=None and Partitioned: in quix mode, and when
        other sites may frame our pages (a Lax cookie never reaches us inside such a frame)."""
        self.verifier = verifier
        self.trust_proxy = trust_proxy
        self.session_seconds = session_seconds
        self.quix_recheck = quix_recheck
        self.quix_grace = quix_grace
        self.throttle = throttle or SignInThrottle()
        self.revocations = Revocations()
        self.on_admit = on_admit
        """Told of every admitted request (orchestrator/bounds.py stops counting its connection)."""
        self.secret = secret
        """The signing secret in force, read at each use: it may be adopted from the state."""
        self.rotate = rotate
        """Ends every session for good when a logout cannot be recorded
        (orchestrator/secret_rotation.py); says how far the logout went."""
        self._checked: dict[str, float] = {}
        """Quix sessions: when (monotonic) the portal last said yes."""
        self._unreachable: dict[str, float] = {}
        """Quix sessions: since when the portal could not be asked."""
        self._sockets: dict[str, weakref.WeakSet[tornado.web.RequestHandler]] = {}
        self._socket_sessions: dict[str, Session] = {}
        self._binding: tuple[str | bytes, str] | None = None
        self._memory_tokens: dict[str, str] = {}
        """Quix tokens too long for the cookie, by session id (this process only)."""
        self.latest_user_token: str | None = None
        """The token of the Quix user who signed in last (kept in memory only)."""

    # -- sessions ------------------------------------------------------------------------------

    def session(self, handler: tornado.web.RequestHandler) -> Session | None:
        return self._session_from(handler.get_signed_cookie(COOKIE, max_age_days=1))

    def _expected_binding(self, secret: str | bytes) -> str:
        from orchestrator.session_crypto import binding

        if self._binding is None or self._binding[0] is not secret:
            credential = (self.verifier.token or "") if self.binds_token else ""
            self._binding = (secret, binding(secret, credential))
        return self._binding[1]

    def _session_from(self, raw: bytes | None) -> Session | None:
        """The live session a verified cookie value names, if any."""
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
        if session.sid in self.revocations:
            return None
        if not 0 <= time.time() - session.issued_at <= self.session_seconds:
            return None
        if self.mode == "token":
            expected = self._expected_binding(self.secret())
            if not hmac.compare_digest(session.binding.encode(), expected.encode()):
                return None  # made with another access token
        if self.mode == "quix" and not session.sealed and session.sid not in self._memory_tokens:
            return None
        return session

    def _credential(self, session: Session) -> str | None:
        """A Quix session's token: unsealed from its cookie, or from memory."""
        if not session.sealed:
            return self._memory_tokens.get(session.sid)
        from orchestrator.session_crypto import unseal

        return unseal(self.secret(), session.sealed)

    def open_session(self, handler: tornado.web.RequestHandler, token: str | None) -> None:
        from orchestrator.session_crypto import seal

        sid = secrets.token_urlsafe(24)
        payload: dict[str, object] = {"sid": sid, "iat": time.time()}
        secret = self.secret()
        if self.mode == "token":
            payload["cb"] = self._expected_binding(secret)
        if token and self.mode == "quix":
            payload["ct"] = seal(secret, token)
            self.latest_user_token = token
            self._remember(self._checked, sid, time.monotonic())
        value = json.dumps(payload, separators=(",", ":"))
        if self.mode == "quix" and len(handler.create_signed_value(COOKIE, value)) > COOKIE_BUDGET:
            del payload["ct"]
            value = json.dumps(payload, separators=(",", ":"))
            self._memory_tokens[sid] = token or ""
            if len(self._memory_tokens) > MAX_TRACKED:
                del self._memory_tokens[next(iter(self._memory_tokens))]
            log.warning(
                "a Quix token is too long to keep in the session cookie; that session is kept "
                "in memory and ends when the orchestrator restarts"
            )
        if self.cross_site_cookie:
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
            secure=is_https(handler.request, self.trust_proxy),
        )

    def close_session(self, handler: tornado.web.RequestHandler) -> SignOut:
        """A logout: the session ends here at once and for good. When its end cannot be
        recorded on the state volume, every session is ended instead (:attr:`rotate`), so that
        this one cannot come back with a restart; the answer says which happened."""
        session = self.session(handler)
        outcome: SignOut = "here"
        if session is not None and not self.end(session):
            outcome = self.rotate()
            if outcome == "everyone":
                for sid in list(self._sockets):
                    self._close_sockets(sid)
        self._clear_cookie(handler)
        return outcome

    def _clear_cookie(self, handler: tornado.web.RequestHandler) -> None:
        handler.clear_cookie(COOKIE, path="/")
        if self.cross_site_cookie:
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
        return self._credential(session) if session is not None else None

    def end(self, session: Session) -> bool:
        """Ends a session and closes its WebSockets; True when its end is recorded on the state
        volume (it stays ended after a restart), False when only this process knows."""
        recorded = self.revocations.add(session.sid, session.issued_at + self.session_seconds)
        self._checked.pop(session.sid, None)
        self._unreachable.pop(session.sid, None)
        self._memory_tokens.pop(session.sid, None)
        self._close_sockets(session.sid)
        return recorded

    def _close_sockets(self, sid: str) -> None:
        self._socket_sessions.pop(sid, None)
        for socket in list(self._sockets.pop(sid, ())):
            close = getattr(socket, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):  # a socket already gone
                    close(1008, "the session ended")

    def user_token(self, handler: tornado.web.RequestHandler) -> str | None:
        """The signed-in Quix user's token, for calls made on their behalf (never shown)."""
        bearer = _bearer(handler)
        if bearer is not None:
            return bearer
        session = self.session(handler)
        return self._credential(session) if session is not None else None

    @staticmethod
    def _remember(table: dict[str, float], sid: str, value: float) -> None:
        table.pop(sid, None)
        table[sid] = value
        if len(table) > MAX_TRACKED:
            del table[next(iter(table))]

    # -- Quix re-checks ------------------------------------------------------------------------

    def _due(self, sid: str) -> bool:
        last = self._checked.get(sid)
        return last is None or time.monotonic() - last >= self.quix_recheck

    async def _still_allowed(self, session: Session) -> bool:
        """Asks the portal again when the last yes is ``quix_recheck`` old; ends the session
        when the portal refuses, or has been unreachable for longer than the grace."""
        if self.mode != "quix" or not self._due(session.sid):
            return True
        from orchestrator.quix import PortalUnavailable

        token = self._credential(session)
        if not token:
            self.end(session)
            return False
        now = time.monotonic()
        try:
            allowed = await self.verifier.accepts(token)
        except PortalUnavailable:
            since = self._unreachable.get(session.sid)
            if since is None:
                since = now
                self._remember(self._unreachable, session.sid, now)
                log.warning(
                    "the Quix portal cannot re-check a session; it is kept for up to %s "
                    "while the portal is unreachable",
                    _duration(self.quix_grace),
                )
            if now - since > self.quix_grace:
                log.warning(
                    "a Quix session ended: the portal could not re-check it for %s",
                    _duration(self.quix_grace),
                )
                self.end(session)
                return False
            # Ask again in a while, not at every request.
            retry = min(PORTAL_RETRY, self.quix_recheck)
            self._remember(self._checked, session.sid, now - self.quix_recheck + retry)
            return True
        self._unreachable.pop(session.sid, None)
        if not allowed:
            log.info("a Quix session ended: the portal no longer accepts its token")
            self.end(session)
            return False
        self._remember(self._checked, session.sid, now)
        return True

    async def sweep(self) -> None:
        """Re-checks the sessions that hold WebSockets open (they make no new requests): an
        expired one ends, a Quix one is asked about like any request would."""
        for sid, session in list(self._socket_sessions.items()):
            sockets = self._sockets.get(sid)
            if not sockets:
                self._sockets.pop(sid, None)
                self._socket_sessions.pop(sid, None)
                continue
            if session.sid in self.revocations or (
                time.time() - session.issued_at > self.session_seconds
            ):
                self.end(session)
                continue
            await self._still_allowed(session)

    # -- tokens --------------------------------------------------------------------------------

    async def try_token(
        self, handler: tornado.web.RequestHandler, token: str
    ) -> tuple[Outcome, float]:
        """Checks a presented token under the throttle: the outcome and, when throttled, the
        seconds to wait."""
        from orchestrator.quix import PortalUnavailable

        client = client_address(handler.request, self.trust_proxy)
        wait = self.throttle.wait(client)
        if wait > 0:
            return "throttled", wait
        try:
            accepted = await self.verifier.accepts(token)
        except PortalUnavailable:
            return "portal", 0.0
        if accepted:
            self.throttle.succeeded(client)
            return "ok", 0.0
        self.throttle.failed(client)
        return "rejected", 0.0

    # -- the check -----------------------------------------------------------------------------

    def admits_at_once(self, request: HTTPServerRequest, cookie_secret: str | bytes) -> bool:
        """True when :meth:`admit` would let the request through without waiting or answering:
        no authentication, or a live session cookie not due for a re-check. False means "ask
        :meth:`admit`", never "refuse" (a bearer token, a sign-in redirect, a re-check and
        every refusal are :meth:`admit`'s)."""
        if "Upgrade" in request.headers:
            return False  # admit() checks a WebSocket's origin first
        if self.mode == "none":
            self.on_admit(request)
            return True
        morsel = request.cookies.get(COOKIE)
        if morsel is None:
            return False
        raw = tornado.web.decode_signed_value(cookie_secret, COOKIE, morsel.value, max_age_days=1)
        session = self._session_from(raw)
        if session is None or (self.mode == "quix" and self._due(session.sid)):
            return False
        self.on_admit(request)
        return True

    async def admit(self, handler: tornado.web.RequestHandler) -> bool:
        """True to let the request through; otherwise it has been answered
        (302/401/403/429/503)."""
        request = handler.request
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and not same_origin(handler, self.trust_proxy):
            handler.set_status(403)
            handler.finish("cross-origin WebSocket upgrades are refused")
            return False
        if self.mode == "none":
            self.on_admit(request)
            return True
        session = self.session(handler)
        if session is not None:
            if await self._still_allowed(session):
                if upgrade:
                    self._sockets.setdefault(session.sid, weakref.WeakSet()).add(handler)
                    self._socket_sessions[session.sid] = session
                self.on_admit(request)
                return True
            self._clear_cookie(handler)
        token = _bearer(handler)
        if token is not None:
            outcome, wait = await self.try_token(handler, token)
            if outcome == "ok":
                if self.mode == "quix":
                    self.latest_user_token = token
                self.on_admit(request)
                return True
            if outcome == "throttled":
                handler.set_status(429)
                handler.set_header("Retry-After", self.throttle.retry_after(wait))
                handler.finish({"error": "too many failed sign-ins; try again later"})
                return False
            if outcome == "portal":
                handler.set_status(503)
                handler.set_header("Retry-After", "5")
                handler.finish({"error": "the Quix portal cannot check tokens right now"})
                return False
        if wants_html(handler) and token is None:
            handler.redirect("/-/login?next=" + quote(request.uri or "/", safe=""))
            return False
        handler.set_status(401)
        handler.set_header("WWW-Authenticate", 'Bearer realm="marimo-orchestrator"')
        handler.set_header("Cache-Control", "no-store")
        handler.finish({"error": "sign in first: a session cookie or Authorization: Bearer"})
        return False


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _bearer(handler: tornado.web.RequestHandler) -> str | None:
    value = handler.request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
