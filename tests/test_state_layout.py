"""state_layout.md is the contract: every path the code builds under the state dir is in it."""

from __future__ import annotations

from pathlib import Path

from jobs.layout import StateLayout
from jobs.venv import LAYER_PTH
from tests.support.orchestrator import ROOT


def test_every_owned_path_is_documented() -> None:
    document = (ROOT / "state_layout.md").read_text(encoding="utf-8")
    root = Path("/state")
    layout = StateLayout(root)
    for name, path in layout.all_paths().items():
        relative = path.relative_to(root).as_posix()
        assert f"`{relative}" in document, f"{name} ({relative}) is not in state_layout.md"
    assert LAYER_PTH in document


def test_documented_paths_are_the_ones_the_code_uses() -> None:
    document = (ROOT / "state_layout.md").read_text(encoding="utf-8")
    layout = StateLayout(Path("/state"))
    known = {p.relative_to("/state").as_posix() for p in layout.all_paths().values()}
    table_paths = [
        line.split("|")[1].strip().strip("`").rstrip("/")
        for line in document.splitlines()
        if line.startswith("| `")
    ]
    for documented in table_paths:
        if documented.startswith("venv/lib/"):
            continue  # the layer .pth, checked above
        assert documented in known, f"state_layout.md documents {documented}, which no code uses"
