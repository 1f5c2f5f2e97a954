"""marimo's editor through the proxy: cells run over the kernel WebSocket, the Install button
installs into the persistent venv, and what it installed is still there after a restart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.browser.ui import (
    EDITOR_PATH,
    OUTPUT_TIMEOUT,
    Shots,
    expect,
    expect_editor,
    outputs,
    run_all,
    sign_in,
    write_notebook,
)
from tests.support.index import LocalIndex
from tests.support.orchestrator import OrchestratorFactory

# The outputs are computed, so the cell's source never contains them.
ALPHA_CELL = """
import orch_alpha
print("printed by " + orch_alpha.NAME)
"returned by " + orch_alpha.NAME
"""
COWSAY_CELL = """
import orch_cowsay
orch_cowsay.say("m" + "oo")
"""
COW_OUTPUT = "the cow says moo"


def test_a_cell_runs_and_shows_its_output(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    notebooks = write_notebook(tmp_path / "notebooks", ALPHA_CELL, requirements="orch-alpha\n")
    run = orchestrator(notebooks)
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    sign_in(page, run, EDITOR_PATH)
    expect_editor(page, run)
    expect(outputs(page).filter(has_text="by orch-alpha")).to_have_count(0)

    run_all(page)  # the request goes over marimo's kernel WebSocket, through the proxy
    expect(outputs(page).filter(has_text="'returned by orch-alpha'")).to_be_visible(
        timeout=OUTPUT_TIMEOUT
    )
    expect(page.get_by_test_id("console-output-area")).to_contain_text("printed by orch-alpha")
    kernel = f"ws://127.0.0.1:{run.port}/ws?"
    assert any(url.startswith(kernel) for url in sockets), sockets  # the proxy, not marimo


def _missing_package_banner(page: Any) -> Any:
    return page.locator("div", has=page.get_by_text("Missing packages", exact=True)).filter(
        has=page.get_by_role("button", name="Install")
    )


def test_the_install_button_installs_a_missing_package_without_a_restart(
    page: Any,
    shots: Shots,
    orchestrator: OrchestratorFactory,
    index: LocalIndex,
    tmp_path: Path,
) -> None:
    notebooks = write_notebook(tmp_path / "notebooks", COWSAY_CELL)  # no requirements.txt
    run = orchestrator(notebooks)
    sign_in(page, run, EDITOR_PATH)
    expect_editor(page, run)
    pid = run.status()["marimo"]["pid"]

    run_all(page)
    missing = page.get_by_text("No module named 'orch_cowsay'")
    expect(missing.first).to_be_visible(timeout=OUTPUT_TIMEOUT)
    banner = _missing_package_banner(page).last
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("orch-cowsay")
    # marimo knows it runs in a venv: it offers to install, not to "set up a virtual environment".
    expect(page.get_by_text(re.compile("set up a virtual environment", re.I))).to_have_count(0)
    shots("install-offered")

    requested_before = len(index.control.requests)
    banner.get_by_role("button", name="Install").click()
    # marimo installs from the local index and re-runs the cell: no restart of anything.
    expect(outputs(page).filter(has_text=COW_OUTPUT)).to_be_visible(timeout=OUTPUT_TIMEOUT)
    expect(missing).to_have_count(0)
    assert any("orch-cowsay" in path for path in index.control.requests[requested_before:])
    status = run.status()
    assert status["marimo"]["pid"] == pid and status["marimo"]["restarts"] == 0


def test_a_package_installed_from_marimo_survives_a_restart_without_reinstalling(
    page: Any,
    shots: Shots,
    orchestrator: OrchestratorFactory,
    index: LocalIndex,
    tmp_path: Path,
) -> None:
    notebooks = write_notebook(
        tmp_path / "notebooks", ALPHA_CELL, COWSAY_CELL, requirements="orch-alpha\n"
    )
    state = tmp_path / "state"
    # The ledger's path (packages installed but not recorded in a header). With recording on,
    # opening the notebook would make marimo pin its imports in the header with
    # `uv add --script`, which asks the index (README, "Recording runtime installs").
    first = orchestrator(notebooks, state, "--no-record-installs")
    first.wait_ready()
    # The Install button's own call (the click itself is the previous test).
    assert first.marimo_install("orch-cowsay")["success"] is True
    assert first.terminate() == 0

    requested_before = len(index.control.requests)
    second = orchestrator(notebooks, state, "--no-record-installs")
    sign_in(page, second, EDITOR_PATH)
    expect_editor(page, second)
    run_all(page)
    expect(outputs(page).filter(has_text=COW_OUTPUT)).to_be_visible(timeout=OUTPUT_TIMEOUT)
    expect(outputs(page).filter(has_text="'returned by orch-alpha'")).to_be_visible()
    expect(page.get_by_text("Missing packages", exact=True)).to_have_count(0)

    status = second.status()
    assert second.step(status, "requirements")["status"] == "skipped", status
    assert index.control.requests[requested_before:] == [], "no installer asked the index"
