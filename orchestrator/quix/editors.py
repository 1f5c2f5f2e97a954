"""Who edits the notebooks, learned from the requests that reach marimo (for notebook sync).

The person whose request last reached one of marimo's save endpoints is the editor; until
someone saves, the person who last opened marimo's kernel WebSocket is. Tokens are kept in
memory only, never published or logged.
"""

from __future__ import annotations

import hashlib

SAVE_PATHS = frozenset(
    {
        "/api/kernel/save",
        "/api/kernel/save_app_config",
        "/api/kernel/rename",
        "/api/kernel/copy",
        "/api/files/create",
        "/api/files/update",
        "/api/files/delete",
        "/api/files/move",
    }
)
SOCKET_PATH = "/ws"
WATCHED = SAVE_PATHS | {SOCKET_PATH}


class Editors:
    """The latest saver's and the latest kernel WebSocket's tokens."""

    __slots__ = ("_saver", "_socket")

    def __init__(self) -> None:
        self._saver: str | None = None
        self._socket: str | None = None

    def __repr__(self) -> str:
        return f"Editors(saver={self._saver is not None}, socket={self._socket is not None})"

    def saw(self, path: str, method: str, status: int, token: str | None) -> None:
        """A request to ``path`` answered ``status``, made with ``token`` (None: unknown)."""
        if token is None or status >= 400:
            return
        if path in SAVE_PATHS and method == "POST":
            self._saver = token
        elif path == SOCKET_PATH:
            self._socket = token

    def token(self) -> str | None:
        return self._saver or self._socket


def identity(token: str | None) -> str | None:
    """A name for a credential that is not the credential (to tell "the same one" apart)."""
    return hashlib.sha256(token.encode()).hexdigest() if token else None
