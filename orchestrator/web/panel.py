"""The Environment panel's tags, added to marimo's HTML documents by the proxy.

The panel itself is static files (``static/panel.js``, ``static/panel.css``) served under
``/-/static``; this module only says where they go into marimo's page. Nothing inline: marimo's
pages keep working under a Content-Security-Policy that allows only same-origin scripts.

Invariants: the document is otherwise unchanged; a document without ``</head>`` gets the tags
in front (a browser still runs them); the tags name only our static files and the marimo mode
(run mode: the panel shows status, no actions). The transform's key is a digest of the tags
and :data:`REWRITE_VERSION`: whatever changes the result changes it.
"""

from __future__ import annotations

import hashlib
import re

from jobs.settings import MarimoMode
from orchestrator.web.handlers import STATIC_DIR
from proxy.html import HtmlTransform

_HEAD_END = re.compile(rb"</head\s*>", re.IGNORECASE)

REWRITE_VERSION = b"1"
"""Changed whenever the way the tags are placed changes: part of the transform's key, so the
documents' validators change with it (:mod:`proxy.html`)."""


def versioned(name: str) -> bytes:
    """The URL of one of the panel's static files, named by its content (``?v=``): Tornado's
    static handler lets the browser keep such a URL for good, so a repeat visit does not ask
    again for the panel's stylesheet (which blocks the page's first paint), and a changed file
    is a new URL."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:16]
    return b"/-/static/%s?v=%s" % (name.encode("ascii"), digest.encode("ascii"))


def panel_transform(mode: MarimoMode) -> HtmlTransform:
    tags = b'<link rel="stylesheet" href="%s"><script src="%s" defer data-mode="%s"></script>' % (
        versioned("panel.css"),
        versioned("panel.js"),
        mode.encode("ascii"),
    )

    def transform(document: bytes) -> bytes:
        found = _HEAD_END.search(document)
        if found is None:
            return tags + document
        return document[: found.start()] + tags + document[found.start() :]

    key = hashlib.sha256(REWRITE_VERSION + b"\0" + tags).hexdigest()[:16]
    return HtmlTransform(transform, f"panel-{key}")
