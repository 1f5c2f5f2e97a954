"""The Environment panel inside marimo's pages: what it shows, its actions (confirmed in the
page), the notices around restarts, the failed-requirement banner, one events stream per
browser, status only in run mode, and off with a flag."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from tests.browser.test_restarts import (
    KERNEL_CELL,
    _first_run,
    _runs_on_a_new_kernel,
    _runs_on_a_new_kernel_and_the_notice_goes,
)
from tests.browser.ui import (
    EDITOR_PATH,
    START_TIMEOUT,
    Shots,
    cells_covered,
    expect,
    expect_editor,
    marimo_controls_covered,
    outputs,
    run_all,
    sign_in,
    write_notebook,
)
from tests.support.orchestrator import OrchestratorFactory
from tests.support.wheels import build_wheel


def _open_panel(page: Any) -> Any:
    button = page.get_by_role("button", name=re.compile("^Environment"))
    expect(button).to_be_visible()
    button.click()
    panel = page.get_by_role("region", name="Environment", exact=True)
    expect(panel).to_be_visible()
    return panel


def _confirm(page: Any, panel: Any, action: str) -> None:
    panel.get_by_role("button", name=action, exact=True).click()
    panel.get_by_role("button", name=re.compile("^Yes, " + action.lower())).click()


def test_restart_marimo_from_the_panel_and_the_same_tab_runs_on_the_new_kernel(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    run = orchestrator(write_notebook(tmp_path / "notebooks", KERNEL_CELL))
    before = _first_run(page, run)
    pid = run.status()["marimo"]["pid"]

    panel = _open_panel(page)
    for name in ("Storage", "Python", "Python packages", "marimo"):
        expect(panel.get_by_role("listitem").filter(has_text=name).first).to_be_visible()
    expect(panel.locator("li[data-step=marimo]")).to_contain_text("done")
    expect(panel).to_contain_text("Storage: packages are saved on the deployment's storage")
    # Words for users: internals (the venv, pids, paths) only under "Technical details".
    said = panel.inner_text()
    assert re.search(r"\bvenv\b|\bpid\b|/tmp/|State volume", said) is None, said
    shots("panel-open")

    _confirm(page, panel, "Restart marimo")
    notices = page.get_by_role("region", name="Environment notices")
    expect(notices).to_contain_text(
        re.compile(r"marimo restarted in \d+\.\d s: .*variables are gone"), timeout=START_TIMEOUT
    )
    assert run.status()["marimo"]["pid"] != pid
    expect(panel.locator(".mo-orch-result")).to_have_text("Restart marimo: done.")
    shots("restarted-notice")
    # The notice holds until a cell ran on the new kernel, then goes by itself (it used to stay
    # until dismissed).
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    _runs_on_a_new_kernel_and_the_notice_goes(page, before)


def test_reinstall_and_rebuild_from_the_panel(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    notebooks = write_notebook(tmp_path / "notebooks", KERNEL_CELL, requirements="orch-alpha\n")
    run = orchestrator(notebooks)
    before = _first_run(page, run)
    panel = _open_panel(page)
    finished = run.step(run.status(), "requirements")["finished_at"]

    _confirm(page, panel, "Reinstall requirements")
    result = panel.locator(".mo-orch-result")
    expect(result).to_have_text("Reinstall requirements: done.", timeout=START_TIMEOUT)
    step = run.step(run.status(), "requirements")
    assert step["finished_at"] != finished and step["status"] == "done", step
    notices = page.get_by_role("region", name="Environment notices")
    expect(notices).to_contain_text("Requirements installed: nothing changed.")

    _confirm(page, panel, "Rebuild environment")
    expect(result).to_have_text("Rebuild environment: done.", timeout=START_TIMEOUT)
    expect(notices).to_contain_text(
        "orch-alpha 1.0 installed for requirements.txt: run the cells that import them again"
    )
    shots("rebuilt")
    # A rebuild ends with marimo restarted on the new venv (nothing may run from a venv that is
    # replaced): the same tab, not reloaded, carries on with a new kernel, and is told so.
    expect(notices).to_contain_text(re.compile(r"marimo restarted in \d+\.\d s"))
    _runs_on_a_new_kernel(page, before)


def test_a_failed_requirement_shows_a_banner_on_a_fresh_visit(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    notebooks = write_notebook(
        tmp_path / "notebooks", KERNEL_CELL, requirements="orch-alpha\nno-such-package-xyz\n"
    )
    run = orchestrator(notebooks)
    run.wait_for(lambda s: s["ready"] and s["phase"] == "degraded", what="a degraded start")
    sign_in(page, run, EDITOR_PATH)  # a fresh visit: straight into marimo
    expect_editor(page, run)
    notices = page.get_by_role("region", name="Environment notices")
    problem = notices.get_by_role("alert")
    expect(problem).to_contain_text("The Python packages could not be installed")
    expect(page.get_by_role("button", name="Environment: needs attention")).to_be_visible()
    # One short line over no cell and no control; the installer's own text not in it, but one
    # click away: "Details" opens the panel at the failure with that text unfolded, once.
    expect(problem).to_contain_text("requirements.txt line 2")
    expect(problem).not_to_contain_text("No solution found")
    box = problem.bounding_box()
    assert box is not None and box["height"] <= 40, box
    shots("failed-requirement-banner")
    assert marimo_controls_covered(page) == []
    assert cells_covered(page) == []
    problem.get_by_role("button", name="Details", exact=True).click()
    panel = page.get_by_role("region", name="Environment", exact=True)
    raw = panel.locator("[data-problem=requirements] pre")
    expect(raw).to_be_visible()
    expect(raw).to_contain_text("no-such-package-xyz")
    expect(panel.locator("li[data-step=requirements]")).to_contain_text("failed")
    shots("failed-requirement-details")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()

    # Dismissed, it stays away for this boot, in a new tab too.
    problem.get_by_role("button", name=re.compile("^Dismiss")).click()
    expect(problem).to_have_count(0)
    other = page.context.new_page()
    other.goto(run.base + EDITOR_PATH)  # (marimo shows a second tab of a notebook read-only)
    # The status has arrived and been drawn (the button says so), without the banner.
    expect(other.get_by_role("button", name="Environment: needs attention")).to_be_visible()
    expect(other.get_by_role("alert").filter(has_text="no-such-package-xyz")).to_have_count(0)
    other.close()


def test_six_tabs_share_one_events_stream(
    page: Any, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    run = orchestrator(write_notebook(tmp_path / "notebooks", KERNEL_CELL))
    run.wait_ready()
    streams: list[str] = []
    page.context.on(
        "request",
        lambda request: streams.append(request.url) if "/-/events" in request.url else None,
    )
    sign_in(page, run, EDITOR_PATH)
    expect_editor(page, run)
    tabs = [page]
    for _ in range(5):
        tab = page.context.new_page()
        tab.goto(run.base + EDITOR_PATH)  # (read-only views of the same notebook)
        tabs.append(tab)
    roles = [tab.locator("[data-orchestrator=panel]") for tab in tabs]
    for role in roles:
        expect(role).to_have_attribute("data-events", re.compile("leader|follower"))
    leaders = [
        tab
        for tab, role in zip(tabs, roles, strict=True)
        if role.get_attribute("data-events") == "leader"
    ]
    assert len(leaders) == 1 and len(streams) == 1, streams

    # The leader goes: another tab takes over with one new stream.
    leaders[0].close()
    rest = [tab for tab in tabs if tab is not leaders[0]]
    deadline = time.monotonic() + 10
    while sum(tab.locator("[data-events=leader]").count() for tab in rest) != 1:
        assert time.monotonic() < deadline, "no tab took over the events stream"
        rest[0].wait_for_timeout(100)
    assert len(streams) == 2, streams


def test_run_mode_shows_status_without_actions(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    run = orchestrator(
        write_notebook(tmp_path / "notebooks", KERNEL_CELL), None, "--marimo-mode", "run"
    )
    run.wait_ready()
    sign_in(page, run, EDITOR_PATH)
    # The app's cells drawn, "Opening your notebook…" goes at once (not after its give-up time).
    expect(page.locator(".marimo-cell").first).to_be_visible(timeout=START_TIMEOUT)
    expect(page.locator("[data-orchestrator=opening]")).to_have_count(0)
    panel = _open_panel(page)
    expect(panel.locator("li[data-step=marimo]")).to_contain_text("done")
    expect(panel.get_by_role("button", name="Restart marimo")).to_have_count(0)
    shots("run-mode")


def test_the_panel_can_be_turned_off(
    page: Any, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    run = orchestrator(
        write_notebook(tmp_path / "notebooks", KERNEL_CELL), None, "--environment-panel", "false"
    )
    run.wait_ready()
    sign_in(page, run, EDITOR_PATH)
    expect_editor(page, run)
    expect(page.get_by_role("button", name=re.compile("^Environment"))).to_have_count(0)


def test_the_panel_is_reachable_and_closable_from_the_keyboard(
    page: Any, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    run = orchestrator(write_notebook(tmp_path / "notebooks", KERNEL_CELL))
    run.wait_ready()
    sign_in(page, run, EDITOR_PATH)
    expect_editor(page, run)
    button = page.get_by_role("button", name=re.compile("^Environment"))
    button.focus()
    expect(button).to_be_focused()
    page.keyboard.press("Enter")
    expect(button).to_have_attribute("aria-expanded", "true")
    panel = page.get_by_role("region", name="Environment", exact=True)
    expect(panel.get_by_role("button", name="Close the Environment panel")).to_be_focused()
    page.keyboard.press("Tab")  # on through the panel's own controls
    expect(panel.locator(":focus")).to_have_count(1)
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(button).to_be_focused()
    assert marimo_controls_covered(page) == []  # the button sits clear of marimo's controls
    page.set_viewport_size({"width": 800, "height": 700})
    assert marimo_controls_covered(page) == []


def _tab_to(page: Any, target: Any, most: int = 12) -> None:
    """Press Tab until ``target`` has the focus (a user tabbing through the panel)."""
    for _ in range(most):
        if target.evaluate("node => node === document.activeElement"):
            return
        page.keyboard.press("Tab")
    expect(target).to_be_focused()


def test_keyboard_only_the_shortcut_opens_the_panel_and_escape_closes_it_after_a_confirmation(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    """Alt+Shift+E from a code cell opens the panel; after confirming a restart, and after
    cancelling one, focus is inside the panel (no stale "done" after Cancel), so Escape closes
    it, and focus returns to the cell."""
    run = orchestrator(write_notebook(tmp_path / "notebooks", KERNEL_CELL))
    run.wait_ready()
    sign_in(page, run, EDITOR_PATH)
    expect_editor(page, run)
    button = page.get_by_role("button", name=re.compile("^Environment"))
    expect(button).to_have_attribute("aria-keyshortcuts", "Alt+Shift+E")
    expect(button).to_have_attribute("title", re.compile(r"\(Alt\+Shift\+E\)"))
    cell = page.get_by_test_id("cell-editor").first.locator(".cm-content")
    cell.focus()
    expect(cell).to_be_focused()
    panel = page.get_by_role("region", name="Environment", exact=True)
    restart = panel.get_by_role("button", name="Restart marimo", exact=True)
    result = panel.locator(".mo-orch-result")

    page.keyboard.press("Alt+Shift+E")
    expect(panel).to_be_visible()
    expect(panel.get_by_role("button", name="Close the Environment panel")).to_be_focused()
    _tab_to(page, restart)
    page.keyboard.press("Enter")
    expect(panel.get_by_role("button", name="Yes, restart marimo")).to_be_focused()
    pid = run.status()["marimo"]["pid"]
    page.keyboard.press("Enter")
    expect(restart).to_be_focused()  # not the page's body
    expect(result).to_have_text("Restart marimo: done.", timeout=START_TIMEOUT)
    assert run.status()["marimo"]["pid"] != pid
    expect(restart).to_be_focused()
    shots("confirmed")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(cell).to_be_focused()

    page.keyboard.press("Alt+Shift+E")
    expect(panel).to_be_visible()
    _tab_to(page, restart)
    page.keyboard.press("Enter")
    cancel = panel.get_by_role("button", name="Cancel")
    _tab_to(page, cancel)
    page.keyboard.press("Enter")
    expect(cancel).to_be_hidden()
    expect(restart).to_be_focused()
    expect(result).to_have_text("")  # no stale "Restart marimo: done."
    shots("cancelled")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(cell).to_be_focused()

    # The shortcut closes it too.
    page.keyboard.press("Alt+Shift+E")
    expect(panel).to_be_visible()
    page.keyboard.press("Alt+Shift+E")
    expect(panel).to_be_hidden()

    # A status update that redraws what had focus in the panel drops focus to the page's
    # body (as removing the focused element does): Escape still closes it.
    page.keyboard.press("Alt+Shift+E")
    expect(panel).to_be_visible()
    page.evaluate("document.activeElement.blur()")
    assert page.evaluate("document.activeElement === document.body")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()


BETA_CELL = """
import orch_beta
"beta " + orch_beta.VERSION
"""


def test_a_requirement_that_changed_version_offers_a_marimo_restart(
    page: Any,
    shots: Shots,
    orchestrator: OrchestratorFactory,
    wheelhouse: Path,
    tmp_path: Path,
) -> None:
    """An imported module is not reloaded: after an install that changed its version the page
    says so and offers the restart that brings the new one in."""
    for version in ("1.0", "2.0"):
        build_wheel(wheelhouse, "orch-beta", version)
    notebooks = write_notebook(tmp_path / "notebooks", BETA_CELL, requirements="orch-beta==1.0\n")
    run = orchestrator(notebooks)
    sign_in(page, run, EDITOR_PATH)
    expect_editor(page, run)
    run_all(page)
    expect(outputs(page).filter(has_text="beta 1.0")).to_be_visible(timeout=START_TIMEOUT)

    (notebooks / "requirements.txt").write_text("orch-beta==2.0\n", encoding="utf-8")
    panel = _open_panel(page)
    _confirm(page, panel, "Reinstall requirements")
    notices = page.get_by_role("region", name="Environment notices")
    changed = notices.get_by_role("status").filter(has_text="Changed orch-beta 1.0 → 2.0")
    expect(changed).to_be_visible(timeout=START_TIMEOUT)
    expect(changed).to_contain_text("keeps the versions it already imported")
    shots("version-changed")

    changed.get_by_role("button", name="Restart marimo").click()
    panel.get_by_role("button", name="Yes, restart marimo").click()
    expect(notices).to_contain_text("marimo restarted", timeout=START_TIMEOUT)
    deadline = time.monotonic() + 60
    while outputs(page).filter(has_text="beta 2.0").count() == 0:
        assert time.monotonic() < deadline, "the new version never ran"
        run_all(page)
        page.wait_for_timeout(500)


def test_a_state_that_will_not_persist_is_a_banner_until_dismissed(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    run = orchestrator(
        write_notebook(tmp_path / "notebooks", KERNEL_CELL),
        tmp_path / "never",  # a volume that never appears: a temporary folder instead
        "--wait-for-state",
        "true",
        "--state-timeout",
        "2",
    )
    run.wait_for(lambda s: s["ready"] and s["state"]["persistent"] is False, what="fallback")
    sign_in(page, run, EDITOR_PATH)
    expect_editor(page, run)
    notices = page.get_by_role("region", name="Environment notices")
    warning = notices.get_by_role("status").filter(has_text="will not persist")
    expect(warning).to_be_visible()
    shots("state-banner")
    panel = _open_panel(page)
    expect(panel).to_contain_text("Storage: not saved")
    warning.get_by_role("button", name=re.compile("^Dismiss")).click()
    expect(warning).to_have_count(0)
    page.reload()  # dismissed for this boot
    expect(page.get_by_role("button", name="Environment: needs attention")).to_be_visible()
    expect(notices.get_by_role("status").filter(has_text="will not persist")).to_have_count(0)


def test_the_panel_says_where_the_packages_run_from_and_when_their_copy_was_saved(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    """State on a network volume (Quix's layout, a FUSE stand-in): packages run from the
    container's disk and the panel says when their copy on the deployment's storage was saved."""
    from tests.support.slow_volume import slow_volume

    notebooks = write_notebook(tmp_path / "app", KERNEL_CELL)
    backing, volume = tmp_path / "backing", notebooks / "state"
    backing.mkdir()
    volume.mkdir()
    with slow_volume(backing, volume, delay=0.0005):
        run = orchestrator(notebooks, volume, "--env-dir", str(tmp_path / "local" / "env"))
        run.wait_for(
            lambda s: s["ready"] and bool((s["environment"] or {}).get("snapshot")),
            what="a snapshot saved",
        )
        sign_in(page, run, EDITOR_PATH)
        expect_editor(page, run)
        panel = _open_panel(page)
        line = panel.locator("[data-environment=local]")
        expect(line).to_contain_text("Python packages: on this container's disk (fast)")
        expect(line).to_contain_text(
            re.compile(r"copy saved on the deployment's storage \d+ s ago")
        )
        shots("environment-local")
        run.kill_everything()  # before the volume goes
