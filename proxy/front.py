"""What a front end (the side of the proxy that faces the client) must do for
:class:`proxy.forward.Forwarding`, and the answers it gives when marimo gave none.

Invariant: a front only says how bytes and answers reach the client; when they are sent, and
which answer a failure gets, is :mod:`proxy.forward`'s to decide.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable
from typing import Protocol

from proxy import wire


class Failure(enum.Enum):
    """Why marimo gave no answer: the front answers the client accordingly."""

    UNAVAILABLE = "unavailable"
    TOO_SLOW = "too-slow"


def valid_target(uri: str) -> bool:
    """Whether the target is valid UTF-8 once back in bytes (Tornado decoded it as latin-1);
    every percent-encoded target is. Others are refused rather than guessed at."""
    try:
        uri.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return False
    return True


class Front(Protocol):
    """How one front end delivers to the client; :class:`proxy.forward.Forwarding` decides when.

    ``send`` and ``end`` raise :class:`~tornado.iostream.StreamClosedError` when the client is
    gone. ``head`` is True when the status line and headers must go out with that write.
    """

    def start(self, response: wire.Response) -> None:
        """Takes marimo's status and headers as the response's own; nothing is sent yet."""

    def send_head(self) -> asyncio.Future[None]:
        """Sends the status line and headers alone."""

    def send(self, chunk: bytes, *, head: bool) -> Awaitable[None]:
        """Sends one body piece."""

    def end(self, response: wire.Response, *, head: bool) -> Awaitable[None]:
        """Ends a complete body."""

    def retract(self) -> None:
        """Forgets what :meth:`start` took: nothing reached the client, another answer will."""

    def answer(self, failure: Failure) -> None:
        """Answers the client for a marimo that gave no answer (unless already answered)."""

    def cut(self) -> None:
        """Ends the client's connection after a body cut short."""
