"""What the ``requirements`` step installs and when it may skip: every declared source.

jobs/sources.py reads the sources (the requirements file and its includes, ``UV_CONFIG_FILE``,
the notebooks' PEP 723 headers, ``pyproject.toml`` with ``uv.lock``); this module turns them
into the installer's input and into the fingerprint the manifest records.

Invariants:
- the fingerprint covers :attr:`Declared.digest` (the content of every file that decides what
  gets installed, and nothing else), the interpreter, the installer, the index settings and the
  image's packages; it is a hash only (index settings may hold credentials);
- "nothing to install" means nothing is declared anywhere: no requirements file, no header
  dependency but a bare ``marimo``, no ``pyproject.toml`` dependency and no ``uv.lock``;
- for uv, what the image already provides is left out of every source's lines (jobs/image.py's
  filter, line by line for the headers and the lock); the requirements file itself is filtered
  as a whole exactly as before, and passed with ``-r`` when it cannot be (it has includes);
- conflicts between sources (jobs/source_conflicts.py) fail before any installer runs; a
  header's exact pin that gives way to a curated file is not a conflict, and :func:`notes`
  says which one in one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from jobs import image as image_job
from jobs.direct_references import project_name
from jobs.dist_metadata import canonical
from jobs.errors import PermanentError
from jobs.install_input import declared_lines
from jobs.installers import INDEX_VARIABLES, Installer
from jobs.interpreter import Interpreter
from jobs.layout import StateLayout
from jobs.manifest import Manifest
from jobs.script_headers import HeaderCache
from jobs.source_conflicts import conflicts, yielded
from jobs.sources import Declared, collect, is_bare_marimo

INPUT_NAME = "declared-requirements.txt"
NAMES_NAME = "requested-names.txt"


def gather(
    notebook_dir: Path,
    requirements: Path,
    env: Mapping[str, str],
    cache: HeaderCache,
    excluded: Iterable[Path] = (),
) -> Declared:
    """Every source, with ``requires-python`` checked against the venv's Python (the venv is
    built from this interpreter). Blocking: reads files."""
    return collect(
        notebook_dir, requirements, env, platform.python_version(), cache=cache, excluded=excluded
    )


def fingerprint(
    declared: Declared, installer: Installer, env: Mapping[str, str], image: Mapping[str, str]
) -> str:
    interpreter = Interpreter.current()
    material = {
        "declared": declared.digest,
        "python": [interpreter.version, interpreter.base_executable],
        "installer": installer.name,
        "index": {name: env.get(name) for name in INDEX_VARIABLES},
        "image": sorted(image.items()),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def nothing_declared(declared: Declared) -> bool:
    return (
        not declared.requirements_file.exists()
        and not any(_header_wants(header.dependencies) for header in declared.headers)
        and not any(not is_bare_marimo(dep) for dep in declared.project_dependencies)
        and declared.lock is None
    )


def _header_wants(dependencies: Iterable[Requirement]) -> bool:
    return any(not is_bare_marimo(dep) for dep in dependencies)


def declared_names(declared: Declared) -> set[str]:
    """Canonical names every source asks for (constraints name nothing): the ledger's view of
    what is ours, a header's recorded Install-button packages included."""
    names = {
        canonical(entry.requirement.name)
        for entry in declared.requirement_lines
        if entry.kind != "constraint"
    }
    names |= {canonical(dep.name) for header in declared.headers for dep in header.dependencies}
    names |= {canonical(dep.name) for dep in declared.project_dependencies}
    if declared.lock is not None:
        names |= set(declared.lock.pins)
    # A wheel or a repository named by path or URL is ours too (never taken for the user's).
    for reference in declared.references:
        if (name := project_name(reference, declared.install_folder)) is not None:
            names.add(canonical(name))
    return names


def describe(declared: Declared) -> str:
    """The sources in messages: ``requirements.txt``, ``sales.py and uv.lock``…"""
    names = [declared.requirements_file.name] if declared.requirements_file.exists() else []
    names += [declared.label(h.path) for h in declared.headers if _header_wants(h.dependencies)]
    if declared.lock is not None:
        names.append("uv.lock")
    elif declared.project_dependencies:
        names.append("pyproject.toml")
    if not names:
        return "the declared dependencies"
    if len(names) > 3:
        return f"{', '.join(names[:2])} and {len(names) - 2} more sources"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def check(declared: Declared) -> None:
    """Conflicting sources fail the step, naming both files and both specifiers."""
    found = conflicts(declared)
    if found:
        raise PermanentError(
            f"the declared dependencies conflict: {'; '.join(found)}; fix either file "
            "(marimo keeps running on the last environment that installed)"
        )


NOTED = 3
"""Pins given way named at most in :func:`notes`; the rest are counted."""


def notes(declared: Declared) -> str:
    """The headers' pins that give way to a curated file, in one line ("sales.py pins
    pandas==2.2.3; requirements.txt's pandas==2.3.0 is used"); empty when there is none."""
    found = [entry.note() for entry in yielded(declared)]
    said = "; ".join(found[:NOTED])
    if len(found) > NOTED:
        said += f" (and {len(found) - NOTED} more header pins give way likewise)"
    return said


def header_additions(before: Declared, after: Declared) -> dict[str, list[str]]:
    """canonical name → the notebooks whose header declares it in ``after`` when no source
    declared it in ``before``: a line marimo wrote after an Install-button install (or one a
    person added). A package some source declared already is left out: marimo pins every
    installed package a notebook imports when the notebook is opened, which adds nothing."""
    had = declared_names(before)
    added: dict[str, list[str]] = {}
    for header in after.headers:
        name = after.label(header.path)
        for dep in header.dependencies:
            key = canonical(dep.name)
            if is_bare_marimo(dep) or key in had:
                continue
            files = added.setdefault(key, [])
            if name not in files:
                files.append(name)
    return added


def changes(before: Declared, after: Declared) -> str:
    """What changed between two reads, for the log: "sales.py's dependencies changed"."""
    old, new = dict(before.parts), dict(after.parts)
    said = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "absent") == new.get(key, "absent"):
            continue
        role, _, name = key.partition(":")
        said.append(f"{name}'s dependencies" if role == "header" else name)
    if not said:
        return "the declared dependencies changed"
    return f"{', '.join(said)} changed"


def is_installed(
    declared: Declared, layout: StateLayout, installer: Installer, env: Mapping[str, str]
) -> bool:
    """True when the manifest records a finished install of exactly these sources (same
    fingerprint) and none is under way: what a replica may use without building."""
    manifest = Manifest.load(layout.manifest)
    if manifest.pending_install is not None:
        return False
    if nothing_declared(declared):
        return True
    wanted = fingerprint(declared, installer, env, image_job.image_distributions())
    return manifest.install is not None and manifest.install.fingerprint == wanted


@dataclass(frozen=True)
class InstallInput:
    """The installer's input, written into a work folder."""

    path: Path
    """One requirements file for ``-r``."""
    filtered: bool
    """The image's packages are filtered out of every line (uv then gets ``--excludes``)."""
    satisfied: tuple[str, ...]
    """Requirements the image satisfies, left out."""
    requested: frozenset[str]
    """Canonical names of what is left to install (the image's other packages are excluded)."""
    names_file: Path
    """Every name any source asks for, one a line: the ledger's view of what is ours."""
    empty: bool
    """No requirement is left to install."""


def write_input(
    declared: Declared,
    image: Mapping[str, str],
    uv_bin: str,
    env: Mapping[str, str],
    workdir: Path,
    filter_image: bool,
) -> InstallInput:
    """Write the installer's input into ``workdir``. Blocking: a uv project's lock is exported
    (a stale lock is a :class:`PermanentError` naming both files)."""
    lines: list[str] = [f"# Every declared dependency (written by {__name__})"]
    satisfied: list[str] = []
    filtered = filter_image
    top = declared.requirements_file
    if top.exists():
        content = top.read_text(encoding="utf-8", errors="replace")
        plan = image_job.plan(content, dict(image)) if filter_image else None
        if plan is not None and plan.filterable:
            lines += plan.lines
            satisfied += plan.satisfied
        else:
            lines.append(f"-r {top}")
            filtered = False
    for line in declared_lines(declared, uv_bin, env):
        plan = image_job.plan(line, dict(image)) if filter_image else None
        if plan is None or not plan.filterable:
            lines.append(line)
        else:
            lines += plan.lines
            satisfied += plan.satisfied
    requested: set[str] = set()
    for line in lines:
        text = line.split(" #", 1)[0].strip()
        if text and not text.startswith(("#", "-")):
            with contextlib.suppress(InvalidRequirement):
                requested.add(canonical(Requirement(text).name))
    names = requested | declared_names(declared)
    path, names_file = workdir / INPUT_NAME, workdir / NAMES_NAME
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    names_file.write_text("".join(f"{name}\n" for name in sorted(names)), encoding="utf-8")
    wants = [line for line in lines[1:] if not line.startswith("-") or line.startswith("-r ")]
    wants += [line for line in lines[1:] if line.startswith("-e ")]
    return InstallInput(
        path, filtered, tuple(satisfied), frozenset(requested), names_file, empty=not wants
    )
