"""What the browser tests do as a user would: sign in, open a notebook, run it, read outputs.

marimo's own selectors (checked against marimo 0.25.2) are kept here, in one place:
- the editor's cells: ``[data-testid=cell-editor]``;
- "Run all stale cells": the ``run-button`` that is not in a cell's tray (bottom right);
- a cell's output: ``[data-cell-role=output]``; its printed text: ``[data-testid=console-output-area]``;
- the missing-package banner: heading "Missing packages" and its "Install" button.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.support.orchestrator import ROOT, Orchestrator

try:
    from playwright.sync_api import expect as expect
except ImportError:  # the `browser` fixture reports it: a skip, or a failure in CI
    expect: Any = None  # type: ignore[no-redef]

ARTIFACTS = ROOT / "test-artifacts" / "browser"
NOTEBOOK = "notebook.py"
EDITOR_PATH = f"/?file={NOTEBOOK}"

# Generous: a cold start here is ~7 s, but two cores are shared with other work.
START_TIMEOUT = 90_000
OUTPUT_TIMEOUT = 60_000

CONTEXT_OPTIONS: dict[str, Any] = {
    "viewport": {"width": 1280, "height": 800},
    "reduced_motion": "reduce",
}
"""Every test's tab. It prefers reduced motion, a user setting our pages and marimo's honour
(their spinners and progress sweeps stand still): an animation running while a test waits for
a kernel, an install or a restart costs Chromium about 0.3 CPU-seconds a second on this 2-core
machine, time the suite's other tests wait for."""


def write_notebook(directory: Path, *cells: str, requirements: str | None = None) -> Path:
    """A notebook folder holding ``notebook.py`` with these cells (and a requirements file)."""
    directory.mkdir(parents=True, exist_ok=True)
    body = "".join(
        "\n\n@app.cell\ndef _():\n"
        + textwrap.indent(textwrap.dedent(cell).strip(), "    ")
        + "\n    return\n"
        for cell in cells
    )
    source = f'import marimo\n\napp = marimo.App()\n\n{body}\n\nif __name__ == "__main__":\n    app.run()\n'
    (directory / NOTEBOOK).write_text(source, encoding="utf-8")
    if requirements is not None:
        (directory / "requirements.txt").write_text(requirements, encoding="utf-8")
    return directory


def sign_in(page: Any, run: Orchestrator, next_path: str = EDITOR_PATH) -> None:
    """The ready-to-click login URL the orchestrator prints in token mode (once it listens)."""
    run.wait_listening(timeout=30)
    page.goto(f"{run.base}/-/login?token={quote(run.token)}&next={quote(next_path, safe='')}")


def loading_step(page: Any, name: str) -> Any:
    return page.locator(f"#steps li[data-step={name}]")


def expect_editor(page: Any, run: Orchestrator, timeout: float = START_TIMEOUT) -> None:
    """marimo's editor, with the notebook's cells, at the URL that was asked for."""
    expect(page.get_by_test_id("cell-editor").first).to_be_visible(timeout=timeout)
    expect(page).to_have_url(run.base + EDITOR_PATH)
    expect(page.locator("#steps")).to_have_count(0)  # not the loading page any more


def run_all(page: Any) -> None:
    """Click marimo's "Run all stale cells" (edit mode does not run cells on open). After a
    restart the button is back once the tab has reconnected, which under load takes as long as
    an output may."""
    button = page.locator("button[data-testid=run-button]:not([data-testid=cell-tray] *)")
    expect(button).to_have_count(1, timeout=OUTPUT_TIMEOUT)
    button.click()


def outputs(page: Any) -> Any:
    return page.locator("[data-cell-role=output], [data-testid=console-output-area]")


class Shots:
    """Named screenshots of the test's page, next to the final one."""

    def __init__(self, page: Any, stem: str) -> None:
        self.page = page
        self.stem = stem
        self.paths: list[Path] = []

    def __call__(self, label: str) -> Path:
        path = ARTIFACTS / f"{self.stem}--{label}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.paths.append(path)
        print(
            f"screenshot: {path}"
        )  # in the test's output (pytest -rP or -s) for people to look at
        return path


# -- what of marimo's page the Environment dock covers ------------------------------------------
LAYOUT_ARTIFACTS = ARTIFACTS / "layout"
"""Screenshots of each layout checked (``test-artifacts/browser/layout/``, ignored by git)."""

# Hit-testing, not geometry alone: an element counts where the browser would deliver a click to
# it (elementFromPoint, with our elements hidden for the test); an element clipped, covered by
# marimo itself or outside the window does not. Interactive: what a user can click, type into
# or open (roles, focusable elements, anything with a pointer cursor); opacity-0 controls that
# appear on hover count too. Text: an element with text of its own (a title, a label).
_OVERLAPS_JS = """([kind, ours]) => {
  const root = document.querySelector("[data-orchestrator=panel]");
  if (!root) return ["the Environment dock is missing"];
  const INTERACTIVE = "button, a[href], input, select, textarea, summary, [contenteditable=''],"
    + " [contenteditable=true], [role=button], [role=link], [role=tab], [role=option], [role=menuitem],"
    + " [role=checkbox], [role=switch], [role=combobox], [role=slider], [role=textbox],"
    + " [tabindex]:not([tabindex='-1'])";
  const CONTENT = "[data-cell-role=output], .output-area, .marimo-cell, [data-testid=cell-editor]";
  const parts = [...root.querySelectorAll(ours)]
    .map((node) => [node, node.getBoundingClientRect()])
    .filter(([, r]) => r.width > 0 && r.height > 0);
  const name = (node) => {
    const label = node.getAttribute("aria-label") || node.dataset.testid || node.dataset.key
      || node.id || (node.textContent || "").trim().slice(0, 30);
    const r = node.getBoundingClientRect();
    return `${node.tagName.toLowerCase()} "${label}" [${Math.round(r.left)},${Math.round(r.top)} ${Math.round(r.width)}x${Math.round(r.height)}]`;
  };
  const ownText = (node) => [...node.childNodes].some((c) => c.nodeType === 3 && c.data.trim());
  const wanted = (node) => kind === "content" ? node.matches(CONTENT)
    : node.matches(INTERACTIVE) || getComputedStyle(node).cursor === "pointer" || ownText(node);
  const found = [];
  const visibility = root.style.visibility;
  root.style.visibility = "hidden";
  try {
    for (const node of document.body.querySelectorAll("*")) {
      if (root.contains(node)) continue;
      const r = node.getBoundingClientRect();
      if (r.width < 1 || r.height < 1) continue;
      for (const [part, p] of parts) {
        const left = Math.max(r.left, p.left, 0), right = Math.min(r.right, p.right, innerWidth);
        const top = Math.max(r.top, p.top, 0), bottom = Math.min(r.bottom, p.bottom, innerHeight);
        if (right - left < 1 || bottom - top < 1 || !wanted(node)) continue;
        let seen = false;
        for (let i = 0; i < 5 && !seen; i++) for (let j = 0; j < 3 && !seen; j++) {
          const hit = document.elementFromPoint(left + (right - left) * (i + 0.5) / 5, top + (bottom - top) * (j + 0.5) / 3);
          seen = !!hit && (hit === node || node.contains(hit));
        }
        if (seen) found.push(`${name(node)} under our ${name(part)}`);
      }
    }
  } finally {
    root.style.visibility = visibility;
  }
  return found;
}"""

DOCK_PARTS = ".mo-orch-toggle, .mo-orch-banner, .mo-orch-more-notices"
"""What of ours is on screen at rest: the button, the notice in view, its "+N"/"More"."""


def settled(page: Any) -> None:
    """Until the page has drawn twice since (the dock is placed on the next frame after marimo
    changes): a wait for the page's own rendering, not a sleep."""
    page.evaluate(
        "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"
    )


def marimo_controls_covered(page: Any, ours: str = DOCK_PARTS) -> list[str]:
    """marimo's visible interactive elements, and its text, that our button or notices lie
    over."""
    settled(page)
    return list(page.evaluate(_OVERLAPS_JS, ["interactive", ours]))


def cells_covered(page: Any, ours: str = ".mo-orch-banner, .mo-orch-more-notices") -> list[str]:
    """marimo's cells (editors, output boxes) that a notice of ours lies over."""
    settled(page)
    return list(page.evaluate(_OVERLAPS_JS, ["content", ours]))
