"""A visit to marimo's front page opens the notebook, when there is one to open.

marimo answers ``/`` with its file list, even for a folder holding a single notebook. A browser
navigation to exactly ``/`` (no query) is redirected to ``/?file=<name>`` when a notebook is
chosen: ``--open FILE``, else the folder's only marimo notebook, else ``main.py`` (the name
Quix's examples use). A visit that comes from one of marimo's own pages (its home link, the
app's "Back") is left alone: that user asked for the file list. Every other request, ``/`` with
a query included, goes to marimo as before.

Invariants: the choice is made again at each visit (files come and go); the name is always a
file inside the notebook folder; the guard answers first, so a visitor who is not signed in
learns nothing about the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from tornado.httputil import HTTPServerRequest
from tornado.routing import Matcher

from orchestrator.trust.auth import Guard
from orchestrator.web.protected import Protected
from proxy.gate import is_navigation

_SNIFF_BYTES = 64 * 1024


def _is_marimo_notebook(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError:
        return False
    return b"marimo.App(" in head


def notebook_to_open(folder: Path, chosen: str | None) -> str | None:
    """The notebook a visit to ``/`` opens, or None for marimo's file list."""
    if chosen is not None and (folder / chosen).is_file():
        return chosen
    try:
        notebooks = [p for p in sorted(folder.glob("*.py")) if _is_marimo_notebook(p)]
    except OSError:
        return None
    if len(notebooks) == 1:
        return notebooks[0].name
    if (folder / "main.py").is_file():
        return "main.py"
    return None


class FrontPageVisit(Matcher):
    """Matches a browser navigation to exactly ``/`` when there is a notebook to open."""

    def __init__(self, folder: Path, chosen: str | None) -> None:
        self.folder = folder
        self.chosen = chosen

    def match(self, request: HTTPServerRequest) -> dict[str, Any] | None:
        if request.path != "/" or request.query or not is_navigation(request):
            return None
        referer = request.headers.get("Referer")
        if referer:
            parts = urlsplit(referer)
            if parts.netloc == request.host and not parts.path.startswith("/-/"):
                return None  # a link inside marimo (its home link, "Back"): its file list
        name = notebook_to_open(self.folder, self.chosen)
        return None if name is None else {"path_kwargs": {"name": name}}


class OpenNotebookHandler(Protected):
    """Redirects the front page to the notebook :class:`FrontPageVisit` chose (signed in)."""

    def initialize(self, *, guard: Guard) -> None:
        self.guard = guard

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def get(self, *_: str, **kwargs: str) -> None:
        self.redirect("/?file=" + quote(kwargs["name"], safe="/"))

    head = get
