"""The Environment panel's tags in marimo's documents: where they go, and nothing else changes."""

from __future__ import annotations

import hashlib
import re

from orchestrator.web.handlers import STATIC_DIR
from orchestrator.web.panel import panel_transform, versioned

TAGS_START = b'<link rel="stylesheet" href="%s">' % versioned("panel.css")


def test_the_tags_go_before_the_end_of_head_and_name_the_mode() -> None:
    page = b"<html><head><title>t</title></HEAD ><body>x</body></html>"
    result = panel_transform("run")(page)
    assert result.startswith(b"<html><head><title>t</title>" + TAGS_START)
    assert b'data-mode="run"' in result and b"<script" in result
    assert result.replace(result[28 : result.index(b"</HEAD")], b"") == page  # nothing else


def test_a_document_without_head_gets_them_in_front() -> None:
    result = panel_transform("edit")(b"<p>hi</p>")
    assert result.startswith(TAGS_START) and result.endswith(b"<p>hi</p>")


def test_the_panels_files_are_named_by_their_content_its_words_before_its_script() -> None:
    result = panel_transform("edit")(b"<head></head>")
    named = re.findall(
        rb'(?:href|src)="/-/static/(panel\.(?:css|js)|words\.js)\?v=([0-9a-f]{16})"', result
    )
    # Deferred scripts run in document order: panel.js finds words.js's words already there.
    assert [name for name, _ in named] == [b"panel.css", b"words.js", b"panel.js"]
    for name, version in named:
        content = (STATIC_DIR / name.decode()).read_bytes()
        assert version == hashlib.sha256(content).hexdigest()[:16].encode()


def test_marimos_page_says_opening_your_notebook_from_where_its_body_begins() -> None:
    """marimo's own index.html: its head holds custom elements (``<marimo-filename>``), where an
    HTML parser already opens the body; the words go right there, first thing in the body, and
    the rest of the document is as it was."""
    from html.parser import HTMLParser
    from importlib.resources import files

    marimo_page = (files("marimo") / "_static" / "index.html").read_bytes()
    result = panel_transform("edit")(marimo_page)
    words = result.index(b'<div id="mo-orch-opening"')
    assert words < result.index(b"<marimo-filename")
    assert result.index(b"opening.css") < words, "styled from the first paint"
    assert result.count(b'id="mo-orch-opening"') == 1

    tags: list[str] = []

    class Order(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append(tag)

    Order().feed(result.decode())
    assert tags.index("div") > tags.index("meta"), "the charset is still first"
    # A page without marimo's root (an error page, another document) is left without the words.
    assert b"mo-orch-opening" not in panel_transform("edit")(b"<head></head><body>x</body>")
    plain = panel_transform("edit")(b"<head></head><body class='a'><div id=\"root\"></div></body>")
    assert plain.index(b"<body class='a'>") + len(b"<body class='a'>") == plain.index(
        b'<link rel="stylesheet" href="/-/static/opening.css'
    )
