"""``POST /-/restart``: ``{"scope": "marimo" | "install" | "deployment", "rebuild": bool}``."""

from __future__ import annotations

import json
from typing import Any

import tornado.web

from orchestrator.actions import Actions
from orchestrator.auth import Guard, same_origin


class RestartHandler(tornado.web.RequestHandler):
    """Answers 202 and enqueues; the work shows up in /-/status and /-/events.

    Requires a JSON body (a non-simple content type, so a cross-site form cannot send it).
    """

    def initialize(self, actions: Actions, **_: Any) -> None:
        self.actions = actions

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def _fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish({"error": message})

    async def prepare(self) -> None:
        guard: Guard | None = self.application.settings.get("guard")
        if guard is not None:
            await guard.admit(self)

    def post(self) -> None:
        if not same_origin(self):
            self._fail(403, "cross-site requests to /-/restart are refused")
            return
        content_type = self.request.headers.get("Content-Type", "").split(";", 1)[0].strip()
        if content_type != "application/json":
            self._fail(415, "send JSON: Content-Type: application/json")
            return
        try:
            payload = json.loads(self.request.body or b"{}")
        except ValueError:
            self._fail(400, "the body is not valid JSON")
            return
        if not isinstance(payload, dict) or not isinstance(payload.get("scope"), str):
            self._fail(400, 'expected {"scope": "marimo" | "install" | "deployment"}')
            return
        rebuild = bool(payload.get("rebuild", False))
        token = self.settings.get("user_token_of", lambda _: None)(self)
        answer = self.actions.restart(payload["scope"], rebuild, token)
        self.set_status(answer.status)
        self.finish(answer.body)
