"""``POST /-/restart``: ``{"scope": "marimo" | "install" | "deployment", "rebuild": bool}``."""

from __future__ import annotations

from typing import Any

from orchestrator.actions import Actions
from orchestrator.trust.auth import Guard
from orchestrator.trust.origins import same_origin
from orchestrator.web.json_body import Field, json_request
from orchestrator.web.protected import Protected

FIELDS = {"scope": Field(str, required=True), "rebuild": Field(bool)}
SHAPE = '{"scope": "marimo" | "install" | "deployment", "rebuild": true | false}'


class RestartHandler(Protected):
    """Answers 202 and enqueues; the work shows up in /-/status and /-/events.

    Requires a JSON body (a non-simple content type, so a cross-site form cannot send it), read
    strictly (orchestrator/web/json_body.py): ``"rebuild": "false"`` is a 400 naming ``rebuild``.
    """

    def initialize(self, actions: Actions, *, guard: Guard, **_: Any) -> None:
        self.actions = actions
        self.guard = guard

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def _fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish({"error": message})

    def post(self) -> None:
        if not same_origin(self, self.guard.trust_proxy):
            self._fail(403, "cross-site requests to /-/restart are refused")
            return
        payload = json_request(self, FIELDS, SHAPE)
        if payload is None:
            return
        rebuild: bool = payload.get("rebuild", False)
        token = self.guard.user_token(self)
        answer = self.actions.restart(payload["scope"], rebuild, token)
        self.set_status(answer.status)
        self.finish(answer.body)
