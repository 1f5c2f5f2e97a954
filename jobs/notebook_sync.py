"""Push notebook edits back to where the notebook came from (Quix's application Git files).

What the earlier images' file watcher did, made durable: changed files are noticed by polling
(content hashes, not just mtimes), pushed after a quiet period (debounce) in the order they were
first changed, retried with backoff while the destination is down, and kept pending in the state
directory so that no edit is lost across a restart.

Invariants: a file leaves the pending list only after the push of the content it has *now*
succeeded (an edit made during a push stays pending); the pending list is written atomically
before anything is pushed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.manifest import write_atomically

SYNCED_SUFFIXES = (".py", ".md", ".qmd")
SYNCED_NAMES = ("requirements.txt",)
SKIPPED_PARTS = ("__pycache__", "__marimo__", ".git", ".venv", "node_modules")

Push = Callable[[str, str], Awaitable[None]]
"""push(relative path, text): raises on failure."""


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def watched_files(root: Path) -> dict[str, str]:
    """relative path → content hash of every file that is synced."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part in SKIPPED_PARTS or part.startswith(".") for part in relative.parts):
            continue
        if not path.is_file():
            continue
        if path.suffix not in SYNCED_SUFFIXES and path.name not in SYNCED_NAMES:
            continue
        digest = _digest(path)
        if digest is not None:
            found[relative.as_posix()] = digest
    return found


@dataclass
class SyncState:
    """What is persisted: the baseline (what the destination has) and what is pending."""

    synced: dict[str, str] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)
    last_sync_at: float | None = None
    last_error: str | None = None

    @classmethod
    def load(cls, path: Path) -> SyncState:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                synced=dict(raw.get("synced") or {}),
                pending={k: float(v) for k, v in (raw.get("pending") or {}).items()},
                last_sync_at=raw.get("last_sync_at"),
                last_error=raw.get("last_error"),
            )
        except (OSError, ValueError, TypeError, AttributeError):
            return cls()

    def save(self, path: Path) -> None:
        data = {
            "synced": self.synced,
            "pending": self.pending,
            "last_sync_at": self.last_sync_at,
            "last_error": self.last_error,
        }
        write_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def public(self) -> dict[str, Any]:
        return {
            "pending": sorted(self.pending, key=lambda name: self.pending[name]),
            "last_sync_at": self.last_sync_at,
            "last_error": self.last_error,
        }


class NotebookSync:
    def __init__(
        self,
        root: Path,
        state_file: Path,
        push: Push,
        on_change: Callable[[dict[str, Any]], None],
        *,
        poll: float = 1.0,
        debounce: float = 5.0,
        max_backoff: float = 60.0,
    ) -> None:
        self.root = root
        self.state_file = state_file
        self.push = push
        self.on_change = on_change
        self.poll = poll
        self.debounce = debounce
        self.max_backoff = max_backoff
        self.state = SyncState.load(state_file)
        self._last_change = 0.0
        self._failures = 0
        self._retry_at = 0.0

    def _save(self) -> None:
        self.state.save(self.state_file)
        self.on_change(self.state.public())

    def scan(self) -> None:
        """Mark files whose content differs from what the destination has as pending."""
        current = watched_files(self.root)
        if not self.state.synced and not self.state.pending and self.state.last_sync_at is None:
            # First run: what is here came from the destination (the image was built from it).
            self.state.synced = current
            self._save()
            return
        now = time.time()
        changed = False
        for name, digest in current.items():
            if self.state.synced.get(name) != digest and name not in self.state.pending:
                self.state.pending[name] = now
                changed = True
        if changed:
            self._last_change = time.monotonic()
            self._save()

    async def flush(self) -> None:
        """Push pending files, oldest change first; stop at the first failure."""
        for name in sorted(self.state.pending, key=lambda n: self.state.pending[n]):
            path = self.root / name
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                self.state.pending.pop(name, None)  # deleted before it was pushed
                continue
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            try:
                await self.push(name, text)
            except Exception as error:  # any failure keeps the file pending
                self._failures += 1
                delay = min(self.max_backoff, 2.0**self._failures)
                self._retry_at = time.monotonic() + delay
                self.state.last_error = (
                    f"could not push {name}: {error} (retrying in {delay:.0f} s)"
                )
                self._save()
                return
            self._failures = 0
            self.state.synced[name] = digest
            if _digest(path) == digest:  # not edited again during the push
                self.state.pending.pop(name, None)
            self.state.last_sync_at = time.time()
            self.state.last_error = None
            self._save()

    async def run(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.scan)
        self.on_change(self.state.public())  # watching from now on: later edits are caught
        if self.state.pending:
            self._last_change = time.monotonic() - self.debounce  # left over: push soon
        while True:
            await asyncio.get_running_loop().run_in_executor(None, self.scan)
            now = time.monotonic()
            quiet = now - self._last_change >= self.debounce
            if self.state.pending and quiet and now >= self._retry_at:
                await self.flush()
            await asyncio.sleep(self.poll)
