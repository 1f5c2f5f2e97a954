"""Secrets out of text before it is logged, published or shown."""

from __future__ import annotations

import re

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+(?::[^/\s@]*)?@")
_TOKEN_PARAMS = re.compile(r"(?P<key>(?:access_token|token|password)=)[^&\s\"']+", re.IGNORECASE)
_BEARER = re.compile(r"(?P<key>Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Replace URL credentials, token query parameters, bearer values and known secrets."""
    text = _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)
    text = _TOKEN_PARAMS.sub(r"\g<key>***", text)
    text = _BEARER.sub(r"\g<key>***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
