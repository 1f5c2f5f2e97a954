"""The Environment panel's tags, added to marimo's HTML documents by the proxy.

The panel itself is static files (``static/panel.js``, ``static/panel.css``) served under
``/-/static``; this module only says where they go into marimo's page. Nothing inline: marimo's
pages keep working under a Content-Security-Policy that allows only same-origin scripts.

Invariants: the document is otherwise unchanged; a document without ``</head>`` gets the tags
in front (a browser still runs them); the tags name only our static files and the marimo mode
(run mode: the panel shows status, no actions). marimo's app page (the one with its empty
``<div id="root">``) also gets :data:`OPENING` first thing in its body: "Opening your
notebook…" from the first paint until marimo's editor has rendered (``static/opening.js``
removes it), instead of a blank page while marimo's scripts load. The transform's key is a
digest of the tags and :data:`REWRITE_VERSION`: whatever changes the result changes it.
"""

from __future__ import annotations

import hashlib
import re

from jobs.settings import MarimoMode
from orchestrator.web.handlers import STATIC_DIR
from proxy.html import HtmlTransform

_HEAD_END = re.compile(rb"</head\s*>", re.IGNORECASE)
_BODY_START = re.compile(rb"<(?:body\b|[a-z][a-z0-9]*-[a-z0-9-]*[\s>])[^>]*>?", re.IGNORECASE)
"""Where the document's body begins: its ``<body>`` tag, or before it the first custom element
(marimo's ``<marimo-filename>`` in its head): HTML parsers open the body there (the head ends at
the first element that cannot be in it)."""
_SKIPPED = re.compile(rb"<script\b.*?</script\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
"""Text that holds no tags: scripts and comments."""
_MARIMO_ROOT = re.compile(rb"""<div\s+id=["']root["']\s*>""", re.IGNORECASE)

OPENING = (
    b'<div id="mo-orch-opening" data-orchestrator="opening" role="status" aria-busy="true">'
    b'<div class="mo-orch-opening-card"><h1>Opening your notebook\xe2\x80\xa6</h1>'
    b'<p>marimo\'s editor is loading. <span data-opening="elapsed"></span></p>'
    b'<div class="mo-orch-opening-bar"></div></div></div>'
)
"""What marimo's page shows until its editor has rendered (styles: ``static/opening.css``)."""

REWRITE_VERSION = b"2"
"""Changed whenever the way the tags are placed changes: part of the transform's key, so the
documents' validators change with it (:mod:`proxy.html`)."""


def versioned(name: str) -> bytes:
    """The URL of one of the panel's static files, named by its content (``?v=``): Tornado's
    static handler lets the browser keep such a URL for good, so a repeat visit does not ask
    again for the panel's stylesheet (which blocks the page's first paint), and a changed file
    is a new URL."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:16]
    return b"/-/static/%s?v=%s" % (name.encode("ascii"), digest.encode("ascii"))


def _body_start(document: bytes) -> int | None:
    """The offset where the body begins (see :data:`_BODY_START`), scripts and comments skipped; the
    ``<body>`` tag itself is kept whole: the words go right after it."""
    scripts = [match.span() for match in _SKIPPED.finditer(document)]
    for match in _BODY_START.finditer(document):
        if any(start <= match.start() < end for start, end in scripts):
            continue
        return match.end() if match.group(0)[:5].lower() == b"<body" else match.start()
    return None


def panel_transform(mode: MarimoMode) -> HtmlTransform:
    # words.js first: deferred scripts run in document order, and panel.js reads its words.
    tags = (
        b'<link rel="stylesheet" href="%s"><script src="%s" defer></script>'
        b'<script src="%s" defer data-mode="%s"></script>'
    ) % (versioned("panel.css"), versioned("words.js"), versioned("panel.js"), mode.encode("ascii"))
    # Right before the words, so they are styled from the first paint (an immutable URL: from
    # the browser's cache after the loading page's hand-over fetched it).
    opening = (
        b'<link rel="stylesheet" href="%s"><script src="%s" defer data-mode="%s"></script>%s'
        % (
            versioned("opening.css"),
            versioned("opening.js"),
            mode.encode("ascii"),
            OPENING,
        )
    )

    def transform(document: bytes) -> bytes:
        if (start := _body_start(document)) is not None and _MARIMO_ROOT.search(document, start):
            document = document[:start] + opening + document[start:]
        found = _HEAD_END.search(document)
        if found is None:
            return tags + document
        return document[: found.start()] + tags + document[found.start() :]

    key = hashlib.sha256(REWRITE_VERSION + b"\0" + tags + b"\0" + opening).hexdigest()[:16]
    return HtmlTransform(transform, f"panel-{key}")
