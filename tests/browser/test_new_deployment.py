"""A package a user installs with marimo's Install button reaches every new deployment: marimo
writes it into the notebook's header, notebook sync pushes the notebook to Quix, and a
deployment that starts from those files with an empty state folder has the package, at the
same version, before anyone clicks anything. Recording is the default; the editor is told
"orch-cowsay 1.0 added to notebook.py's dependencies".

Chromium drives marimo's own missing-package banner; the fake portal keeps what was pushed.
"""

from __future__ import annotations

import time
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
from tests.support.orchestrator import OrchestratorFactory, quix_layout_env
from tests.support.quix_portal import FakeQuixPortal

COWSAY_CELL = """
import orch_cowsay
orch_cowsay.say("m" + "oo")
"""
COW_OUTPUT = "the cow says moo"
PINNED = '"orch-cowsay==1.0"'


def pushed_notebook(portal: FakeQuixPortal, timeout: float = 30) -> str:
    """The last content of notebook.py the portal received once it carries the pin."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        contents = [body for name, body in portal.state.files if name == "notebook.py"]
        if contents and PINNED in contents[-1]:
            return contents[-1]
        time.sleep(0.05)
    raise AssertionError(f"no notebook.py with {PINNED} reached the portal: {portal.state.files}")


def test_an_install_button_package_is_in_git_and_a_new_deployment_has_it(
    page: Any,
    shots: Shots,
    orchestrator: OrchestratorFactory,
    portal: FakeQuixPortal,
    tmp_path: Path,
) -> None:
    app = write_notebook(tmp_path / "app", COWSAY_CELL)  # no requirements.txt, no header
    state = app / "state"
    state.mkdir()  # the volume Quix mounts
    portal.state.allowed_tokens.add(portal.env()["Quix__Sdk__Token"])
    env = {**quix_layout_env(portal.env(), state), "ORCHESTRATOR_AUTH": "token"}
    run = orchestrator(app, state, "--sync-debounce", "0.3", env=env)  # recording: the default
    sign_in(page, run, EDITOR_PATH)
    expect_editor(page, run)

    run_all(page)
    missing = page.get_by_text("No module named 'orch_cowsay'")
    expect(missing.first).to_be_visible(timeout=OUTPUT_TIMEOUT)
    banner = (
        page.locator("div", has=page.get_by_text("Missing packages", exact=True))
        .filter(has=page.get_by_role("button", name="Install"))
        .last
    )
    banner.get_by_role("button", name="Install").click()
    expect(outputs(page).filter(has_text=COW_OUTPUT)).to_be_visible(timeout=OUTPUT_TIMEOUT)
    # The orchestrator noticed the header's new line and says so in the editor.
    notices = page.get_by_role("region", name="Environment notices")
    recorded = notices.get_by_role("status").filter(
        has_text="orch-cowsay 1.0 added to notebook.py's dependencies"
    )
    expect(recorded).to_be_visible(timeout=OUTPUT_TIMEOUT)
    shots("installed")

    # marimo wrote the installed version into the notebook's header; sync pushed the notebook.
    assert PINNED in (app / "notebook.py").read_text(encoding="utf-8")
    pushed = pushed_notebook(portal)
    assert "orch_cowsay.say" in pushed
    assert run.terminate() == 0

    # A new deployment: the repository's files (what the portal holds), an empty state folder.
    fresh = tmp_path / "new-deployment"
    fresh.mkdir()
    (fresh / "notebook.py").write_text(pushed, encoding="utf-8")
    empty = tmp_path / "empty-state"
    empty.mkdir()
    second = orchestrator(fresh, empty, quix=False)
    status = second.wait_ready()
    step = second.step(status, "requirements")
    assert step["status"] == "done" and "notebook.py" in step["message"], step
    version = second.kernel_output(
        "import importlib.metadata, orch_cowsay\n"
        "print(importlib.metadata.version('orch-cowsay'), orch_cowsay.say('hi'))"
    )
    assert version.strip() == "1.0 the cow says hi"
    assert second.terminate() == 0
