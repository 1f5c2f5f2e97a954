"""The Environment panel's Packages section lists a package a user installed from a terminal
(here with ``uv pip install --python <the venv's python>``) under "Added by you" and offers it
for requirements.txt: one click writes ``name==version`` there, the package moves to "From
requirements.txt" and a notice says so."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.browser.ui import START_TIMEOUT, Shots, expect, expect_editor, sign_in, write_notebook
from tests.support.index import LocalIndex
from tests.support.orchestrator import OrchestratorFactory
from tests.test_user_requirements import listed, terminal_install


def test_the_panel_adds_a_terminal_install_to_requirements_txt(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path, index: LocalIndex
) -> None:
    notebooks = write_notebook(tmp_path / "app", "1 + 1", requirements="orch-alpha\n")
    run = orchestrator(notebooks)
    sign_in(page, run)
    expect_editor(page, run)
    run.wait_ready()
    terminal_install(notebooks / "state", index, "orch-cowsay", tool="uv")
    listed(run, "orch-cowsay")  # the ledger has seen it

    page.get_by_role("button", name=re.compile("^Environment")).click()
    panel = page.get_by_role("region", name="Environment", exact=True)
    section = panel.locator("[data-section=packages]")
    added = section.locator("[data-group=added-by-you]")
    expect(added).to_be_visible(timeout=START_TIMEOUT)
    expect(added.get_by_role("heading")).to_have_text("Added by you")
    expect(added.get_by_role("listitem")).to_have_count(1)
    expect(added.get_by_role("listitem")).to_contain_text(
        "orch-cowsay 1.0 · installed from the editor; kept across restarts"
    )
    declared = section.locator("[data-group=declared][data-file='requirements.txt']")
    expect(declared.get_by_role("heading")).to_have_text("From requirements.txt")
    expect(declared.locator("li[data-package=orch-alpha]")).to_have_text("orch-alpha 1.0")
    shots("offered")

    added.get_by_role("button", name="Add to requirements.txt: orch-cowsay 1.0").click()
    notices = page.get_by_role("region", name="Environment notices")
    expect(notices).to_contain_text("orch-cowsay==1.0 added to requirements.txt")
    # One list: the package moves from "Added by you" to the file that now declares it.
    expect(added).to_have_count(0)
    expect(declared.locator("li[data-package=orch-cowsay]")).to_have_text("orch-cowsay 1.0")
    assert (notebooks / "requirements.txt").read_text(encoding="utf-8") == (
        "orch-alpha\norch-cowsay==1.0\n"
    )
    shots("added")
