"""Routes only a signed-in user reaches: the guard is part of the route, never looked up.

Invariants:

* A :class:`Protected` handler gets the guard through Tornado's ``initialize(guard=...)``, a
  required argument of each one's ``initialize``, and :meth:`Protected.prepare` asks it before
  any method runs. Nothing is read from the application's settings, so a change of wiring cannot
  turn sign-in off: a protected route registered without a guard serves nothing (Tornado cannot
  build its handler and closes the connection unanswered; a handler whose guard was not set
  answers 500).
* :func:`require_guards` refuses, when the application is built, any rule whose handler is
  :class:`Protected` and whose arguments carry no guard: such wiring fails at start, not at the
  first request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import tornado.routing
import tornado.web

from orchestrator.trust.auth import Guard


class Protected(tornado.web.RequestHandler):
    """Admitted by :attr:`guard` before its method runs (a refused request is answered by the
    guard, and Tornado then skips the method)."""

    guard: Guard

    async def prepare(self) -> None:
        await self.guard.admit(self)


def require_guards(rules: Iterable[tornado.routing.Rule]) -> None:
    """Raise ``ValueError`` for a rule (nested rule lists included) that routes to a
    :class:`Protected` handler without a guard among its arguments."""
    for rule in rules:
        target: Any = rule.target
        if isinstance(target, list):
            require_guards(target)
        elif (
            isinstance(target, type)
            and issubclass(target, Protected)
            and not isinstance((rule.target_kwargs or {}).get("guard"), Guard)
        ):
            raise ValueError(f"{target.__name__} is registered without a guard")
