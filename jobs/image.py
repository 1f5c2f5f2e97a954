"""What the image already provides, so that installs never copy it into the venv.

pip sees the image's packages through ``--system-site-packages`` and treats them as satisfied;
uv does not look beyond the venv. So for uv we drop requirements the image satisfies and
exclude the image's packages from uv's resolution (``--excludes``): they are never fetched, not
even their metadata. A requirement that needs another version than the image's (found by checking
what was installed against the image) gets it, and only then (see reference/installers.md).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jobs.dist_metadata import canonical, distributions
from jobs.layout import StateLayout


def image_distributions() -> dict[str, str]:
    """canonical name → version of every distribution the orchestrator's own Python sees.

    The venv is built from this interpreter with ``--system-site-packages`` (or the layer
    ``.pth``), so these are exactly the packages the venv inherits.
    """
    found: dict[str, str] = {}
    for dist in distributions(sys.path):
        if canonical(dist.name) not in found:
            found[canonical(dist.name)] = dist.version
    return found


@dataclass(frozen=True)
class Plan:
    """The requirements split into what still needs installing and what the image satisfies."""

    lines: list[str]
    satisfied: list[str]
    filterable: bool
    """False when the file uses includes or local paths we do not rewrite: pass it as is."""


_UNFILTERABLE = ("-r", "--requirement", "-c", "--constraint", "-e", "--editable", ".", "/", "file:")


def plan(content: str, image: dict[str, str]) -> Plan:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version

    kept: list[str] = []
    satisfied: list[str] = []
    for raw in content.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(_UNFILTERABLE):
            return Plan(content.splitlines(), [], filterable=False)
        if line.startswith("-"):
            kept.append(line)  # index options and the like apply as they are
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            kept.append(line)  # the installer will name the problem
            continue
        have = image.get(canonical(requirement.name))
        applies = requirement.marker is None or requirement.marker.evaluate()
        if not applies:
            continue
        if have is not None and not requirement.url and not requirement.extras:
            try:
                version = Version(have)
            except InvalidVersion:
                version = None
            if version is not None and requirement.specifier.contains(version, prereleases=True):
                satisfied.append(f"{requirement.name} ({have}, from the image)")
                continue
        kept.append(line)
    return Plan(kept, satisfied, filterable=True)


def excludes(image: dict[str, str], requested: set[str]) -> list[str]:
    """Image packages uv must leave out of its resolution: all but those a requirement names."""
    return sorted(name for name in image if name not in requested)


def conflicts(venv_dists: list[Path], image: dict[str, str], excluded: set[str]) -> set[str]:
    """Excluded image packages that a distribution in the venv needs at another version.

    Those must be resolved after all: a requirement demands them, so the venv gets its own copy.
    """
    return set(needs(venv_dists, image, excluded))


def needs(
    venv_dists: list[Path], image: Mapping[str, str], excluded: set[str]
) -> dict[str, tuple[str, str]]:
    """Like :func:`conflicts`, with the reason: name → (the requirement as written, e.g.
    ``packaging>=999``, and the distribution that has it)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version

    found: dict[str, tuple[str, str]] = {}
    for dist in distributions(str(path) for path in venv_dists):
        for text in dist.requires:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            name = canonical(requirement.name)
            if name not in excluded:
                continue
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            try:
                version = Version(image[name])
            except (InvalidVersion, KeyError):
                continue
            if not requirement.specifier.contains(version, prereleases=True):
                requirement.marker = None
                found[name] = (str(requirement), dist.name)
    return found


def write_excludes(layout: StateLayout) -> None:
    """The image's packages as an exclude list for marimo's Install button (``UV_EXCLUDE``),
    rewritten only when it changed. A package a UI install truly needs at another version than
    the image's then fails to import, and :func:`conflicts` names it; installing it through the
    requirements file gets it."""
    from jobs.atomic import write_atomically

    text = "".join(f"{name}\n" for name in sorted(image_distributions()))
    try:
        if layout.image_excludes.read_text(encoding="utf-8") == text:
            return
    except (OSError, ValueError):
        pass
    write_atomically(layout.image_excludes, text)
