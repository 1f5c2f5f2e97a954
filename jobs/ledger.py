"""The ledger of packages a user installed into the venv (marimo's Install button, a terminal).

They are found, not announced: the venv's own distributions minus the *baseline*, the set the
venv held right after the orchestrator's last install (pip seed + requirements). The ledger is
kept on the state volume so that a rebuilt venv gets the user's packages back, at the versions
they had. A package the user uninstalls leaves the venv, so the next sync drops it: an uninstall
is respected.

Invariants: a sync only reads a venv the manifest says is complete (a half-built venv would look
like "the user uninstalled everything"); it drops a package only when the ledger describes this
very venv (``venv_id`` equals the manifest's ``created_at``): after a rebuild, until the user's
packages are restored, it only adds. The file is replaced atomically.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jobs.dist_metadata import distributions
from jobs.layout import StateLayout
from jobs.manifest import Manifest, write_atomically


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


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
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                baseline=dict(raw.get("baseline") or {}),
                user=dict(raw.get("user") or {}),
                updated_at=float(raw.get("updated_at") or 0.0),
                venv_id=float(raw.get("venv_id") or 0.0),
            )
        except (OSError, ValueError, TypeError, AttributeError):
            return cls()

    def save(self, path: Path) -> None:
        self.updated_at = time.time()
        write_atomically(path, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


def _venv_id(layout: StateLayout) -> float | None:
    """The complete venv's identity, or ``None`` while there is no complete venv."""
    record = Manifest.load(layout.manifest).venv
    return record.created_at if record is not None and layout.venv.is_dir() else None


def sync(layout: StateLayout) -> Ledger:
    """Bring the ledger in line with the venv as it is now; returns it (unchanged if unsafe)."""
    ledger = Ledger.load(layout.ledger)
    venv_id = _venv_id(layout)
    if venv_id is None:
        return ledger
    current = scan(layout.venv)
    user = {name: version for name, version in current.items() if name not in ledger.baseline}
    if venv_id != ledger.venv_id:
        user = {**ledger.user, **user}  # a rebuilt venv not yet restored: add, never drop
    if user != ledger.user:
        ledger.user = user
        ledger.save(layout.ledger)
    return ledger


def record_baseline(layout: StateLayout) -> Ledger:
    """After the orchestrator's own install: what is in the venv now is not the user's doing,
    except packages the ledger already attributes to the user."""
    ledger = Ledger.load(layout.ledger)
    current = scan(layout.venv)
    ledger.baseline = {
        name: version for name, version in current.items() if name not in ledger.user
    }
    ledger.save(layout.ledger)
    return ledger


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
