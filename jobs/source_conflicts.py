"""Conflicts between dependency sources, found before any installer runs, and the header pins
that give way to a curated file instead of conflicting with it.

Two sources conflict on a package when both apply to this environment (their markers hold) and
no version satisfies both: two different ``==`` pins, or a pin the other's specifiers exclude
(``SpecifierSet.contains``). Ranges without a pin on either side are left to the installer.

**A header's exact pin gives way to a curated file.** The *curated* sources are the ones people
edit by hand: the requirements file with its includes and constraints, ``pyproject.toml`` and
``uv.lock``. A notebook header's requirement that is exactly one ``name==version`` (no other
clause, no wildcard) and that a curated source's specifier for the same package excludes is not
a conflict: the curated specifier is installed, the header's line is installed by name only
(extras and markers kept), and :func:`yielded` says so in one line per pin ("sales.py pins
pandas==2.2.3; requirements.txt's pandas==2.3.0 is used"). Why exact pins only, from marimo's
own behaviour (checked against marimo 0.25.2, ``MARIMO_MANAGE_SCRIPT_METADATA=true``):

- marimo writes ``name==<installed version>`` into the header for every installed package a cell
  imports, each time the cell is registered (the notebook opened in an editor, a cell run or
  edited: ``Kernel._register_cell`` → ``update_script_metadata``), requirements-file packages
  included, and replaces the same package's existing entry (``uv add --script``). Such a pin
  records what was installed when the notebook was last opened, not a wish: after a change of
  the requirements file it names the old version, and marimo rewrites it to the new one the
  next time the notebook is opened on the new environment;
- marimo writes nothing else (a hand-written range of an imported package is even replaced by
  a pin): a range (``pandas>=2.3``) or a pin with further clauses was written by a person
  (typed into the Packages pane, ``uv add --script``, an editor), and still conflicts, naming
  both files and specifiers.

Two notebooks pinning different versions of a package that no curated file excludes still fail:
no curated file says which one is meant (opening the older notebook re-pins it). A pin the
curated files allow (``pandas==2.2.3`` against ``pandas>=2``) is not given way: it applies.

Invariant: every conflict message names the package, both files and both specifiers, e.g.
"pandas: sales.py asks for pandas==2.2.3, requirements.txt for pandas<2.2"; every yielded pin is
named with its notebook and the curated line that is used instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.markers import UndefinedEnvironmentName
from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from jobs.dist_metadata import canonical
from jobs.sources import Declared


@dataclass(frozen=True)
class Claim:
    """One source's word on one package."""

    origin: str
    requirement: Requirement
    curated: bool = False
    """From a file people curate (requirements, includes, constraints, pyproject, uv.lock)."""

    @property
    def specifier(self) -> str:
        return str(self.requirement.specifier)


@dataclass(frozen=True)
class Yielded:
    """A header's exact pin that a curated source's specifier excludes: the curated one wins."""

    notebook: str
    pin: Requirement
    used: Claim

    def note(self) -> str:
        return (
            f"{self.notebook} pins {self.pin.name}{self.pin.specifier}; {self.used.origin}'s "
            f"{self.used.requirement.name}{self.used.specifier} is used"
        )


def claims(declared: Declared) -> list[Claim]:
    """Every versioned requirement of every source that applies here, in a stable order."""
    found = [
        Claim(declared.label(line.origin), line.requirement, curated=True)
        for line in declared.requirement_lines
    ]
    for header in declared.headers:
        found.extend(Claim(declared.label(header.path), dep) for dep in header.dependencies)
    found.extend(
        Claim("pyproject.toml", dep, curated=True) for dep in declared.project_dependencies
    )
    if declared.lock is not None:
        found.extend(
            Claim("uv.lock", Requirement(f"{name}=={version}"), curated=True)
            for name, version in sorted(declared.lock.pins.items())
        )
    return [claim for claim in found if claim.requirement.specifier and _applies(claim)]


def yielded(declared: Declared) -> tuple[Yielded, ...]:
    """The headers' exact pins that give way to a curated source (see the module docstring)."""
    found = claims(declared)
    curated: dict[str, list[Claim]] = {}
    for claim in found:
        if claim.curated:
            curated.setdefault(canonical(claim.requirement.name), []).append(claim)
    result = []
    for claim in found:
        version = None if claim.curated else exact_pin(claim.requirement)
        if version is None:
            continue
        for other in curated.get(canonical(claim.requirement.name), []):
            if not other.requirement.specifier.contains(version, prereleases=True):
                result.append(Yielded(claim.origin, claim.requirement, other))
                break
    return tuple(result)


def conflicts(declared: Declared) -> tuple[str, ...]:
    """One message per pair of sources that cannot both be satisfied (a yielded pin is not one
    of them: it is not installed)."""
    gone = {(entry.notebook, str(entry.pin)) for entry in yielded(declared)}
    by_name: dict[str, list[Claim]] = {}
    for claim in claims(declared):
        if (claim.origin, str(claim.requirement)) not in gone:
            by_name.setdefault(canonical(claim.requirement.name), []).append(claim)
    messages: list[str] = []
    for name, group in by_name.items():
        for index, first in enumerate(group):
            for second in group[index + 1 :]:
                if first.origin != second.origin and not _compatible(first, second):
                    messages.append(
                        f"{name}: {first.origin} asks for {first.requirement.name}"
                        f"{first.specifier}, {second.origin} for {second.requirement.name}"
                        f"{second.specifier}"
                    )
    return tuple(dict.fromkeys(messages))


def exact_pin(requirement: Requirement) -> Version | None:
    """The version of a requirement that is exactly one ``==`` clause (what marimo writes)."""
    clauses = list(requirement.specifier)
    if len(clauses) != 1 or clauses[0].operator != "==" or clauses[0].version.endswith(".*"):
        return None
    try:
        return Version(clauses[0].version)
    except InvalidVersion:
        return None


def _applies(claim: Claim) -> bool:
    marker = claim.requirement.marker
    if marker is None:
        return True
    try:
        return marker.evaluate({"extra": ""})
    except UndefinedEnvironmentName:
        return True


def _pin(requirement: Requirement) -> Version | None:
    for spec in requirement.specifier:
        if spec.operator in ("==", "===") and not spec.version.endswith(".*"):
            try:
                return Version(spec.version)
            except InvalidVersion:
                return None
    return None


def _compatible(first: Claim, second: Claim) -> bool:
    for pinned, other in ((first, second), (second, first)):
        version = _pin(pinned.requirement)
        if version is not None and not other.requirement.specifier.contains(
            version, prereleases=True
        ):
            return False
    return True
