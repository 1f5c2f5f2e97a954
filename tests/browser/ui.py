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
    """Click marimo's "Run all stale cells" (edit mode does not run cells on open)."""
    button = page.locator("button[data-testid=run-button]:not([data-testid=cell-tray] *)")
    expect(button).to_have_count(1)
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
