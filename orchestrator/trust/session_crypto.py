"""Keys derived from the session secret: one seals credentials kept in a session cookie
(AES-GCM), one binds a session to the credential it was made from (HMAC).

Invariants: a sealed credential is opened only with a key derived from the very secret that
sealed it; a binding reveals nothing about the credential; ``cryptography`` is imported on first
use (never on the start-up path).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from functools import lru_cache

_SEAL_INFO = b"marimo-orchestrator session credential v1"
_BIND_INFO = b"marimo-orchestrator session binding v1"


@lru_cache(maxsize=4)
def _key(secret: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _bytes(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def seal(secret: str | bytes, credential: str) -> str:
    """The credential encrypted and authenticated, as URL-safe text."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    sealed = AESGCM(_key(_bytes(secret), _SEAL_INFO)).encrypt(nonce, credential.encode(), None)
    return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")


def unseal(secret: str | bytes, sealed: str) -> str | None:
    """The credential, or None when ``sealed`` was not made with this secret (or is damaged)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
        if len(raw) < 12 + 16:
            return None
        plain = AESGCM(_key(_bytes(secret), _SEAL_INFO)).decrypt(raw[:12], raw[12:], None)
        return plain.decode()
    except (InvalidTag, ValueError):
        return None


def binding(secret: str | bytes, credential: str) -> str:
    """A short keyed digest of the credential: equal exactly when the credential is."""
    digest = hmac.new(
        _key(_bytes(secret), _BIND_INFO), credential.encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode("ascii")
