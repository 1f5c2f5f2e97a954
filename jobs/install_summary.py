"""What an install changed, said for the file that asked: "orch-gamma 3.0 installed for sales.py",
or "numpy 2.1.3 added to notebook.py's dependencies" for a package a header newly declares that
the venv already had at that version (marimo installed it, then recorded it in the header); and
the same, structured (:func:`changes`), for ``/-/status`` (the requirements step's ``changes``)
and the Environment panel, which says it in its own words and never reads installer output.

The venv is read before and after the installer ran (dist-info folders only: cheap, and the
same reading as the ledger's, jobs/ledger.py ``scan``): what changed is what the venv shows,
whichever installer ran (uv's "+ a==1.0" and pip's "Successfully installed a-1.0" alike).

Invariants: only packages a source names directly are named in the text, each with every file
that names it (a notebook's header, the requirements file or the include the line is in,
``uv.lock`` or ``pyproject.toml``); their dependencies are counted, not named; the text is empty
when nothing was added or changed. Neither claims more than the venv shows: "added to …
dependencies" only for a package the venv holds after the install. The structured form lists at
most :data:`LISTED` packages (those a source names first) and counts the rest in ``more``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobs.dist_metadata import canonical
from jobs.sources import Declared

SHOWN = 3
"""Packages named at most; the rest are counted."""

LISTED = 40
"""Packages listed at most in :func:`changes` (a status published at every step change stays
small); the rest are counted."""


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


def changes(
    before: Mapping[str, str],
    after: Mapping[str, str],
    declared: Declared,
    added: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    """What the install changed in the venv, JSON-ready::

        {"added": [{"name": "orch-gamma", "version": "3.0", "for": ["requirements.txt"]}],
         "changed": [{"name": "orch-beta", "from": "1.0", "to": "2.0", "for": [...]}],
         "removed": [{"name": "packaging", "version": "24.0", "for": []}],
         "recorded": [{"name": "numpy", "version": "2.1.3", "for": ["notebook.py"]}],
         "more": 0}

    ``for``: the files that name the package (empty for a dependency); ``changed`` may be a
    downgrade; ``recorded``: packages a header newly declares that the venv already held at that
    version (``added`` as for :func:`summary`). Each list is sorted, packages a source names
    first; past :data:`LISTED` entries in all, the rest are only counted in ``more``."""
    asked = asking_files(declared)

    def order(name: str) -> tuple[bool, str]:
        return name not in asked, name

    entries: list[tuple[tuple[bool, str], str, dict[str, Any]]] = []
    for name in set(before) | set(after):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        files = list(asked.get(name, []))
        if old is None and new is not None:
            entries.append((order(name), "added", {"name": name, "version": new, "for": files}))
        elif old is not None and new is None:
            entries.append((order(name), "removed", {"name": name, "version": old, "for": files}))
        else:
            entry = {"name": name, "from": old, "to": new, "for": files}
            entries.append((order(name), "changed", entry))
    for name, files in (added or {}).items():
        if name in after and before.get(name) == after[name]:
            entry = {"name": name, "version": after[name], "for": list(files)}
            entries.append(((False, name), "recorded", entry))
    entries.sort(key=lambda item: item[0])
    result: dict[str, Any] = {"added": [], "changed": [], "removed": [], "recorded": []}
    for _, kind, entry in entries[:LISTED]:
        result[kind].append(entry)
    result["more"] = max(0, len(entries) - LISTED)
    return result


def no_changes() -> dict[str, Any]:
    """:func:`changes` of an install that changed nothing (or was skipped)."""
    return {"added": [], "changed": [], "removed": [], "recorded": [], "more": 0}
