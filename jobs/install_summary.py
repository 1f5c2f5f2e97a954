"""What an install changed, said for the file that asked: "orch-gamma 3.0 installed for sales.py",
or "numpy 2.1.3 added to notebook.py's dependencies" for a package a header newly declares that
the venv already had at that version (marimo installed it, then recorded it in the header).

The venv is read before and after the installer ran (dist-info folders only: cheap, and the
same reading as the ledger's, jobs/ledger.py ``scan``).

Invariants: only packages a source names directly are named, each with every file that names it
(a notebook's header, the requirements file or the include the line is in, ``uv.lock`` or
``pyproject.toml``); their dependencies are counted, not named; the text is empty when nothing
was added or changed. It never claims more than the venv shows: "added to … dependencies" only
for a package the venv holds after the install.
"""

from __future__ import annotations

from collections.abc import Mapping

from jobs.dist_metadata import canonical
from jobs.sources import Declared

SHOWN = 3
"""Packages named at most; the rest are counted."""


def asking_files(declared: Declared) -> dict[str, list[str]]:
    """canonical name → the files (as messages name them) that ask for it, in source order."""
    asked: dict[str, list[str]] = {}

    def add(name: str, where: str) -> None:
        files = asked.setdefault(canonical(name), [])
        if where not in files:
            files.append(where)

    for entry in declared.requirement_lines:
        if entry.kind != "constraint":
            add(entry.requirement.name, declared.label(entry.origin))
    for header in declared.headers:
        for dep in header.dependencies:
            add(dep.name, declared.label(header.path))
    if declared.lock is not None:
        for name in declared.lock.pins:
            add(name, "uv.lock")
    for dep in declared.project_dependencies:
        add(dep.name, "pyproject.toml")
    return asked


def summary(
    before: Mapping[str, str],
    after: Mapping[str, str],
    declared: Declared,
    added: Mapping[str, list[str]] | None = None,
) -> str:
    """``orch-gamma 3.0 installed for notebook.py, orch-alpha 1.0 installed for extra.txt (and
    1 more package)``; empty when nothing was added or changed. ``added``: canonical name → the
    notebooks whose header newly declares it (jobs/declared_install.py ``header_additions``);
    those the install did not change are said as ``numpy 2.1.3 added to notebook.py's
    dependencies``."""
    new = {name: version for name, version in after.items() if before.get(name) != version}
    asked = asking_files(declared)
    named = [
        f"{name} {new[name]} installed for {' and '.join(asked[name])}"
        for name in sorted(new)
        if name in asked
    ]
    recorded = [
        f"{name} {after[name]} added to {' and '.join(files)}'s dependencies"
        for name, files in sorted((added or {}).items())
        if name not in new and name in after
    ]
    said_all = recorded + named
    if not said_all:
        return ""
    rest = len(recorded) + len(new) - len(said_all[:SHOWN])
    said = ", ".join(said_all[:SHOWN])
    if rest:
        said += f" (and {rest} more package{'s' if rest > 1 else ''})"
    return said
