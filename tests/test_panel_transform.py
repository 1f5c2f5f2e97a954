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


def test_the_panels_files_are_named_by_their_content() -> None:
    result = panel_transform("edit")(b"<head></head>")
    named = re.findall(rb'(?:href|src)="/-/static/(panel\.(?:css|js))\?v=([0-9a-f]{16})"', result)
    assert sorted(name for name, _ in named) == [b"panel.css", b"panel.js"]
    for name, version in named:
        content = (STATIC_DIR / name.decode()).read_bytes()
        assert version == hashlib.sha256(content).hexdigest()[:16].encode()
