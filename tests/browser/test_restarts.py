"""An open editor tab outlives marimo: after an API restart, a crash of marimo (SIGKILL), a
marimo that stops answering (SIGSTOP) and a restart of the orchestrator itself, the same tab
(never reloaded) is told so by a notice over no cell, runs a cell on a new kernel, and the
notice then goes by itself."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from tests.browser.ui import (
    EDITOR_PATH,
    OUTPUT_TIMEOUT,
    Shots,
    cells_covered,
    expect,
    expect_editor,
    outputs,
    run_all,
    sign_in,
    write_notebook,
)
from tests.support.orchestrator import Orchestrator, OrchestratorFactory, stopped
from tests.test_hang import QUICK_ARGS
from tests.test_restart import post_restart

# The kernel's process id, computed: a new kernel shows another number.
KERNEL_CELL = """
import os
"kernel " + str(os.getpid())
"""
KERNEL = re.compile(r"kernel (\d+)")
BROKEN = re.compile("Failed to instantiate|kernel not found|Something went wrong", re.I)


def _first_run(page: Any, run: Orchestrator) -> int:
    """Opens the notebook, runs it, and marks the tab so a reload would show."""
    sign_in(page, run, EDITOR_PATH)
    expect_editor(page, run)
    run_all(page)
    output = outputs(page).filter(has_text=KERNEL).first
    expect(output).to_be_visible(timeout=OUTPUT_TIMEOUT)
    found = KERNEL.search(output.inner_text())
    assert found, output.inner_text()
    page.evaluate("window.__sameTab = 'yes'")
    return int(found.group(1))


def _runs_on_a_new_kernel(page: Any, before: int, within: float = 60.0) -> float:
    """The same tab, not reloaded, runs the cell on a kernel other than ``before``; returns
    the seconds it took from the call (the tab reconnects by itself meanwhile, so a click may
    at first go nowhere: it is repeated)."""
    started = time.monotonic()
    new_kernel = outputs(page).filter(has_text=re.compile(rf"kernel (?!{before}\b)\d+"))
    while True:
        with contextlib.suppress(AssertionError):
            run_all(page)
            expect(new_kernel.first).to_be_visible(timeout=3_000)
            break
        assert time.monotonic() - started < within, "the cell never ran on a new kernel"
    expect(page.get_by_text(BROKEN)).to_have_count(0)
    assert page.evaluate("window.__sameTab") == "yes", "the tab was reloaded"
    return time.monotonic() - started


def _told_the_kernel_restarted(page: Any) -> Any:
    """The Environment notices say so (the variables are gone), over no cell of the notebook;
    returns the notice."""
    notice = (
        page.get_by_role("region", name="Environment notices")
        .get_by_role("status")
        .filter(has_text=re.compile(r"marimo restarted in \d+\.\d s: .*variables are gone"))
    )
    expect(notice).to_be_visible(timeout=OUTPUT_TIMEOUT)
    assert cells_covered(page) == []
    return notice


def _runs_on_a_new_kernel_and_the_notice_goes(page: Any, before: int) -> float:
    """Told first, the tab runs a cell on the new kernel; then the notice no longer holds and
    goes by itself. Returns the seconds from the call until the cell ran."""
    started = time.monotonic()
    notice = _told_the_kernel_restarted(page)
    # Reconnecting to the new kernel is not running a cell: the notice stays meanwhile.
    expect(page.locator("#App")).to_have_attribute(
        "data-connection-state", "OPEN", timeout=OUTPUT_TIMEOUT
    )
    expect(notice).to_be_visible()
    _runs_on_a_new_kernel(page, before)
    seconds = time.monotonic() - started
    expect(notice).to_have_count(0)
    return seconds


def test_the_same_tab_runs_a_cell_on_a_new_kernel_after_an_api_restart(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    run = orchestrator(write_notebook(tmp_path / "notebooks", KERNEL_CELL))
    before = _first_run(page, run)
    pid = run.status()["marimo"]["pid"]

    code, body = post_restart(run, {"scope": "marimo"})
    assert code == 202, body
    run.wait_for(lambda s: s["ready"] and s["marimo"]["pid"] not in (None, pid), 60, "restart")
    seconds = _runs_on_a_new_kernel_and_the_notice_goes(page, before)
    shots("after-api-restart")
    print(f"api restart: a cell ran on the new kernel {seconds:.1f} s after marimo was ready")


def test_the_same_tab_runs_a_cell_on_a_new_kernel_after_marimo_is_killed(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    run = orchestrator(write_notebook(tmp_path / "notebooks", KERNEL_CELL))
    before = _first_run(page, run)
    pid = run.status()["marimo"]["pid"]

    os.kill(pid, signal.SIGKILL)  # a crash: nobody asked for it
    run.wait_for(lambda s: s["ready"] and s["marimo"]["pid"] not in (None, pid), 90, "respawn")
    seconds = _runs_on_a_new_kernel_and_the_notice_goes(page, before)
    shots("after-sigkill")
    print(f"SIGKILL: a cell ran on the new kernel {seconds:.1f} s after marimo was ready")


def test_the_same_tab_runs_a_cell_on_a_new_kernel_after_marimo_hangs(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    run = orchestrator(write_notebook(tmp_path / "notebooks", KERNEL_CELL), None, *QUICK_ARGS)
    before = _first_run(page, run)
    pid = run.status()["marimo"]["pid"]

    with stopped(pid):  # alive but answering nothing, as a deadlocked marimo
        # The tab is told what is happening while marimo is replaced.
        expect(page.get_by_role("region", name="Environment notices")).to_contain_text(
            "marimo stopped answering; restarting it", timeout=30_000
        )
        shots("hung")
        run.wait_for(lambda s: s["ready"] and s["marimo"]["pid"] not in (None, pid), 90, "respawn")
    seconds = _runs_on_a_new_kernel_and_the_notice_goes(page, before)
    assert run.status()["marimo"]["last_exit"] == "marimo stopped answering; restarting it"
    shots("after-hang")
    print(f"hang: a cell ran on the new kernel {seconds:.1f} s after marimo was ready")


def test_the_same_tab_runs_a_cell_on_a_new_kernel_after_an_orchestrator_restart(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    notebooks = write_notebook(tmp_path / "notebooks", KERNEL_CELL)
    state = tmp_path / "state"
    first = orchestrator(notebooks, state)
    before = _first_run(page, first)
    assert first.terminate() == 0

    # The same address, the same state (and so the same sign-in), a new process.
    second = orchestrator(notebooks, state, "--token", first.token, port=first.port)
    second.token = first.token
    second.wait_ready()
    seconds = _runs_on_a_new_kernel_and_the_notice_goes(page, before)
    shots("after-orchestrator-restart")
    print(f"orchestrator restart: a cell ran on the new kernel {seconds:.1f} s after it was ready")


def test_an_edit_not_yet_saved_is_still_in_the_tab_after_a_restart(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    notebooks = write_notebook(tmp_path / "notebooks", KERNEL_CELL)
    run = orchestrator(notebooks)
    before = _first_run(page, run)
    pid = run.status()["marimo"]["pid"]
    editor = page.get_by_test_id("cell-editor").first.locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.type("\n# typed just before the restart")
    code, body = post_restart(run, {"scope": "marimo"})  # at once: autosave may not have run
    assert code == 202, body
    run.wait_for(lambda s: s["ready"] and s["marimo"]["pid"] not in (None, pid), 60, "restart")
    _runs_on_a_new_kernel(page, before)
    expect(page.get_by_test_id("cell-editor").first).to_contain_text(
        "# typed just before the restart"
    )
    shots("edit-kept")
