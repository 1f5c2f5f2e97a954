"""The signing secret: one object that holds the secret in force, which the session cookie
codec (orchestrator/trust/session_cookie.py) asks for at each use.

The secret is read from the state directory at start when it is there (mode 0600, the
orchestrator's own file), else made for this run; it is replaced while the process runs in two
cases only: adopted from, or persisted to, the state directory once it is known
(orchestrator/trust/secret_adoption.py), and rotated when a logout cannot be recorded
(orchestrator/trust/secret_rotation.py).

Invariants: the secret is never logged nor shown (its ``repr`` says nothing of it); it is always
at least 32 bytes; a file another user owns is never taken for it (that user could forge
sessions with it); loading only reads (nothing is written or fsynced before the port answers).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

MIN_LENGTH = 32
"""Bytes a kept secret must have to be used (a shorter file is not one of ours)."""


class SigningSecret:
    """The secret session cookies are signed with (and Quix tokens sealed under)."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if len(value) < MIN_LENGTH:
            raise ValueError(f"a signing secret needs at least {MIN_LENGTH} bytes")
        self._value = value

    def __repr__(self) -> str:
        return "SigningSecret(<hidden>)"

    @classmethod
    def load(cls, path: Path | None) -> SigningSecret:
        """The secret kept in ``path``, or a new one for now (persisted later, see the
        module)."""
        if path is not None:
            try:
                with open(path, "rb") as handle:
                    # Only our own file: one another user put there would be theirs to forge with.
                    if os.fstat(handle.fileno()).st_uid == os.getuid():
                        data = handle.read()
                        if len(data) >= MIN_LENGTH:
                            return cls(data)
            except OSError:
                pass
        return cls.new()

    @classmethod
    def new(cls) -> SigningSecret:
        return cls(secrets.token_bytes(48))

    def current(self) -> bytes:
        """The secret in force now."""
        return self._value

    def replace(self, value: bytes) -> None:
        """Sign with ``value`` from now on: every cookie signed with the old one is refused."""
        if len(value) < MIN_LENGTH:
            raise ValueError(f"a signing secret needs at least {MIN_LENGTH} bytes")
        self._value = value
