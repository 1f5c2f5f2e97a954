"""The project as it is at a git revision, exported for a benchmark to run side by side.

One helper for every script that compares revisions (bench/proxy.py's ``--baseline``,
bench/proxy_paired.py, bench/spawn_time.py), so each exports the same way.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def export(revision: str, work: Path, *paths: str) -> Path:
    """A new directory under ``work`` holding ``paths`` (everything when none is given) as they
    are at ``revision``; ``.`` is the working tree's tracked files as they are now."""
    target = work / ("tree" if revision == "." else revision.replace("/", "_"))
    target.mkdir()
    if revision == ".":
        listed = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "--", *paths],
            check=True,
            capture_output=True,
        ).stdout
        for name in filter(None, listed.decode().split("\0")):
            source = ROOT / name
            if source.is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)
        return target
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, *paths], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target
