"""Private scratch folders in ``$TMPDIR`` (install work files, marimo's token, the temporary
state folder used when the real one is unusable), named after the orchestrator that owns them,
so leftovers of a killed one can be found and removed.

Invariant: a folder is removed only when the process named in it is gone; several
orchestrators may share one ``$TMPDIR``, and a live one's folders are never touched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

FALLBACK_STATE = "marimo-orchestrator-state"
"""The temporary state folder (jobs/state.py's ``ephemeral_layout``); removed at exit too."""
PREFIXES = ("orchestrator-install", "marimo-token", FALLBACK_STATE)
_OWNED = re.compile(rf"^(?:{'|'.join(PREFIXES)})-(\d+)-[0-9a-z_]+$")


def temp_root() -> Path:
    return Path(os.environ.get("TMPDIR") or "/tmp")


def owned_name(prefix: str) -> str:
    """A fresh folder name for ``prefix`` (one of :data:`PREFIXES`), owned by this process."""
    return f"{prefix}-{os.getpid()}-{os.urandom(8).hex()}"


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(root: Path | None = None) -> list[Path]:
    """Remove the scratch folders whose owner process is gone; returns what was removed."""
    import shutil

    removed: list[Path] = []
    try:
        entries = list(os.scandir(root or temp_root()))
    except OSError:
        return removed
    for entry in entries:
        match = _OWNED.match(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        if int(match.group(1)) == os.getpid() or alive(int(match.group(1))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed
