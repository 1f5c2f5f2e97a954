"""The loading page as a user meets it: progress, problems, buttons, and the way into marimo."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.browser.ui import (
    EDITOR_PATH,
    START_TIMEOUT,
    Shots,
    expect,
    expect_editor,
    loading_step,
    sign_in,
    write_notebook,
)
from tests.support.index import LocalIndex
from tests.support.orchestrator import Orchestrator, OrchestratorFactory

CELL = """
import orch_alpha
orch_alpha.NAME
"""


def test_cold_start_shows_progress_then_opens_the_editor_by_itself(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, index: LocalIndex, tmp_path: Path
) -> None:
    notebooks = write_notebook(tmp_path / "notebooks", CELL, requirements="orch-alpha\n")
    release = index.control.hold("orch-alpha")  # the requirement's download stays pending
    run = orchestrator(notebooks)
    sign_in(page, run, EDITOR_PATH)

    # The asked-for URL answers with the loading page, which follows the steps live.
    expect(page).to_have_url(run.base + EDITOR_PATH)
    expect(page.get_by_role("heading", name="Starting your marimo environment")).to_be_visible()
    requirements = loading_step(page, "requirements")
    expect(requirements).to_have_attribute("data-status", "running", timeout=START_TIMEOUT)
    expect(requirements).to_contain_text("Python packages")
    for done in ("state", "venv"):
        expect(loading_step(page, done)).to_have_attribute(
            "data-status", re.compile("done|skipped")
        )
    expect(loading_step(page, "marimo")).to_have_attribute("data-status", "pending")
    bar = page.get_by_role("progressbar", name="Overall progress")
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^[1-9][0-9]?$"))  # 1..99
    expect(page.locator("#percent")).to_have_text(re.compile(r"^[1-9][0-9]?%"))
    # The page shows the step running before the installer has asked the index (the step
    # starts first): wait for the request, which the index then holds.
    assert index.control.arrived["orch-alpha"].wait(60), "the download really is pending"
    # One percentage (the bar's), the step's state in words, a moving indicator, and a promise.
    expect(requirements.locator(".state")).to_have_text("In progress")
    expect(requirements.locator(".msg")).not_to_contain_text("%")
    expect(bar).to_have_class(re.compile(r"\bactive\b"))
    expect(page.get_by_text("You'll be taken to your notebook automatically")).to_be_visible()
    # The status live region is written only when its words change: not once in 3 s here.
    page.evaluate(
        """() => { window.phaseWrites = 0;
        new MutationObserver(() => window.phaseWrites++).observe(
            document.getElementById('phase'), {childList: true, characterData: true, subtree: true});
        }"""
    )
    etas = []
    for _ in range(12):  # watched for 3 s: the ETA, when shown, never rises
        found = re.search(r"about (\d+) s left", page.locator("#percent").inner_text())
        if found:
            etas.append(int(found.group(1)))
        page.wait_for_timeout(250)
    assert etas == sorted(etas, reverse=True), etas
    assert page.evaluate("window.phaseWrites") == 0
    shots("requirements-running")

    release.set()
    # Nobody clicks anything: the page returns to the URL it was served at once marimo is ready.
    expect_editor(page, run)
    status = run.status()
    assert [step["status"] for step in status["steps"]] == ["done", "done", "done", "done"]


def _degraded_start(page: Any, orchestrator: OrchestratorFactory, tmp_path: Path) -> Orchestrator:
    """A requirement nobody can install: marimo starts anyway and the page says what failed."""
    notebooks = write_notebook(
        tmp_path / "notebooks", CELL, requirements="orch-alpha\nno-such-package-xyz\n"
    )
    run = orchestrator(notebooks)
    sign_in(page, run, EDITOR_PATH)
    expect(loading_step(page, "requirements")).to_have_attribute(
        "data-status", "failed", timeout=START_TIMEOUT
    )
    expect(page.get_by_role("heading", name="Something needs your attention")).to_be_visible()
    expect(page.locator("#problem-text")).to_contain_text(
        "The Python packages could not be installed"
    )
    expect(page.locator("#problem-text")).to_contain_text(
        "requirements.txt line 2: cannot install 'no-such-package-xyz', so nothing was installed"
    )
    # The installer's own words are in the problem box, folded; the state in words, the bar amber.
    installer_said = page.locator("#problem-text details").filter(
        has_text="not found in the package registry"
    )
    expect(installer_said).to_have_count(1)
    expect(loading_step(page, "requirements").locator(".state")).to_have_text("Failed")
    expect(page.get_by_role("progressbar", name="Overall progress")).to_have_class(
        re.compile(r"\bfailed\b")
    )
    return run


def test_a_requirement_that_cannot_be_installed_is_named_and_marimo_opens_anyway(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    run = _degraded_start(page, orchestrator, tmp_path)
    open_anyway = page.get_by_role("button", name="Open marimo anyway")
    expect(open_anyway).to_be_visible(timeout=START_TIMEOUT)  # once marimo itself is up
    expect(page.locator("body")).to_have_attribute("data-phase", "degraded")
    expect(page.get_by_role("heading", name="marimo is running, with a problem")).to_be_visible()
    # The log keeps our lines and the installer's; marimo's own chatter stays out.
    log = page.locator("#log")
    expect(log).to_contain_text("no-such-package-xyz")
    for noise in ("Activate with", "nvidia-smi", "Create or edit notebooks"):
        expect(log).not_to_contain_text(noise)
    expect(page).to_have_url(run.base + EDITOR_PATH)  # the page waits for the user to read
    shots("degraded")

    # Retrying cannot help here: the page says so once the second attempt is over.
    page.get_by_role("button", name="Retry the install").click()
    expect(page.locator("#action-result")).to_have_text("The install failed again.")
    expect(loading_step(page, "requirements")).to_have_attribute("data-status", "failed")
    expect(page.locator("#problem-text")).to_contain_text("no-such-package-xyz")

    open_anyway.click()
    expect_editor(page, run)


def test_restart_marimo_from_the_loading_page_then_open_it(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    run = _degraded_start(page, orchestrator, tmp_path)
    restart = page.get_by_role("button", name="Restart marimo")
    expect(restart).to_be_visible(timeout=START_TIMEOUT)
    before = run.wait_ready()["marimo"]["pid"]

    restart.click()
    result = page.locator("#action-result")
    expect(result).to_have_text(re.compile("Restarting marimo…|marimo restarted."))
    after = run.wait_for(
        lambda s: s["ready"] and s["marimo"]["pid"] not in (None, before), what="a new marimo"
    )
    # The page follows the restart, says it is over and, the start still being degraded,
    # waits for the user again.
    expect(result).to_have_text("marimo restarted.")
    expect(loading_step(page, "marimo")).to_contain_text("marimo is running")
    # Its pid is for whoever needs it: under "Technical details", not in the step's words.
    expect(page.locator("#internals")).to_contain_text(f"pid {after['marimo']['pid']}")
    expect(loading_step(page, "marimo")).not_to_contain_text("pid")
    expect(page).to_have_url(run.base + EDITOR_PATH)
    shots("restarted")
    page.get_by_role("button", name="Open marimo anyway").click()
    expect_editor(page, run)
    assert run.status()["marimo"]["pid"] == after["marimo"]["pid"]


def test_the_page_survives_the_orchestrator_restarting_under_it(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, index: LocalIndex, tmp_path: Path
) -> None:
    """The container restarts while someone watches the page: it reconnects to the new
    orchestrator (a new boot_id) and still returns to the notebook by itself."""
    notebooks = write_notebook(tmp_path / "notebooks", CELL, requirements="orch-alpha\n")
    state = tmp_path / "state"
    release = index.control.hold("orch-alpha")
    first = orchestrator(notebooks, state)
    sign_in(page, first, EDITOR_PATH)
    expect(loading_step(page, "requirements")).to_have_attribute(
        "data-status", "running", timeout=START_TIMEOUT
    )
    first_boot = first.status()["boot_id"]
    shots("first-boot")
    assert first.terminate() == 0
    release.set()
    second = orchestrator(notebooks, state, port=first.port)
    # Nobody reloads: the page reconnects, follows the new start, and opens the editor.
    expect_editor(page, second)
    assert second.status()["boot_id"] != first_boot
    assert page.url == second.base + EDITOR_PATH


def test_the_status_page_is_useful_while_marimo_is_healthy(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    """``/-/loading`` does not bounce to marimo once it is ready: it shows the steps and the
    actions, and goes to marimo only when asked."""
    run = orchestrator(write_notebook(tmp_path / "notebooks", CELL, requirements="orch-alpha\n"))
    run.wait_ready()
    sign_in(page, run, "/-/loading")
    expect(page.get_by_role("heading", name="Your marimo environment")).to_be_visible()
    expect(page.locator("#log")).to_contain_text("orch-alpha")  # the events stream was read
    expect(page.locator("#phase")).to_have_text("marimo is running.")
    expect(loading_step(page, "marimo")).to_have_attribute("data-status", "done")
    expect(page.get_by_role("button", name="Restart marimo")).to_be_visible()
    expect(page).to_have_url(run.base + "/-/loading")
    shots("status-page")

    # The primary button reads at AA contrast (4.5:1) in both themes.
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        colours = page.get_by_role("button", name="Open marimo").evaluate(
            "b => [getComputedStyle(b).color, getComputedStyle(b).backgroundColor]"
        )
        assert _contrast(*colours) >= 4.5, (scheme, colours)
    shots("status-page-dark")
    page.emulate_media(color_scheme="light")

    # Into marimo, and (the folder holding one notebook) straight into that notebook.
    page.get_by_role("button", name="Open marimo").click()
    expect_editor(page, run)


def test_without_javascript_the_page_shows_the_steps_and_refreshes_itself(
    browser: Any, orchestrator: OrchestratorFactory, index: LocalIndex, tmp_path: Path
) -> None:
    notebooks = write_notebook(tmp_path / "notebooks", CELL, requirements="orch-alpha\n")
    release = index.control.hold("orch-alpha")
    run = orchestrator(notebooks)
    run.wait_for(lambda s: run.step(s, "requirements")["status"] == "running", what="requirements")
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        # The sign-in link sets the cookie server-side, then redirects: no script needed.
        sign_in(page, run, EDITOR_PATH)
        requirements = loading_step(page, "requirements")
        expect(requirements).to_have_attribute("data-status", "running")
        expect(requirements.locator(".state")).to_have_text("In progress")
        expect(loading_step(page, "state").locator(".state")).to_have_text(
            re.compile("Done|Skipped")
        )
        expect(page.locator("#phase")).to_have_text("Starting…")
        expect(page.locator("noscript").first).to_be_attached()
        assert 'http-equiv="refresh"' in page.content()
    finally:
        context.close()
        release.set()


def _contrast(foreground: str, background: str) -> float:
    """WCAG contrast ratio of two CSS ``rgb(…)`` colours."""

    def luminance(colour: str) -> float:
        red, green, blue = (int(part) / 255 for part in re.findall(r"\d+", colour)[:3])
        linear = [
            c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (red, green, blue)
        ]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)
