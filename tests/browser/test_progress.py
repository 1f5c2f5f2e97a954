"""Progress that never lies, and failures said once: what the loading page and the panel show
while packages install, when one cannot be, and at the hand-over to marimo's editor.

A sampler runs in every document of the tab from its first moment (an init script), about
every 16 ms, and keeps what it saw in the tab's sessionStorage, so the samples of the loading
page and of marimo's page, across the hand-over's navigation, are read at the end:

- on the loading page, the percentage written and the bar's drawn width, and the running
  step's words;
- on every page once the hand-over started: whether the loading page, the "Opening your
  notebook…" cover, or marimo's editor (a cell) is what shows; anything else is a blank page.

Quix's layout, real marimo, real pip and uv, wheels built here and served from the local index.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_panel import _open_panel
from tests.browser.ui import (
    EDITOR_PATH,
    START_TIMEOUT,
    Shots,
    expect,
    expect_editor,
    sign_in,
    write_notebook,
)
from tests.conftest import OrchestratorFactory
from tests.support.wheels import build_wheel

SAMPLER = """
(() => {
  const KEY = "progress-samples";
  const read = () => { try { return JSON.parse(sessionStorage.getItem(KEY) || "null"); } catch (e) { return null; } };
  const data = read() || { bars: [], counters: [], messages: [], kinds: [], blank: [], handover: false, sawLoading: false };
  const shown = (node) => { if (!node) return false; const box = node.getBoundingClientRect();
    return box.width > 0 && box.height > 0 && getComputedStyle(node).visibility !== "hidden"; };
  function sample() {
    if (!document.body) return;
    const now = Date.now();
    const steps = document.getElementById("steps");
    if (steps) {
      const fill = document.getElementById("bar-fill"), bar = document.getElementById("bar");
      const label = (document.getElementById("percent") || {}).textContent || "";
      const written = /^(\\d+)%/.exec(label);
      const width = bar ? bar.getBoundingClientRect().width : 0;
      if (written && width > 0 && !document.body.dataset.handover) {
        const drawn = fill.getBoundingClientRect().width / width * 100;
        if (Math.abs(drawn - Number(written[1])) > 1) data.bars.push([Number(written[1]), Math.round(drawn * 10) / 10]);
        data.barSamples = (data.barSamples || 0) + 1;
      }
      const step = steps.querySelector("li[data-step=requirements]");
      if (step && step.dataset.status === "running") {
        const words = step.textContent + " " + ((document.getElementById("phase") || {}).textContent || "");
        for (const match of words.matchAll(/(\\d+) of (\\d+)/g)) {
          if (match[1] === match[2]) data.counters.push(words);
        }
        const message = (step.querySelector(".msg") || {}).textContent || "";
        if (message && !data.messages.includes(message) && data.messages.length < 400) data.messages.push(message);
      }
      // The hand-over begins when the loading page knows marimo is ready (its phase).
      if (document.body.dataset.handover || ["ready", "degraded"].includes(document.body.dataset.phase)) data.handover = true;
      data.sawLoading = true;
    } else if (data.sawLoading) {
      data.handover = true; // a document after the loading page: marimo's
    }
    if (data.handover) {
      const kind = document.querySelector("[data-testid=cell-editor]") && shown(document.querySelector("[data-testid=cell-editor]")) ? "editor"
        : shown(document.getElementById("mo-orch-opening")) ? "opening"
        : steps && shown(steps) ? "loading" : "blank";
      const last = data.kinds[data.kinds.length - 1];
      if (!last || last[0] !== kind) data.kinds.push([kind, now, location.pathname + location.search]);
      if (kind === "blank" && data.blank.length < 50) {
        const root = document.getElementById("root");
        data.blank.push([now, root ? root.childElementCount : -1, document.body.innerText.slice(0, 80)]);
      }
    }
    try { sessionStorage.setItem(KEY, JSON.stringify(data)); } catch (e) { /* full: keep the first */ }
  }
  setInterval(sample, 16);
  document.addEventListener("readystatechange", sample);
})();
"""


def _samples(page: Any) -> dict[str, Any]:
    return dict(json.loads(page.evaluate("sessionStorage.getItem('progress-samples')")))


def test_a_pip_install_of_15_packages_never_shows_done_early_and_hands_over_without_a_blank_page(
    page: Any, shots: Shots, orchestrator: OrchestratorFactory, wheelhouse: Path, tmp_path: Path
) -> None:
    names = [f"orch-many-{number:02d}" for number in range(15)]
    for name in names:
        build_wheel(wheelhouse, name, "1.0", padding=400_000)
    notebooks = write_notebook(
        tmp_path / "app", "1 + 1", requirements="".join(f"{name}==1.0\n" for name in names)
    )
    page.add_init_script(SAMPLER)
    run = orchestrator(notebooks, None, "--installer", "pip")
    sign_in(page, run, EDITOR_PATH)  # the loading page, then the editor by itself
    run.wait_for(
        lambda s: "Downloading" in run.step(s, "requirements")["message"], what="downloads"
    )
    shots("installing")
    expect_editor(page, run, timeout=START_TIMEOUT * 2)
    samples = _samples(page)
    shots("editor")

    requirements = run.step(run.status(), "requirements")
    assert requirements["status"] == "done", requirements
    # The install was watched: pip's downloads were shown one by one as they came.
    downloads = [m for m in samples["messages"] if m.startswith("Downloading")]
    assert len(downloads) >= 5, samples["messages"]
    # No "N of N" while the step ran (pip's total grows with its count: it always read done).
    assert samples["counters"] == [], samples["counters"][:5]
    # The bar draws the number its label says, at every sample.
    assert samples.get("barSamples", 0) > 20, samples
    assert samples["bars"] == [], samples["bars"][:10]
    # From the hand-over to the first cell: the loading page, or the words that replace it on
    # marimo's page, or marimo's editor; never a blank page.
    timeline = samples["kinds"]
    print("hand-over:", [(kind, (at - timeline[0][1]) / 1000) for kind, at, _ in timeline])
    kinds = [kind for kind, _, _ in timeline]
    assert samples["handover"] and kinds and kinds[-1] == "editor", samples["kinds"]
    assert "blank" not in kinds, (samples["kinds"], samples["blank"][:5])


@pytest.mark.parametrize(
    ("installer", "words"),
    [
        ("uv", "no-such-package-xyz was not found in the package registry"),
        ("pip", "No matching distribution found for no-such-package-xyz"),
    ],
    ids=["uv", "pip"],
)
def test_a_missing_package_is_named_with_its_line_and_the_installers_words_once(
    page: Any,
    shots: Shots,
    orchestrator: OrchestratorFactory,
    tmp_path: Path,
    installer: str,
    words: str,
) -> None:
    notebooks = write_notebook(
        tmp_path / "app", "1 + 1", requirements="orch-alpha\nno-such-package-xyz\n"
    )
    run = orchestrator(notebooks, None, "--installer", installer)
    sign_in(page, run, EDITOR_PATH)
    problem = page.locator("#problem")
    expect(problem).to_be_visible(timeout=START_TIMEOUT)
    said = "requirements.txt line 2: cannot install 'no-such-package-xyz', so nothing was installed"
    expect(problem).to_contain_text(said)
    expect(problem).to_contain_text("fix or remove that line")
    # The installer's words: once on the page (the live log aside), folded under "Details".
    outside_log = page.evaluate(
        """() => { const main = document.querySelector("main").cloneNode(true);
                   main.querySelector("#log-box").remove(); return main.textContent; }"""
    )
    assert outside_log.count(words) == 1, outside_log
    folded = problem.locator("details", has_text=words)
    expect(folded).to_have_count(1)
    assert folded.evaluate("node => node.open") is False
    expect(problem.get_by_text(words)).to_be_hidden()
    shots("loading-page")
    folded.locator("summary").click()
    expect(problem.get_by_text(words)).to_be_visible()

    # In the editor: the panel says it once too (folded), and the notices not at all.
    page.get_by_role("button", name="Open marimo anyway").click()
    expect_editor(page, run)
    panel = _open_panel(page)
    expect(panel.locator("[data-problem=requirements]")).to_contain_text(said)
    in_panel = page.evaluate(
        "() => document.querySelector('[data-orchestrator=panel]').textContent"
    )
    assert in_panel.count(words) == 1, in_panel
    assert re.search(r"\bvenv\b", panel.inner_text()) is None, panel.inner_text()
    shots("panel")


def test_a_failed_path_line_is_named_with_its_line_everywhere(
    page: Any, orchestrator: OrchestratorFactory, tmp_path: Path
) -> None:
    """A failure's reason is said even when it holds a path or a URL (a running step's internals
    are not): the loading page, the notice in the editor and the panel name the line."""
    notebooks = write_notebook(
        tmp_path / "app", "1 + 1", requirements="orch-alpha\n./no-such-folder\n"
    )
    run = orchestrator(notebooks)
    sign_in(page, run, EDITOR_PATH)
    said = "could not install ./no-such-folder (requirements.txt line 2)"
    problem = page.locator("#problem")
    expect(problem).to_contain_text(said, timeout=START_TIMEOUT)
    page.get_by_role("button", name="Open marimo anyway").click()
    expect_editor(page, run)
    notice = page.get_by_role("region", name="Environment notices").get_by_role("alert")
    expect(notice).to_contain_text("requirements.txt line 2")
    panel = _open_panel(page)
    expect(panel.locator("[data-problem=requirements]")).to_contain_text(said)
    words = panel.locator("[data-problem=requirements]").inner_text()
    assert words.count("could not be installed") == 1, words
