"""Signing in with the form, as someone who was given the access token (token mode)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.browser.ui import EDITOR_PATH, Shots, expect, write_notebook
from tests.support.orchestrator import OrchestratorFactory


def test_the_token_form_refuses_a_wrong_token_and_admits_the_right_one(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    run = orchestrator(write_notebook(tmp_path / "notebooks", "1 + 1"))
    run.wait_listening(timeout=30)
    page.goto(run.base + EDITOR_PATH)
    expect(page).to_have_url(re.compile(re.escape(run.base) + "/-/login"))

    page.get_by_label("Access token").fill("not-the-token-at-all")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text(
        "That token was not accepted. Check it and try again."
    )
    shots("refused")

    page.get_by_label("Access token").fill(run.token)
    page.get_by_role("button", name="Sign in").click()
    # Back at the asked-for URL: the loading page, or marimo if it is already up.
    expect(page).to_have_url(run.base + EDITOR_PATH)
    expect(page.locator("#steps").or_(page.get_by_test_id("cell-editor").first)).to_be_visible()


def test_the_token_field_is_focused_and_the_pasted_login_url_signs_in(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    """What the terminal prints ("Sign in with: http://localhost:PORT/-/login?token=…"), pasted
    whole into the field, with another parameter and stray spaces around it."""
    run = orchestrator(write_notebook(tmp_path / "notebooks", "1 + 1"))
    run.wait_listening(timeout=30)
    page.goto(run.base + EDITOR_PATH)
    expect(page).to_have_url(re.compile(re.escape(run.base) + "/-/login"))
    field = page.get_by_label("Access token")
    expect(field).to_be_focused()

    printed = f"http://localhost:{run.port}/-/login?token={run.token}"
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=run.base)
    page.evaluate("text => navigator.clipboard.writeText(text)", f"  {printed}&next=%2F  ")
    page.keyboard.press("Control+V")  # into the focused field
    expect(field).to_have_value(f"  {printed}&next=%2F  ")
    shots("pasted")
    page.keyboard.press("Enter")
    expect(page).to_have_url(run.base + EDITOR_PATH)
    expect(page.locator("#steps").or_(page.get_by_test_id("cell-editor").first)).to_be_visible()
