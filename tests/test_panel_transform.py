"""The Environment panel's tags in marimo's documents: where they go, and nothing else changes."""

from __future__ import annotations

from orchestrator.web.panel import panel_transform

TAGS_START = b'<link rel="stylesheet" href="/-/static/panel.css">'


def test_the_tags_go_before_the_end_of_head_and_name_the_mode() -> None:
    page = b"<html><head><title>t</title></HEAD ><body>x</body></html>"
    result = panel_transform("run")(page)
    assert result.startswith(b"<html><head><title>t</title>" + TAGS_START)
    assert b'data-mode="run"' in result and b"<script" in result
    assert result.replace(result[28 : result.index(b"</HEAD")], b"") == page  # nothing else


def test_a_document_without_head_gets_them_in_front() -> None:
    result = panel_transform("edit")(b"<p>hi</p>")
    assert result.startswith(TAGS_START) and result.endswith(b"<p>hi</p>")
