"""The ledger of packages a user installed into the venv (marimo's Install button, a terminal).

They are found, not announced: the venv's own distributions minus the *baseline*. The baseline
is exactly what the orchestrator's installs asked for: the requirements file's packages, their
dependencies as installed in the venv (``Requires-Dist``, followed through the venv), and pip
(with setuptools and wheel, which venv seeding may add). It is recorded after every install,
*also one that failed half-way*, and it only grows for one venv (a requirement removed from the
file stays ours: it is never taken for the user's); a rebuilt venv starts it afresh. Whatever
the ledger file says, the baseline the current requirements file implies is always part of it,
so a lost or corrupt ledger never turns requirements or pip into "user" packages.

The ledger is kept on the state volume so that a rebuilt venv gets the user's packages back,
at the versions they had. A package the user uninstalls leaves the venv, so the next sync drops
it: an uninstall is respected.

Invariants: a sync only drops packages from a venv the manifest says is complete (a half-built
venv would look like "the user uninstalled everything") and that the ledger describes
(``venv_id`` equals the manifest's ``created_at``); after a rebuild, until the user's packages
are restored, it only adds. Before a venv is deleted, :func:`rescue` reads its user packages
from its own files whatever the manifest and the ledger say, so they are never lost while
their files exist. The file is replaced atomically.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jobs.atomic import write_atomically
from jobs.dist_metadata import canonical, distributions
from jobs.layout import StateLayout
from jobs.manifest import Manifest, read_object


def site_packages(venv: Path) -> list[Path]:
    return sorted(venv.glob("lib/python*/site-packages"))


def scan(venv: Path) -> dict[str, str]:
    """canonical name → version of the distributions inside the venv itself (not the image's).

    Reads dist-info folders from disk: works even when the venv's interpreter no longer runs.
    """
    found: dict[str, str] = {}
    paths = [str(path) for path in site_packages(venv)]
    if not paths:
        return found
    for dist in distributions(paths):
        found[canonical(dist.name)] = dist.version
    return found


@dataclass
class Ledger:
    baseline: dict[str, str] = field(default_factory=dict)
    user: dict[str, str] = field(default_factory=dict)
    updated_at: float = 0.0
    venv_id: float = 0.0
    """``created_at`` of the venv the user set was last reconciled with."""

    @classmethod
    def load(cls, path: Path) -> Ledger:
        """The ledger on disk; unreadable or wrong-shaped parts are read as empty, never raised."""
        raw = read_object(path)
        if raw is None:
            return cls()
        return cls(
            baseline=_packages(raw.get("baseline")),
            user=_packages(raw.get("user")),
            updated_at=_number(raw.get("updated_at")),
            venv_id=_number(raw.get("venv_id")),
        )

    def save(self, path: Path) -> None:
        self.updated_at = time.time()
        write_atomically(path, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


def _packages(raw: object) -> dict[str, str]:
    if not isinstance(raw, dict):
        return {}
    return {
        canonical(name): version
        for name, version in raw.items()
        if isinstance(name, str) and isinstance(version, str)
    }


def _number(raw: object) -> float:
    return float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else 0.0


def _venv_id(layout: StateLayout) -> float | None:
    """The complete venv's identity, or ``None`` while there is no complete venv."""
    record = Manifest.load(layout.manifest).venv
    return record.created_at if record is not None and layout.venv.is_dir() else None


SEED = frozenset({"pip", "setuptools", "wheel"})
"""What creating a venv puts in it: ours, never the user's."""


def requested_names(requirements: Path | None) -> set[str]:
    """Canonical names the requirements file asks for (empty when it is missing or unreadable;
    options name nothing, nor do paths and URLs unless they tell their project's name: ``name
    @ url``, ``#egg=name``, a wheel's or an sdist's file name, a local folder's
    ``pyproject.toml``)."""
    if requirements is None:
        return set()
    try:
        text = requirements.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    from packaging.requirements import InvalidRequirement, Requirement

    from jobs.direct_references import parse, project_name

    names: set[str] = set()
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        reference = parse(line, requirements.name, None)  # a wheel's file name names it
        if reference is not None:
            if (name := project_name(reference, requirements.parent)) is not None:
                names.add(canonical(name))
            continue
        if line.startswith("-"):
            continue
        try:
            names.add(canonical(Requirement(line).name))
        except InvalidRequirement:
            continue
    return names


def asked_for(venv: Path, names: set[str]) -> dict[str, str]:
    """The venv's distributions among ``names`` and, recursively, their dependencies (every
    ``Requires-Dist`` found in the venv, markers and extras notwithstanding: over-counting
    only means a package is not restored after a rebuild, and the requirements bring it)."""
    paths = [str(path) for path in site_packages(venv)]
    found = {canonical(dist.name): dist for dist in distributions(paths)} if paths else {}
    wanted = [name for name in names | SEED if name in found]
    closure: dict[str, str] = {}
    while wanted:
        name = wanted.pop()
        if name in closure:
            continue
        dist = found[name]
        closure[name] = dist.version
        for requirement in dist.requires:
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
            if match and (dep := canonical(match.group(1))) in found and dep not in closure:
                wanted.append(dep)
    return closure


def _user_in(
    layout: StateLayout,
    ledger: Ledger,
    requirements: Path | None,
    image: Mapping[str, str],
    declared: Iterable[str] = (),
) -> dict[str, str]:
    """The venv's distributions that are neither ours nor copies of the image's packages."""
    current = scan(layout.venv)
    names = requested_names(requirements) | {canonical(name) for name in declared}
    ours = {**ledger.baseline, **asked_for(layout.venv, names)}
    return {
        name: version for name, version in current.items() if name not in ours and name not in image
    }


def sync(
    layout: StateLayout,
    requirements: Path | None = None,
    image: Mapping[str, str] | None = None,
    declared: Iterable[str] = (),
) -> Ledger:
    """Bring the ledger in line with the venv as it is now; returns it (unchanged if unsafe).

    Packages the image provides are never the user's: restoring a copy of one would shadow the
    image's (see reference/installers.md); a UI install brings such copies only as dependencies.
    ``declared``: names every source declares besides ``requirements`` (a notebook's header that
    marimo just recorded an Install-button package in): ours, never the user's.
    """
    ledger = Ledger.load(layout.ledger)
    venv_id = _venv_id(layout)
    if venv_id is None:
        return ledger
    user = _user_in(layout, ledger, requirements, _image(image), declared)
    if venv_id != ledger.venv_id:
        user = {**ledger.user, **user}  # a rebuilt venv not yet restored: add, never drop
    if user != ledger.user:
        ledger.user = user
        ledger.save(layout.ledger)
    return ledger


def rescue(layout: StateLayout, requirements: Path | None) -> Ledger:
    """Before a venv is deleted: add its user packages to the ledger, read from its own files
    whatever the manifest and the ledger say (both may be lost); never drops anything."""
    ledger = Ledger.load(layout.ledger)
    if not layout.venv.is_dir():
        return ledger
    found = _user_in(layout, ledger, requirements, _image(None))
    user = {**ledger.user, **found}
    if user != ledger.user:
        ledger.user = user
        ledger.save(layout.ledger)
    return ledger


def reset_baseline(layout: StateLayout) -> None:
    """A new, empty venv: nothing in it was asked for yet but its seed."""
    ledger = Ledger.load(layout.ledger)
    ledger.baseline = asked_for(layout.venv, set())
    ledger.save(layout.ledger)


def record_baseline(layout: StateLayout, requirements: Path | None) -> Ledger:
    """After one of the orchestrator's installs, finished or not: what it asked for joins the
    baseline (and leaves the user's set: it is ours now)."""
    ledger = Ledger.load(layout.ledger)
    ours = asked_for(layout.venv, requested_names(requirements))
    ledger.baseline = {**ledger.baseline, **ours}
    ledger.user = {name: v for name, v in ledger.user.items() if name not in ours}
    ledger.save(layout.ledger)
    return ledger


def unrequested_image_copies(
    layout: StateLayout, requirements: Path | None, image: Mapping[str, str]
) -> dict[str, str]:
    """Copies of image packages our installs once put in the venv (a pin, a requirement's
    dependency) that the requirements no longer ask for: name → the venv's version. Removing
    them lets the image's version apply again, as it does in a fresh venv."""
    ledger = Ledger.load(layout.ledger)
    wanted = asked_for(layout.venv, requested_names(requirements))
    current = scan(layout.venv)
    return {
        name: version
        for name, version in current.items()
        if name in image and name in ledger.baseline and name not in wanted and name not in SEED
    }


def _image(image: Mapping[str, str] | None) -> Mapping[str, str]:
    if image is not None:
        return image
    from jobs.image import image_distributions

    return image_distributions()


def mark_restored(layout: StateLayout) -> None:
    """The user's packages are back in this venv: from now on an absence is an uninstall."""
    ledger = Ledger.load(layout.ledger)
    venv_id = _venv_id(layout)
    if venv_id is not None and ledger.venv_id != venv_id:
        ledger.venv_id = venv_id
        ledger.save(layout.ledger)


def missing_user_packages(layout: StateLayout) -> list[str]:
    """``name==version`` pins of ledger packages the venv lacks (after a rebuild)."""
    ledger = Ledger.load(layout.ledger)
    current = scan(layout.venv)
    return [
        f"{name}=={version}" for name, version in sorted(ledger.user.items()) if name not in current
    ]


def site_packages_mtime(layout: StateLayout) -> float:
    """Changes whenever a distribution is added or removed: cheap to poll."""
    try:
        return max((path.stat().st_mtime for path in site_packages(layout.venv)), default=0.0)
    except OSError:
        return 0.0
