"""``/-/login`` and ``/-/logout``: the only routes besides the probes reachable signed out."""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import quote

import tornado.web

from orchestrator.auth import Guard, safe_next, same_origin
from orchestrator.web.handlers import STATIC_DIR

_MESSAGES = {
    "rejected": "That token was not accepted. Check it and try again.",
    "portal": "The Quix portal cannot check tokens right now. Try again in a moment.",
    "origin": "This sign-in came from another site and was refused.",
    "throttled": "Too many failed sign-ins. Wait a little, then try again.",
}


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

    def _page(self, status: int = 200, error: str | None = None) -> None:
        target = safe_next(self.get_argument("next", None))
        page = (
            self.template.replace("{{MODE}}", html.escape(self.guard.mode))
            .replace("{{NEXT}}", html.escape(target))
            .replace("{{ERROR}}", html.escape(_MESSAGES.get(error or "", "")))
            .replace("{{PORTAL_ORIGINS}}", html.escape(self.portal_origins))
        )
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page)

    async def get(self) -> None:
        token = self.get_query_argument("token", None)
        if token is not None and self.guard.mode == "token":
            # The ready-to-click URL printed at start: sign in, then drop the token from the URL.
            outcome, wait = await self.guard.try_token(self, token)
            if outcome == "ok":
                self.guard.open_session(self, token)
                self.redirect(safe_next(self.get_argument("next", None)))
                return
            if outcome == "throttled":
                self.set_header("Retry-After", self.guard.throttle.retry_after(wait))
                self._page(429, "throttled")
                return
            self._page(401, "rejected")
            return
        if self.guard.mode == "none" or self.guard.session(self) is not None:
            self.redirect(safe_next(self.get_argument("next", None)))
            return
        self._page()

    async def post(self) -> None:
        is_json = self.request.headers.get("Content-Type", "").startswith("application/json")
        if is_json:
            try:
                payload = json.loads(self.request.body or b"{}")
            except ValueError:
                payload = {}
            token = str(payload.get("token") or "") if isinstance(payload, dict) else ""
            target = safe_next(payload.get("next") if isinstance(payload, dict) else None)
        else:
            token = self.get_body_argument("token", "")
            target = safe_next(self.get_body_argument("next", None))
        if not same_origin(self, self.guard.trust_proxy):
            self._answer(is_json, 403, "origin", target)
            return
        outcome, wait = await self.guard.try_token(self, token.strip())
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
        self.guard.open_session(self, token.strip())
        if is_json:
            self.finish({"ok": True, "next": target})
        else:
            self.redirect(target, status=303)

    def _answer(self, is_json: bool, status: int, error: str, target: str) -> None:
        if is_json:
            self.set_status(status)
            self.finish({"ok": False, "error": _MESSAGES[error]})
        else:
            self.request.arguments["next"] = [target.encode()]
            self._page(status, error)


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
        self.guard.close_session(self)
        self.redirect("/-/login?next=" + quote("/", safe=""), status=303)
