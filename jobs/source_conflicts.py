"""Conflicts between dependency sources, found before any installer runs.

Two sources conflict on a package when both apply to this environment (their markers hold) and
no version satisfies both: two different ``==`` pins, or a pin the other's specifiers exclude
(``SpecifierSet.contains``). Ranges without a pin on either side are left to the installer.

Invariant: every message names the package, both files and both specifiers, e.g.
"pandas: sales.py asks for pandas==2.2.3, requirements.txt for pandas==2.1.0".
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

    @property
    def specifier(self) -> str:
        return str(self.requirement.specifier)


def claims(declared: Declared) -> list[Claim]:
    """Every versioned requirement of every source, in a stable order."""
    found = [
        Claim(declared.label(line.origin), line.requirement) for line in declared.requirement_lines
    ]
    for header in declared.headers:
        found.extend(Claim(declared.label(header.path), dep) for dep in header.dependencies)
    found.extend(Claim("pyproject.toml", dep) for dep in declared.project_dependencies)
    if declared.lock is not None:
        found.extend(
            Claim("uv.lock", Requirement(f"{name}=={version}"))
            for name, version in sorted(declared.lock.pins.items())
        )
    return [claim for claim in found if claim.requirement.specifier and _applies(claim)]


def conflicts(declared: Declared) -> tuple[str, ...]:
    """One message per pair of sources that cannot both be satisfied."""
    by_name: dict[str, list[Claim]] = {}
    for claim in claims(declared):
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
