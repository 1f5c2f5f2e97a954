"""Which Python packages are installed, and why: the Environment panel's "Packages" section.

Read from what jobs/ already keeps, never from installer output: the venv's own distributions
(jobs/ledger.py ``scan``: dist-info folders), the files that ask for each package
(jobs/install_summary.py ``asking_files``, plus ``pyproject.toml``'s dependencies), and the
ledger's user set (packages installed with marimo's Install button or a terminal that no file
declares, jobs/user_requirements.py ``offers``).

The answer, JSON-ready (``GET /-/packages``)::

    {"file": "requirements.txt",
     "declared": [{"name": "orch-alpha", "version": "1.0", "for": ["requirements.txt"]}],
     "added_by_you": [{"name": "emoji", "version": "2.14", "in": [], "line": "emoji==2.14",
                       "offer": true}],
     "dependencies": 12, "more": 0}

Invariants:

* ``declared``: every package a requirements file (the top one or an include), ``uv.lock`` or
  ``pyproject.toml`` names, with the version that is installed (the venv's, else the image's;
  ``null`` when neither has it) and those files in ``for``.
* ``added_by_you``: what a user added from the editor: packages only a notebook's PEP 723 header
  declares (marimo's Install button records them there; ``in`` names the notebooks) and the
  ledger's user set (``in`` empty). ``offer`` is true for a ledger package no file names and no
  other such package needs: the one the panel offers to add to the requirements file.
* ``dependencies`` counts the venv's other distributions (what those packages need, pip's
  seed): counted, never listed. Past :data:`LISTED` entries in both lists together, the rest
  are only counted in ``more``: the answer stays small whatever the environment holds.
* Blocking (reads the venv's metadata): callers run it off the event loop.
"""

from __future__ import annotations

from typing import Any

from jobs import ledger as ledger_job
from jobs.layout import StateLayout
from jobs.sources import Declared

LISTED = 200
"""Packages listed at most (declared and added by you together); the rest are counted."""


def listing(layout: StateLayout, declared: Declared) -> dict[str, Any]:
    """The installed packages, split by who asked for them (see the module's invariants)."""
    from jobs import user_requirements

    installed = ledger_job.scan(layout.venv)
    naming = user_requirements.naming(declared)
    headers = {declared.label(header.path) for header in declared.headers}
    image: dict[str, str] | None = None

    def version(name: str) -> str | None:
        nonlocal image
        if name in installed:
            return installed[name]
        if image is None:
            from jobs.image import image_distributions

            image = image_distributions()
        return image.get(name)

    declared_entries: list[dict[str, Any]] = []
    added: list[dict[str, Any]] = []
    for name in sorted(naming):
        files = naming[name]
        curated = [file for file in files if file not in headers]
        if curated:
            declared_entries.append({"name": name, "version": version(name), "for": curated})
        elif name in installed:
            added.append(
                {
                    "name": name,
                    "version": installed[name],
                    "in": files,
                    "line": None,
                    "offer": False,
                }
            )
    for offer in user_requirements.offers(layout, declared):
        if offer.name in naming:
            continue  # listed above, with the files that name it
        added.append(
            {
                "name": offer.name,
                "version": offer.version,
                "in": [],
                "line": offer.line,
                "offer": not offer.needed_by,
            }
        )
    added.sort(key=lambda entry: entry["name"])
    listed = {entry["name"] for entry in declared_entries + added}
    dependencies = sum(1 for name in installed if name not in listed)
    room = max(0, LISTED - len(declared_entries))
    more = max(0, len(declared_entries) - LISTED) + max(0, len(added) - room)
    return {
        "file": declared.label(declared.requirements_file),
        "declared": declared_entries[:LISTED],
        "added_by_you": added[:room],
        "dependencies": dependencies,
        "more": more,
    }
