"""The manifest: what the venv is and what was last installed into it *successfully*.

Invariants: the file is replaced atomically (:func:`jobs.atomic.write_atomically`: temporary
file, fsync, rename, fsync the directory), so a reader sees the old or the new content, never a
mix. ``install`` is recorded only after the installer exited 0, and cleared before an install
starts, so a crash mid-install is never mistaken for success. A missing or unreadable manifest
means "nothing is known": the jobs then verify or rebuild, they never trust it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from jobs.atomic import write_atomically


class VenvRecord(NamedTuple):
    python_version: str
    base_executable: str
    created_at: float


class InstallRecord(NamedTuple):
    fingerprint: str
    installer: str
    finished_at: float
    duration: float


class Manifest:
    """The manifest's content; the jobs change it in place, then :meth:`save` it.

    ``pending_install`` is set while an install runs: still set at the next start means it was
    interrupted. ``history`` keeps durations the page uses to estimate progress.
    """

    __slots__ = ("history", "install", "pending_install", "venv")

    def __init__(
        self,
        venv: VenvRecord | None = None,
        install: InstallRecord | None = None,
        pending_install: str | None = None,
        history: dict[str, Any] | None = None,
    ) -> None:
        self.venv = venv
        self.install = install
        self.pending_install = pending_install
        self.history: dict[str, Any] = {} if history is None else history

    def as_json(self) -> dict[str, Any]:
        return {
            "venv": None if self.venv is None else self.venv._asdict(),
            "install": None if self.install is None else self.install._asdict(),
            "pending_install": self.pending_install,
            "history": self.history,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifest) and self.as_json() == other.as_json()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Manifest({self.as_json()!r})"

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """The manifest on disk; anything unreadable or wrong-shaped (not JSON, not an object,
        a record with missing or mistyped fields) is read as "nothing known", never raised."""
        raw = read_object(path)
        if raw is None:
            return cls()
        history = raw.get("history")
        pending = raw.get("pending_install")
        return cls(
            venv=_record(VenvRecord, raw.get("venv")),
            install=_record(InstallRecord, raw.get("install")),
            pending_install=pending if isinstance(pending, str) else None,
            history={
                str(key): value
                for key, value in (history.items() if isinstance(history, dict) else ())
                if isinstance(value, (int, float)) and not isinstance(value, bool)
            },
        )

    def save(self, path: Path) -> None:
        write_atomically(path, json.dumps(self.as_json(), indent=2, sort_keys=True) + "\n")


def read_object(path: Path) -> dict[str, Any] | None:
    """The JSON object ``path`` holds; None when it is unreadable, not JSON or not an object
    (a state file is read leniently: never raised)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _record(kind: Any, raw: object) -> Any:
    """``kind(**raw)`` when ``raw`` has exactly its fields with the right types, else ``None``."""
    if not isinstance(raw, dict) or set(raw) != set(kind._fields):
        return None
    for name, wanted in _FIELD_TYPES.items():
        if name in raw and not (isinstance(raw[name], wanted) and not isinstance(raw[name], bool)):
            return None
    return kind(**raw)


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "python_version": str,
    "base_executable": str,
    "created_at": (int, float),
    "fingerprint": str,
    "installer": str,
    "finished_at": (int, float),
    "duration": (int, float),
}
