"""Where the Environment button and its notices sit in marimo's page: over nothing of marimo's.

At 800, 1280 and 1920 px wide, in marimo's editor with each of its side panes open, its
developer panel, its app view and its "Missing packages" card; in a second tab of the same
notebook (marimo's "You are connected as a reader — Take over" strip); and in run mode: the
button's box, and the notice shown beside it (a requirement that could not be installed, so
there always is one), lie over no visible interactive element or text of marimo's, and the
notice over no cell (hit-tested in the page, see ``ui.marimo_controls_covered``). A screenshot
of every layout checked is kept in ``test-artifacts/browser/layout/`` (``ui.LAYOUT_ARTIFACTS``).

One orchestrator (Quix's layout, real marimo) serves the editor's tests of this module; each
test walks the widths itself (the browser tests are costly).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_editor import COWSAY_CELL
from tests.browser.test_restarts import KERNEL_CELL
from tests.browser.ui import (
    EDITOR_PATH,
    LAYOUT_ARTIFACTS,
    OUTPUT_TIMEOUT,
    START_TIMEOUT,
    cells_covered,
    expect,
    expect_editor,
    marimo_controls_covered,
    run_all,
    sign_in,
    write_notebook,
)
from tests.conftest import OrchestratorFactory
from tests.support.index import LocalIndex
from tests.support.orchestrator import Orchestrator, hermetic_env, quix_layout_env
from tests.support.quix_portal import FakeQuixPortal

WIDTHS = (800, 1280, 1920)
HEIGHT = 800
TEXT_CELL = '"a line " + "of text"'
# Not in the index: the install fails and its banner stays in view through every layout.
REQUIREMENTS = "orch-alpha\nno-such-package-xyz\n"


@pytest.fixture(scope="module")
def editor_run(
    tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path
) -> Iterator[Orchestrator]:
    """One orchestrator for the module, in Quix's layout (the state volume inside the notebook
    folder, ``Quix__*`` set for a fake portal); its notebook imports a package nobody asked
    for, so marimo offers to install it."""
    base = tmp_path_factory.mktemp("layout")
    app = write_notebook(
        base / "app", KERNEL_CELL, COWSAY_CELL, TEXT_CELL, requirements=REQUIREMENTS
    )
    state = app / "state"
    state.mkdir()
    with LocalIndex(wheelhouse) as index, FakeQuixPortal() as portal:
        portal.state.allowed_tokens.add(portal.env()["Quix__Sdk__Token"])
        env = {
            **index.env(),
            **quix_layout_env(portal.env(), state),
            "ORCHESTRATOR_AUTH": "token",
        }
        run = Orchestrator(app, state, base / "orchestrator.log", hermetic_env(env))
        try:
            _degraded(run)
            yield run
        finally:
            run.kill_everything()


def _degraded(run: Orchestrator) -> None:
    """marimo serves despite the failed install (a visit then goes straight into marimo)."""
    run.wait_for(lambda s: s["ready"] and s["phase"] == "degraded", what="a degraded start")


class Layouts:
    """Checks a page's layout at each width and keeps a screenshot of each."""

    def __init__(self, page: Any, mode: str) -> None:
        self.page = page
        self.mode = mode
        self.problems: list[str] = []
        self.checked: list[str] = []
        LAYOUT_ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def check(self, scenario: str, width: int) -> None:
        button = self.page.get_by_role("button", name=re.compile("^Environment"))
        expect(button).to_be_visible()
        notices = self.page.get_by_role("region", name="Environment notices")
        expect(notices.get_by_role("alert")).to_be_visible()  # the failed install's banner
        covered = marimo_controls_covered(self.page) + cells_covered(self.page)
        shot = LAYOUT_ARTIFACTS / f"{self.mode}-{scenario}-{width}.png"
        self.page.screenshot(path=str(shot))
        self.checked.append(f"{self.mode}/{scenario}/{width}")
        self.problems += [f"{self.mode}, {scenario}, {width} px: {c} ({shot})" for c in covered]

    def at_each_width(self, scenario: str, prepare: Any = None) -> None:
        for width in WIDTHS:
            self.page.set_viewport_size({"width": width, "height": HEIGHT})
            if prepare is not None:
                prepare()
            self.check(scenario, width)

    def assert_clear(self) -> None:
        print("layouts checked: " + ", ".join(self.checked))
        assert not self.problems, "marimo's controls covered:\n" + "\n".join(self.problems)


# marimo 0.25's side panes: the sidebar's options ([role=option][data-key]); clicking one opens
# its pane (Playwright's click also starts react-aria's keyboard drag of the option, which
# Escape ends), titled with its key.
SIDEBAR_OPTION = "[data-testid=chrome-sidebar] [role=option][data-key]"


def _pane_keys(page: Any) -> list[str]:
    keys = page.locator(SIDEBAR_OPTION).evaluate_all("nodes => nodes.map(n => n.dataset.key)")
    return [str(key) for key in keys]


def _open_pane(page: Any, key: str) -> None:
    """Opens the side pane ``key``: its title (the pane's name, next to its close button)
    says so."""
    page.locator(f'{SIDEBAR_OPTION.removesuffix("[data-key]")}[data-key="{key}"]').click()
    page.keyboard.press("Escape")
    title = page.get_by_test_id("close-helper-pane").locator("xpath=..").locator("span").first
    expect(title).to_have_text(key, ignore_case=True)


def _missing_packages_card(page: Any) -> Any:
    return page.locator("div", has=page.get_by_text("Missing packages", exact=True)).filter(
        has=page.get_by_role("button", name="Install")
    )


def test_the_button_covers_nothing_of_marimos_editor_in_any_pane_or_card(
    page: Any, editor_run: Orchestrator
) -> None:
    run = editor_run
    sign_in(page, run, EDITOR_PATH)
    expect_editor(page, run)
    layouts = Layouts(page, "edit")
    layouts.at_each_width("editor")

    # marimo's "Missing packages" card, with its Install controls (top left).
    run_all(page)
    card = _missing_packages_card(page).last
    expect(card).to_be_visible(timeout=OUTPUT_TIMEOUT)
    layouts.at_each_width("missing-packages")
    card.get_by_test_id("remove-banner-button").click()  # closed: the panes' titles show
    expect(card).to_have_count(0)

    keys = _pane_keys(page)
    assert {"files", "variables", "packages", "outline", "dependencies"} <= set(keys), keys
    for key in keys:
        _open_pane(page, key)
        layouts.at_each_width(f"pane-{key}")
    page.get_by_test_id("close-helper-pane").click()

    # The developer panel (errors, logs, …), opened from its footer indicator.
    page.get_by_test_id("footer-panel").click()
    layouts.at_each_width("developer-panel")
    page.get_by_test_id("footer-panel").click()

    # App view (marimo's presentation of the notebook in the editor).
    page.get_by_test_id("hide-code-button").click()
    layouts.at_each_width("app-view")
    layouts.assert_clear()


def test_the_button_covers_nothing_of_a_readers_tab(page: Any, editor_run: Orchestrator) -> None:
    """A second tab of the same notebook is a reader: marimo's strip "You are connected as a
    reader" with its "Take over" button (top left), and "kiosk mode" in the footer."""
    run = editor_run
    sign_in(page, run, EDITOR_PATH)
    expect_editor(page, run)
    reader = page.context.new_page()
    reader.goto(run.base + EDITOR_PATH)
    expect(reader.get_by_role("button", name=re.compile("Take over"))).to_be_visible(
        timeout=START_TIMEOUT
    )
    layouts = Layouts(reader, "reader")
    layouts.at_each_width("take-over-strip")
    layouts.assert_clear()


def test_the_button_covers_nothing_in_run_mode(
    page: Any, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    app = write_notebook(tmp_path / "app", KERNEL_CELL, TEXT_CELL, requirements=REQUIREMENTS)
    run = orchestrator(app, None, "--marimo-mode", "run")
    _degraded(run)
    sign_in(page, run, EDITOR_PATH)
    expect(page.get_by_text("a line of text")).to_be_visible(timeout=START_TIMEOUT)
    layouts = Layouts(page, "run")
    layouts.at_each_width("app")
    layouts.assert_clear()
