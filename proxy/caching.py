"""How long a browser may keep marimo's answers: its content-hashed assets for good, nothing else.

marimo's build names every file under ``/assets/`` after a hash of its content
(``index-s-M1OXjs.js``, ``Lora-VariableFont_wght-CZceb_kH.woff2``), and only its HTML names
them. So a given asset URL always means the same bytes, whichever marimo version serves it.

Invariants:

* A ``200`` or ``304`` answer to ``GET`` or ``HEAD`` for a path of the form
  ``/assets/<name>-<8-character hash>.<ext>`` (:data:`HASHED_ASSET`) whose type is not HTML is
  immutable: ``Cache-Control: private, max-age=31536000, immutable``, whatever marimo said, and
  ``Cookie`` leaves its ``Vary`` (the bytes do not depend on who asks). ``private``: no shared
  cache stores it (every request needs a session, assets included), only the browser that was
  admitted.
* Every other answer keeps the ``Cache-Control`` marimo gave it (its HTML: ``private, no-cache``),
  and one marimo gave none gets ``private, no-cache``: API answers, unhashed files and errors are
  never reused without asking, and never by a shared cache. A marimo upgrade (new hashes named by
  a new HTML) or restart is therefore seen at the next page load.
* Answers that never reach marimo (the loading page, the guard's) are not touched here: they
  carry ``no-store`` already.
"""

from __future__ import annotations

import re

from tornado.httputil import HTTPHeaders, HTTPServerRequest

from proxy.headers import tokens

IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"

HASHED_ASSET = re.compile(r"/assets/[^/]+-[A-Za-z0-9_-]{8}\.[A-Za-z0-9]+")
"""marimo's (Vite's) output names: the hash is 8 URL-safe base64 characters before the extension."""


def immutable(request: HTTPServerRequest, status: int, headers: HTTPHeaders) -> bool:
    """Whether this answer is one of marimo's content-hashed assets."""
    if request.method not in ("GET", "HEAD") or status not in (200, 304):
        return False
    if HASHED_ASSET.fullmatch(request.path) is None:
        return False
    return not headers.get("Content-Type", "").lower().startswith("text/html")


def apply(request: HTTPServerRequest, status: int, headers: HTTPHeaders) -> None:
    """Sets the caching headers of marimo's answer (about to reach the client) in place."""
    if immutable(request, status, headers):
        headers["Cache-Control"] = IMMUTABLE
        varies = tokens(headers, "Vary")
        if "cookie" in varies:
            del headers["Vary"]
            kept = [v for v in varies if v != "cookie"]
            if kept:
                headers["Vary"] = ", ".join(kept)
    elif "Cache-Control" not in headers:
        headers["Cache-Control"] = REVALIDATE
