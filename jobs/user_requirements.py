"""Offering the packages a user installed (a terminal, marimo's Install button unrecorded) for
the requirements file, so that Git learns of them and a new deployment installs them.

The ledger (jobs/ledger.py) finds those packages: its ``user`` set. :func:`offers` lists them
with what already names them; :func:`add` appends one, as ``name==version``, to the top
requirements file. What happens next is the pipeline's as for any edit: the declared-sources
watcher sees the file change and the requirements step runs (it installs nothing new, the
package is there), after which the ledger holds the package in its baseline, no longer in its
user set; notebook sync pushes the file like any edit.

Invariants:

* Only a package of the ledger's user set is ever written, under the ledger's name and at the
  ledger's version: the caller's text picks a package, it is never written itself.
* A package a requirement line of the requirements file or its includes already names (a
  constraint names nothing) is not added again (:class:`AlreadyDeclared`).
* The write appends to the top file (``--requirements``; of an include chain, the file that
  includes the others), keeps every byte that was there and ends with a newline (the file's
  own line ending); it is created when missing, keeps its mode, and is replaced atomically
  (jobs/atomic.py): a reader sees the old file or the new one. A symbolic link is followed:
  its target is the file written.
* Adds are serialised within the process (one lock), so two at once both land.
* Blocking (reads the venv's metadata, fsyncs): callers run it off the event loop.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs import ledger as ledger_job
from jobs.atomic import write_atomically
from jobs.dist_metadata import canonical, distributions
from jobs.layout import StateLayout
from jobs.sources import Declared

_writing = threading.Lock()


class NotOffered(LookupError):
    """The package is not among the user's packages (404)."""

    status = 404


class AlreadyDeclared(ValueError):
    """The requirements file already names the package (409)."""

    status = 409


@dataclass(frozen=True)
class Offer:
    """One package of the ledger's user set."""

    name: str
    version: str
    declared_in: tuple[str, ...]
    """The sources that name it already (``requirements.txt``, ``sales.py``, ``uv.lock``…),
    relative to the notebook folder; empty when none does."""
    needed_by: tuple[str, ...]
    """Other packages of the user set that require it (directly or not): adding those brings
    it along."""

    @property
    def line(self) -> str:
        return f"{self.name}=={self.version}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "line": self.line,
            "declared_in": list(self.declared_in),
            "needed_by": list(self.needed_by),
        }


def offers(layout: StateLayout, declared: Declared) -> list[Offer]:
    """The ledger's user packages, by name, each with the sources naming it and the user
    packages needing it."""
    user = ledger_job.Ledger.load(layout.ledger).user
    named = naming(declared)
    needs = _needs(layout.venv, set(user))
    return [
        Offer(
            name=name,
            version=version,
            declared_in=tuple(named.get(name, ())),
            needed_by=tuple(sorted(other for other, wants in needs.items() if name in wants)),
        )
        for name, version in sorted(user.items())
    ]


def add(layout: StateLayout, read_declared: Callable[[], Declared], asked: str) -> Offer:
    """Append ``asked``'s ``name==version`` to the requirements file; returns what was added.

    ``asked`` is compared by its canonical name with the ledger's user set. Raises
    :class:`NotOffered` or :class:`AlreadyDeclared`; an ``OSError`` when the file cannot be
    read or written (then it is as it was)."""
    with _writing:
        declared = read_declared()
        wanted = canonical(asked.strip())
        found = {offer.name: offer for offer in offers(layout, declared)}.get(wanted)
        if found is None:
            raise NotOffered(
                f"{asked.strip()} is not among the packages you installed (the ledger's user "
                "packages): only those can be added to "
                f"{declared.label(declared.requirements_file)}"
            )
        in_file = _in_requirements(declared, wanted)
        if in_file:
            raise AlreadyDeclared(f"{found.name} is already in {', '.join(in_file)}")
        append_line(declared.requirements_file, found.line)
        return found


def append_line(path: Path, line: str) -> None:
    """``line`` appended to ``path`` (see the module's invariants on how)."""
    target = Path(os.path.realpath(path))
    try:
        content = target.read_bytes()
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        content, mode = b"", 0o644
    ending = b"\r\n" if b"\r\n" in content else b"\n"
    if content and not content.endswith(b"\n"):
        content += ending
    write_atomically(target, content + line.encode("utf-8") + ending, mode)


def naming(declared: Declared) -> dict[str, list[str]]:
    """canonical name → the sources that ask for it (the names
    :func:`jobs.declared_install.declared_names` counts as ours): the files an install names
    (:func:`jobs.install_summary.asking_files`) and ``pyproject.toml``'s dependencies."""
    from jobs.install_summary import asking_files

    naming = asking_files(declared)
    for dep in declared.project_dependencies:
        sources = naming.setdefault(canonical(dep.name), [])
        if "pyproject.toml" not in sources:
            sources.append("pyproject.toml")
    return naming


def _in_requirements(declared: Declared, name: str) -> list[str]:
    """The requirements files (the top one, its includes) with a line naming ``name``."""
    found: list[str] = []
    for entry in declared.requirement_lines:
        label = declared.label(entry.origin)
        if (
            entry.kind != "constraint"
            and canonical(entry.requirement.name) == name
            and label not in found
        ):
            found.append(label)
    return found


def _needs(venv: Path, user: set[str]) -> dict[str, set[str]]:
    """user package → the other user packages it requires, following ``Requires-Dist``
    through every distribution of the venv (markers and extras notwithstanding, as the
    ledger's baseline counts them)."""
    paths = [str(path) for path in ledger_job.site_packages(venv)]
    found = {canonical(dist.name): dist for dist in distributions(paths)} if paths else {}
    direct: dict[str, set[str]] = {}
    for name, dist in found.items():
        direct[name] = set()
        for requirement in dist.requires:
            dep = _requirement_name(requirement)
            if dep is not None and dep in found:
                direct[name].add(dep)
    needs: dict[str, set[str]] = {}
    for name in user:
        seen: set[str] = set()
        todo = list(direct.get(name, ()))
        while todo:
            dep = todo.pop()
            if dep not in seen and dep != name:
                seen.add(dep)
                todo.extend(direct.get(dep, ()))
        needs[name] = seen & user
    return needs


def _requirement_name(requirement: str) -> str | None:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return canonical(match.group(1)) if match else None
