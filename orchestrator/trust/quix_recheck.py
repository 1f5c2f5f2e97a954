"""Asking the Quix portal again about a signed-in session: at most every ``recheck`` seconds,
and, while the portal cannot be reached, for at most ``grace`` seconds before the session ends.

Invariants: a session the portal refuses, or that has no token to ask about, is reported as not
allowed (the guard ends it); while the portal is unreachable a session is kept for ``grace``
seconds from the first failed question, asked again at most every :data:`PORTAL_RETRY` seconds
(not at every request); the tables kept per session are bounded (trust/session_cookie.py's
:func:`remember`). The token is never logged.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from orchestrator.trust.session_cookie import remember

if TYPE_CHECKING:
    from orchestrator.trust.auth import Verifier

log = logging.getLogger("orchestrator")

PORTAL_RETRY = 30.0
"""While the portal cannot be reached, how often a session in its grace period asks again (at
most; every ``quix_recheck`` when that is shorter)."""


class QuixRechecks:
    """When the portal last said yes for each session, and since when it could not be asked."""

    def __init__(self, verifier: Verifier, recheck: float, grace: float) -> None:
        self.verifier = verifier
        self.recheck = recheck
        self.grace = grace
        self._checked: dict[str, float] = {}
        """When (monotonic) the portal last said yes, by session id."""
        self._unreachable: dict[str, float] = {}
        """Since when the portal could not be asked, by session id."""

    def passed(self, sid: str) -> None:
        """The portal (or a sign-in) just accepted session ``sid``'s token."""
        remember(self._checked, sid, time.monotonic())

    def due(self, sid: str) -> bool:
        last = self._checked.get(sid)
        return last is None or time.monotonic() - last >= self.recheck

    def forget(self, sid: str) -> None:
        self._checked.pop(sid, None)
        self._unreachable.pop(sid, None)

    async def confirm(self, sid: str, token: str | None) -> bool:
        """Ask the portal about ``token`` (session ``sid``, due for a re-check): False when the
        session must end (refused, no token, or unreachable for longer than the grace)."""
        from orchestrator.quix.portal import PortalUnavailable

        if not token:
            return False
        now = time.monotonic()
        try:
            allowed = await self.verifier.accepts(token)
        except PortalUnavailable:
            since = self._unreachable.get(sid)
            if since is None:
                since = now
                remember(self._unreachable, sid, now)
                log.warning(
                    "the Quix portal cannot re-check a session; it is kept for up to %s "
                    "while the portal is unreachable",
                    _duration(self.grace),
                )
            if now - since > self.grace:
                log.warning(
                    "a Quix session ended: the portal could not re-check it for %s",
                    _duration(self.grace),
                )
                return False
            # Ask again in a while, not at every request.
            retry = min(PORTAL_RETRY, self.recheck)
            remember(self._checked, sid, now - self.recheck + retry)
            return True
        self._unreachable.pop(sid, None)
        if not allowed:
            log.info("a Quix session ended: the portal no longer accepts its token")
            return False
        remember(self._checked, sid, now)
        return True


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
