"""``/-/login`` and ``/-/logout``: the only routes besides the probes reachable signed out."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import tornado.web

from orchestrator.trust.auth import Guard
from orchestrator.trust.origins import safe_next, same_origin
from orchestrator.web.handlers import STATIC_DIR
from orchestrator.web.json_body import BadInput, Field, json_object, text_field

FIELDS = {"token": Field(str), "next": Field(str)}
SHAPE = '{"token": "...", "next": "/path"}'

_MESSAGES = {
    "rejected": "That token was not accepted. Check it and try again.",
    "portal": "The Quix portal cannot check tokens right now. Try again in a moment.",
    "origin": "This sign-in came from another site and was refused.",
    "throttled": "Too many failed sign-ins. Wait a little, then try again.",
}

_SIGNED_OUT = {
    "everyone": "You are signed out. Your sign-out could not be recorded on the state volume "
    "(is it full?), so everyone was signed out to make sure it lasts after a restart: "
    "everyone signs in again.",
    "until-restart": "You are signed out, but the server could not record it on the state "
    "volume: this sign-out lasts only until the server restarts. Ask an operator to check "
    "the state volume.",
}
"""The notice the sign-in page shows after a logout that went further, or less far, than this
session (orchestrator/trust/secret_rotation.py); chosen by name, never text from the URL."""


LOGIN_PATH = "/-/login"


def token_from_login_url(text: str) -> str:
    """The token of a pasted sign-in URL, as the terminal prints it
    (``http://host:port/-/login?token=…``, other parameters and a trailing slash allowed);
    ``text`` itself when it is no URL of the sign-in page. Fails closed: such a URL whose
    ``token`` is missing, empty or given more than once yields ``""``, which no verifier
    accepts (refused, and counted by the throttle, like any wrong token). The token is never
    logged here."""
    if not text.lower().startswith(("http://", "https://", LOGIN_PATH)):
        return text
    try:
        parts = urlsplit(text)
    except ValueError:  # a malformed address (an unclosed IPv6 bracket): not a sign-in URL
        return text
    if parts.path.rstrip("/") != LOGIN_PATH:
        return text
    tokens = parse_qs(parts.query, keep_blank_values=True).get("token", [])
    return tokens[0] if len(tokens) == 1 else ""


class LoginHandler(tornado.web.RequestHandler):
    def initialize(self, guard: Guard, portal_origins: str = "", **_: Any) -> None:
        self.guard = guard
        self.portal_origins = portal_origins
        self.template = (STATIC_DIR / "login.html").read_text(encoding="utf-8")

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        # same-origin (not no-referrer): a form post must carry a real Origin, which we check;
        # the page's URL (which may hold ?token=) still never leaves this site.
        self.set_header("Referrer-Policy", "same-origin")

    def _page(
        self, status: int = 200, error: str | None = None, target: str = "/", notice: str = ""
    ) -> None:
        page = (
            self.template.replace("{{MODE}}", html.escape(self.guard.mode))
            .replace("{{NEXT}}", html.escape(target))
            .replace("{{ERROR}}", html.escape(_MESSAGES.get(error or "", error or "")))
            .replace(
                "{{NOTICE}}",
                f'<p id="notice" class="notice" role="status">{html.escape(notice)}</p>'
                if notice
                else "",
            )
            .replace("{{PORTAL_ORIGINS}}", html.escape(self.portal_origins))
        )
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page)

    async def get(self) -> None:
        query = self.request.query_arguments
        try:
            token = text_field(query, "token")
            target = safe_next(text_field(query, "next"))
            signed_out = text_field(query, "signed_out")
        except BadInput as bad:
            self._page(400, bad.message)
            return
        if token is not None and self.guard.mode == "token":
            # The ready-to-click URL printed at start: sign in, then drop the token from the URL.
            outcome, wait = await self.guard.try_token(self, token)
            if outcome == "ok":
                self.guard.open_session(self, token)
                self.redirect(target)
                return
            if outcome == "throttled":
                self.set_header("Retry-After", self.guard.throttle.retry_after(wait))
                self._page(429, "throttled", target)
                return
            self._page(401, "rejected", target)
            return
        if self.guard.mode == "none" or self.guard.session(self) is not None:
            self.redirect(target)
            return
        self._page(target=target, notice=_SIGNED_OUT.get(signed_out or "", ""))

    async def post(self) -> None:
        is_json = self.request.headers.get("Content-Type", "").startswith("application/json")
        try:
            if is_json:
                payload = json_object(self.request.body, FIELDS, SHAPE)
                token = payload.get("token", "")
                target = safe_next(payload.get("next"))
            else:
                token = text_field(self.request.body_arguments, "token") or ""
                target = safe_next(text_field(self.request.body_arguments, "next"))
        except BadInput as bad:
            # Fails closed: no token was tried, no session is made.
            self.set_status(bad.status)
            if is_json:
                self.finish({"ok": False, **bad.body()})
            else:
                self._page(bad.status, bad.message)
            return
        if not same_origin(self, self.guard.trust_proxy):
            self._answer(is_json, 403, "origin", target)
            return
        token = token_from_login_url(token.strip())  # the login URL pasted whole
        outcome, wait = await self.guard.try_token(self, token)
        if outcome == "throttled":
            self.set_header("Retry-After", self.guard.throttle.retry_after(wait))
            self._answer(is_json, 429, "throttled", target)
            return
        if outcome == "portal":
            self._answer(is_json, 503, "portal", target)
            return
        if outcome != "ok":
            self._answer(is_json, 401, "rejected", target)
            return
        self.guard.open_session(self, token)
        if is_json:
            self.finish({"ok": True, "next": target})
        else:
            self.redirect(target, status=303)

    def _answer(self, is_json: bool, status: int, error: str, target: str) -> None:
        if is_json:
            self.set_status(status)
            self.finish({"ok": False, "error": _MESSAGES[error]})
        else:
            self._page(status, error, target)


class LogoutHandler(tornado.web.RequestHandler):
    def initialize(self, guard: Guard, **_: Any) -> None:
        self.guard = guard

    def post(self) -> None:
        if self.request.headers.get("Origin") is None or not same_origin(
            self, self.guard.trust_proxy
        ):
            self.set_status(403)
            self.finish({"error": "log out from this site's own page"})
            return
        outcome = self.guard.close_session(self)
        notice = "" if outcome == "here" else f"&signed_out={outcome}"
        self.redirect("/-/login?next=" + quote("/", safe="") + notice, status=303)
