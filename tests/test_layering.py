"""The layers: ``orchestrator/`` composes, ``jobs/`` and ``proxy/`` are leaves that never import
``orchestrator/`` nor each other. Inside ``jobs/``, a few modules sit below others and never
import them back, and a few (:data:`STANDALONE`) import no module of the project at all. Every
import statement counts, function-local and ``TYPE_CHECKING`` ones included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LEAVES = {"jobs": {"orchestrator", "proxy"}, "proxy": {"orchestrator", "jobs"}}
BELOW = {"jobs.image": {"jobs.ledger"}}
"""module → modules of its own package it must never import (they import it)."""
STANDALONE = ["jobs.atomic"]
"""Modules that import no module of this project (anyone may use them, their helpers reach
:mod:`proxy` through the orchestrator)."""


def imported_packages(source: Path) -> set[tuple[int, str]]:
    """(line, top-level package) for every absolute import in ``source``."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), str(source))):
        if isinstance(node, ast.Import):
            found.update((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaves_import_neither_the_orchestrator_nor_each_other(leaf: str) -> None:
    modules = sorted((ROOT / leaf).rglob("*.py"))
    assert modules, f"no modules under {leaf}/"
    crossings = [
        f"{module.relative_to(ROOT)}:{line} imports {package}"
        for module in modules
        for line, package in sorted(imported_packages(module))
        if package in LEAVES[leaf]
    ]
    assert crossings == []


def imported_modules(source: Path) -> set[str]:
    """Every absolute module ``source`` imports, ``from jobs import ledger`` as ``jobs.ledger``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), str(source))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("module", sorted(BELOW))
def test_lower_modules_never_import_the_ones_above(module: str) -> None:
    source = ROOT / f"{module.replace('.', '/')}.py"
    assert imported_modules(source) & BELOW[module] == set()


@pytest.mark.parametrize("module", STANDALONE)
def test_standalone_modules_import_nothing_of_the_project(module: str) -> None:
    source = ROOT / f"{module.replace('.', '/')}.py"
    found = {package for _, package in imported_packages(source)}
    assert found & {"orchestrator", "jobs", "proxy"} == set()
    assert not any(
        node.level
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.ImportFrom)
    )


def test_the_walk_sees_local_and_type_checking_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from orchestrator.status import StatusBoard\n"
        "def f():\n    import proxy.http\n",
        encoding="utf-8",
    )
    assert {package for _, package in imported_packages(module)} >= {"orchestrator", "proxy"}
