"""Who may use the orchestrator: the check every protected route makes (admission), and the
sessions and tokens it rests on.

Modes: ``quix`` (tokens validated by the Quix portal), ``token`` (one shared access token) and
``none`` (explicit opt-in). The parts, each a module of its own: the session cookie
(trust/session_cookie.py, signed with trust/signing.py's secret), where a request
comes from (orchestrator/trust/origins.py), Quix re-checks (orchestrator/trust/quix_recheck.py), the
WebSockets each session holds (orchestrator/trust/session_sockets.py), ended sessions
(trust/revocations.py) and the sign-in throttle (trust/throttle.py). Tokens are
never put in a cookie in plain text, a log line, the status or a page.

Session lifetime: at most ``session_seconds`` (8 h) from sign-in; ended earlier by logging out,
by a new ``ORCHESTRATOR_TOKEN``, or (``quix``) when the portal no longer accepts the token. A
Quix session is re-checked at most every ``quix_recheck`` seconds; while the portal cannot be
reached it is kept for ``quix_grace`` seconds, then ended. Ending a session also closes the
WebSockets (marimo's editor and terminal) opened with it.

Invariants: :meth:`Guard.admit` is awaited before any protected handler does anything (for
WebSockets: before the upgrade); a request it refuses has already been answered; nothing here
raises into a handler; a session is live only when its cookie reads as one and it was not ended.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

import tornado.web
from tornado.httputil import HTTPServerRequest

from orchestrator.trust.auth_modes import AuthMode
from orchestrator.trust.origins import same_origin, wants_html
from orchestrator.trust.quix_recheck import QuixRechecks
from orchestrator.trust.revocations import Revocations
from orchestrator.trust.secret_rotation import SignOut
from orchestrator.trust.session_cookie import Session, SessionCookies
from orchestrator.trust.session_sockets import SessionSockets
from orchestrator.trust.signing import SigningSecret
from orchestrator.trust.throttle import SignInThrottle, client_address

if TYPE_CHECKING:
    from orchestrator.quix.portal import QuixPortal

log = logging.getLogger("orchestrator")

SESSION_SECONDS = 8 * 3600

Outcome = Literal["ok", "rejected", "throttled", "portal"]


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


class Guard:
    def __init__(
        self,
        mode: AuthMode,
        verifier: Verifier,
        *,
        trust_proxy: bool,
        session_seconds: float = SESSION_SECONDS,
        quix_recheck: float,
        quix_grace: float,
        throttle: SignInThrottle | None = None,
        framed: bool,
        token_generated: bool,
        secret: SigningSecret,
        on_admit: Callable[[HTTPServerRequest], None],
        rotate: Callable[[], SignOut],
    ) -> None:
        self.mode = mode
        self.verifier = verifier
        self.trust_proxy = trust_proxy
        self.session_seconds = session_seconds
        self.quix_recheck = quix_recheck
        self.throttle = throttle or SignInThrottle()
        self.revocations = Revocations()
        self.on_admit = on_admit
        """Told of every admitted request (trust/bounds.py stops counting its connection)."""
        self.rotate = rotate
        """Ends every session for good when a logout cannot be recorded
        (orchestrator/trust/secret_rotation.py); says how far the logout went."""
        self.cookies = SessionCookies(
            mode,
            secret,
            session_seconds=session_seconds,
            # Token-mode sessions carry a digest of the access token, so a new ``--token`` ends
            # the sessions made with the old one. A token generated at start is new at every
            # start without anyone choosing to rotate it: its sessions rest on the persistent
            # signing secret alone, and survive restarts as open tabs must.
            credential="" if token_generated else (verifier.token or ""),
            # Secure, SameSite=None and Partitioned in quix mode, and when other sites may
            # frame our pages (a Lax cookie never reaches us inside such a frame).
            cross_site=mode == "quix" or framed,
            trust_proxy=trust_proxy,
        )
        self.rechecks = QuixRechecks(verifier, quix_recheck, quix_grace)
        self.sockets = SessionSockets()
        self.latest_user_token: str | None = None
        """The token of the Quix user who signed in last (kept in memory only)."""

    # -- sessions ------------------------------------------------------------------------------

    def session(self, handler: tornado.web.RequestHandler) -> Session | None:
        return self._live(self.cookies.of_handler(handler))

    def _live(self, session: Session | None) -> Session | None:
        """``session`` unless it was ended (logged out)."""
        if session is None or session.sid in self.revocations:
            return None
        return session

    def open_session(self, handler: tornado.web.RequestHandler, token: str | None) -> None:
        sid = self.cookies.write(handler, token)
        if token and self.mode == "quix":
            self.latest_user_token = token
            self.rechecks.passed(sid)

    def close_session(self, handler: tornado.web.RequestHandler) -> SignOut:
        """A logout: the session ends here at once and for good. When its end cannot be
        recorded on the state volume, every session is ended instead (:attr:`rotate`), so that
        this one cannot come back with a restart; the answer says which happened."""
        session = self.session(handler)
        outcome: SignOut = "here"
        if session is not None and not self.end(session):
            outcome = self.rotate()
            if outcome == "everyone":
                self.sockets.close_all()
        self.cookies.clear(handler)
        return outcome

    def token_of_request(self, request: HTTPServerRequest) -> str | None:
        """The Quix user's token behind a request (its bearer, or its session's), if any."""
        if self.mode != "quix":
            return None
        bearer = _bearer(request)
        if bearer is not None:
            return bearer
        session = self._live(self.cookies.of_request(request))
        return self.cookies.credential(session) if session is not None else None

    def end(self, session: Session) -> bool:
        """Ends a session and closes its WebSockets; True when its end is recorded on the state
        volume (it stays ended after a restart), False when only this process knows."""
        recorded = self.revocations.add(session.sid, session.issued_at + self.session_seconds)
        self.rechecks.forget(session.sid)
        self.cookies.forget(session.sid)
        self.sockets.close(session.sid)
        return recorded

    def user_token(self, handler: tornado.web.RequestHandler) -> str | None:
        """The signed-in Quix user's token, for calls made on their behalf (never shown)."""
        bearer = _bearer(handler.request)
        if bearer is not None:
            return bearer
        session = self.session(handler)
        return self.cookies.credential(session) if session is not None else None

    # -- Quix re-checks ------------------------------------------------------------------------

    async def _still_allowed(self, session: Session) -> bool:
        """Asks the portal again when the last yes is ``quix_recheck`` old; ends the session
        when the portal refuses, or has been unreachable for longer than the grace."""
        if self.mode != "quix" or not self.rechecks.due(session.sid):
            return True
        if await self.rechecks.confirm(session.sid, self.cookies.credential(session)):
            return True
        self.end(session)
        return False

    async def sweep(self) -> None:
        """Re-checks the sessions that hold WebSockets open (they make no new requests): an
        expired one ends, a Quix one is asked about like any request would."""
        for session in self.sockets.held():
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
        from orchestrator.quix.portal import PortalUnavailable

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

    def admits_at_once(self, request: HTTPServerRequest) -> bool:
        """True when :meth:`admit` would let the request through without waiting or answering:
        no authentication, or a live session cookie not due for a re-check. False means "ask
        :meth:`admit`", never "refuse" (a bearer token, a sign-in redirect, a re-check and
        every refusal are :meth:`admit`'s)."""
        if "Upgrade" in request.headers:
            return False  # admit() checks a WebSocket's origin first
        if self.mode == "none":
            self.on_admit(request)
            return True
        session = self._live(self.cookies.of_request(request))
        if session is None or (self.mode == "quix" and self.rechecks.due(session.sid)):
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
                    self.sockets.track(session, handler)
                self.on_admit(request)
                return True
            self.cookies.clear(handler)
        token = _bearer(handler.request)
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


def _bearer(request: HTTPServerRequest) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
