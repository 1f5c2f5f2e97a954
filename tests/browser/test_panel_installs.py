"""What an install changed, as the Environment panel says it, with uv and with pip alike: a
package added to requirements.txt is named with its version, a version that changed is said as
"1.0 → 2.0" with the restart that brings it in, and a package installed with marimo's Install
button is mentioned. The panel reads the server's account (``/-/status``: the requirements step's
``changes``, ``user_packages``), never the installer's lines.

Quix's layout (the state folder inside the notebook folder), real marimo, real uv and pip, wheels
from the local index.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_editor import COW_OUTPUT, COWSAY_CELL, _missing_package_banner
from tests.browser.test_panel import _open_panel
from tests.browser.test_restarts import KERNEL_CELL
from tests.browser.ui import (
    EDITOR_PATH,
    OUTPUT_TIMEOUT,
    START_TIMEOUT,
    Shots,
    expect,
    expect_editor,
    outputs,
    run_all,
    sign_in,
    write_notebook,
)
from tests.support.orchestrator import Orchestrator, OrchestratorFactory
from tests.support.wheels import build_wheel

INSTALLERS = ["uv", "pip"]


def _installed_after(run: Orchestrator, since: float, what: str) -> dict[str, Any]:
    """The requirements step once a run that started after ``since`` (wall clock) is done."""
    status = run.wait_for(
        lambda s: (
            run.step(s, "requirements")["status"] == "done"
            and (run.step(s, "requirements")["started_at"] or 0) > since
        ),
        timeout=120,
        what=what,
    )
    return run.step(status, "requirements")


@pytest.mark.parametrize("installer", INSTALLERS)
def test_a_package_added_to_requirements_is_named_with_its_version(
    page: Any,
    shots: Shots,
    orchestrator: OrchestratorFactory,
    wheelhouse: Path,
    tmp_path: Path,
    installer: str,
) -> None:
    for name, version in (("orch-beta", "1.0"), ("orch-beta", "2.0"), ("orch-gamma", "3.0")):
        build_wheel(wheelhouse, name, version)
    notebooks = write_notebook(tmp_path / "app", KERNEL_CELL, requirements="orch-beta==1.0\n")
    run = orchestrator(notebooks, None, "--installer", installer)
    sign_in(page, run, EDITOR_PATH)
    expect_editor(page, run)
    panel = _open_panel(page)
    last_install = panel.locator("[data-packages=last-install]")
    notices = page.get_by_role("region", name="Environment notices")

    # A package added to the file while the editor is open: installed in the background.
    since = time.time()
    (notebooks / "requirements.txt").write_text("orch-beta==1.0\norch-gamma==3.0\n")
    step = _installed_after(run, since, "orch-gamma installed")
    assert {"name": "orch-gamma", "version": "3.0", "for": ["requirements.txt"]} in step["changes"][
        "added"
    ], step
    expect(last_install).to_contain_text(
        "orch-gamma 3.0 installed for requirements.txt", timeout=START_TIMEOUT
    )
    from_file = panel.locator("[data-section=packages] [data-group=declared]").filter(
        has=page.get_by_role("heading", name="From requirements.txt")
    )
    expect(from_file.locator("li[data-package=orch-gamma]")).to_have_text("orch-gamma 3.0")
    expect(from_file.locator("li[data-package=orch-beta]")).to_have_text("orch-beta 1.0")
    expect(
        notices.get_by_role("status").filter(has_text="orch-gamma 3.0 installed")
    ).to_contain_text("run the cells that import them again")
    shots("added")

    # A version that changed: said as such, with the restart that brings it in.
    since = time.time()
    (notebooks / "requirements.txt").write_text("orch-beta==2.0\norch-gamma==3.0\n")
    step = _installed_after(run, since, "orch-beta upgraded")
    assert step["changes"]["changed"] == [
        {"name": "orch-beta", "from": "1.0", "to": "2.0", "for": ["requirements.txt"]}
    ], step
    expect(last_install).to_contain_text("Changed orch-beta 1.0 → 2.0", timeout=START_TIMEOUT)
    expect(from_file.locator("li[data-package=orch-beta]")).to_have_text("orch-beta 2.0")
    changed = notices.get_by_role("status").filter(has_text="Changed orch-beta 1.0 → 2.0")
    expect(changed).to_contain_text("keeps the versions it already imported")
    expect(changed.get_by_role("button", name="Restart marimo")).to_be_visible()
    shots("changed")


@pytest.mark.parametrize("installer", INSTALLERS)
def test_a_package_installed_with_the_install_button_shows_in_the_panel(
    page: Any,
    shots: Shots,
    orchestrator: OrchestratorFactory,
    tmp_path: Path,
    installer: str,
) -> None:
    """pip: the ledger keeps it ("installed from the editor; kept across restarts"); uv: marimo
    records it in the notebook's header, so the notebook declares it."""
    notebooks = write_notebook(tmp_path / "app", COWSAY_CELL)  # no requirements.txt
    run = orchestrator(notebooks, None, "--installer", installer)
    sign_in(page, run, EDITOR_PATH)
    expect_editor(page, run)
    run_all(page)
    banner = _missing_package_banner(page).last
    expect(banner).to_be_visible(timeout=OUTPUT_TIMEOUT)
    banner.get_by_role("button", name="Install").click()
    expect(outputs(page).filter(has_text=COW_OUTPUT)).to_be_visible(timeout=OUTPUT_TIMEOUT)

    panel = _open_panel(page)
    notices = page.get_by_role("region", name="Environment notices")
    # The Packages section: under "Added by you", whichever installer (pip: kept in the
    # deployment's storage; uv: marimo recorded it in the notebook's header).
    added = panel.locator("[data-section=packages] [data-group=added-by-you]")
    expect(added.get_by_role("heading")).to_have_text("Added by you", timeout=START_TIMEOUT)
    cowsay = added.locator("li[data-package=orch-cowsay]")
    expect(cowsay).to_contain_text(
        "orch-cowsay 1.0 · installed from the editor; kept across restarts"
        if installer == "pip"
        else "orch-cowsay 1.0 · in notebook.py's header",
        timeout=START_TIMEOUT,
    )
    expect(panel.locator("[data-section=user-packages]")).to_have_count(0)  # one list, not two
    if installer == "pip":
        expect(notices).to_contain_text(
            "orch-cowsay 1.0 installed from the editor; kept across restarts."
        )
        status = run.status()
        assert {"name": "orch-cowsay", "version": "1.0"} in status["user_packages"], status
    else:
        expect(panel.locator("[data-packages=last-install]")).to_contain_text(
            "orch-cowsay 1.0 added to notebook.py's dependencies", timeout=START_TIMEOUT
        )
        expect(notices).to_contain_text(
            re.compile(r"orch-cowsay 1\.0 (added to notebook\.py's dependencies|installed from)")
        )
    shots("install-button")
