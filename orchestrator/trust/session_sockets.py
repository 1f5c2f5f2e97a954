"""The WebSockets each session opened (marimo's editor and terminal), so that ending a session
closes them, and sessions that only hold sockets open (they make no new requests) are still
checked (:meth:`orchestrator.trust.auth.Guard.sweep`).

Invariants: a socket is held weakly (a closed relay is forgotten with its handler); closing a
session's sockets sends close code 1008 and never raises (a socket already gone is passed
over); a session with no socket left is dropped at the next :meth:`SessionSockets.held`.
"""

from __future__ import annotations

import contextlib
import weakref

import tornado.web

from orchestrator.trust.session_cookie import Session


class SessionSockets:
    def __init__(self) -> None:
        self._sockets: dict[str, weakref.WeakSet[tornado.web.RequestHandler]] = {}
        self._sessions: dict[str, Session] = {}

    def track(self, session: Session, socket: tornado.web.RequestHandler) -> None:
        """``socket`` was opened with ``session``."""
        self._sockets.setdefault(session.sid, weakref.WeakSet()).add(socket)
        self._sessions[session.sid] = session

    def held(self) -> list[Session]:
        """The sessions that still hold a socket open."""
        live: list[Session] = []
        for sid, session in list(self._sessions.items()):
            if self._sockets.get(sid):
                live.append(session)
            else:
                self._sockets.pop(sid, None)
                self._sessions.pop(sid, None)
        return live

    def close(self, sid: str) -> None:
        """Close every socket session ``sid`` opened (1008, "the session ended")."""
        self._sessions.pop(sid, None)
        for socket in list(self._sockets.pop(sid, ())):
            close = getattr(socket, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):  # a socket already gone
                    close(1008, "the session ended")

    def close_all(self) -> None:
        for sid in list(self._sockets):
            self.close(sid)
