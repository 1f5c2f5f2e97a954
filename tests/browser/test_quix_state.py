"""Quix with state off: the loading page says, in words, what a restart loses and what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.browser.ui import Shots, expect, sign_in, write_notebook
from tests.support.index import LocalIndex
from tests.support.orchestrator import OrchestratorFactory

CELL = """
import orch_alpha
orch_alpha.NAME
"""


def test_the_loading_page_warns_when_quix_state_is_off(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, index: LocalIndex, tmp_path: Path
) -> None:
    notebooks = write_notebook(tmp_path / "app", CELL, requirements="orch-alpha\n")
    release = index.control.hold("orch-alpha")  # keeps the loading page up
    # Inside Quix (the fixture's Quix__* variables) but with state off in the deployment:
    # Quix sets no Quix__Deployment__State__* variables; the image's app/state still exists.
    run = orchestrator(
        notebooks,
        None,
        env={"Quix__Deployment__State__Path": "", "Quix__Deployment__State__Enabled": ""},
    )
    sign_in(page, run, "/")
    warning = page.locator("#state-warning")
    expect(warning).to_be_visible(timeout=60_000)
    expect(warning).to_contain_text("installed packages")
    expect(warning).to_contain_text("Enable State in the deployment's settings")
    shots("state-off-warning")
    release.set()
