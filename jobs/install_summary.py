"""What an install changed, said for the file that asked: "orch-gamma 3.0 installed for sales.py".

The venv is read before and after the installer ran (dist-info folders only: cheap, and the
same reading as the ledger's, jobs/ledger.py ``scan``).

Invariants: only packages a source names directly are named, each with every file that names it
(a notebook's header, the requirements file or the include the line is in, ``uv.lock`` or
``pyproject.toml``); their dependencies are counted, not named; the text is empty when nothing
was added or changed. It never claims more than the venv shows.
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


def summary(before: Mapping[str, str], after: Mapping[str, str], declared: Declared) -> str:
    """``orch-gamma 3.0 installed for notebook.py, orch-alpha 1.0 installed for extra.txt (and
    1 more package)``; empty when nothing was added or changed."""
    new = {name: version for name, version in after.items() if before.get(name) != version}
    asked = asking_files(declared)
    named = [
        f"{name} {new[name]} installed for {' and '.join(asked[name])}"
        for name in sorted(new)
        if name in asked
    ]
    if not named:
        return ""
    rest = len(new) - len(named[:SHOWN])
    said = ", ".join(named[:SHOWN])
    if rest:
        said += f" (and {rest} more package{'s' if rest > 1 else ''})"
    return said
