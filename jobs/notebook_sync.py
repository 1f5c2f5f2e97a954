"""Push notebook edits back to where the notebook came from (Quix's application Git files).

What the earlier images' file watcher did, made durable and cheap:

- **Only notebooks are watched.** The walk never descends into the state directory (wherever
  it is, ``excluded``), into a venv (a folder holding ``pyvenv.cfg``), into hidden folders or
  into caches; only ``.py``/``.md``/``.qmd`` and ``requirements.txt`` are synced. A file is
  hashed only when its stat key (mtime, size, inode) changed since the last walk.
- **Edits are durable before any push.** The content of an edit is written atomically under
  the state directory (``blobs``, named by its SHA-256) and the pending list naming it is
  replaced atomically after; a file leaves the pending list only once the push of that exact
  content succeeded.
- **A new container reconciles three ways** (:meth:`NotebookSync.reconcile`): the file in this
  container, the versions this deployment has seen (the image's original, what it pushed), and
  the pending content. A container file already seen gets the user's latest edit restored over
  it; a container file new to us (changed in Quix meanwhile) stays, and the edit is saved
  beside it as ``<stem>.conflict-<UTC time><suffix>``, pushed like any notebook. Nothing is
  overwritten that was not seen before.
- **One file never stops the others**: unreadable, non-UTF-8, too large, or refused by the
  portal (a 4xx for that path) is reported for that file alone. An outage stops the round and
  retries with backoff; a refused credential keeps everything pending until a different
  credential is offered (someone signs in again).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tenacity import wait_exponential

from jobs.atomic import write_atomically
from jobs.backoff import pause
from jobs.notebook_scan import Scanner, read_notebook

SEEN_PER_FILE = 50
REFUSED_RETRY = 300.0
"""Seconds before a refused credential is tried again (when nobody signed in meanwhile)."""

Push = Callable[[str, str], Awaitable[None]]
"""push(relative path, text): raises on failure (see the exceptions below)."""
Delete = Callable[[str], Awaitable[None]]
"""delete(relative path): raises on failure."""


class CredentialRefused(Exception):
    """The destination refused the credential (or there is none): ask the person to sign in."""


class FileRefused(Exception):
    """The destination refused this one path (a 4xx other than 401/403)."""


@dataclass
class SyncState:
    """What is persisted in the sync state file (its blobs live beside it)."""

    synced: dict[str, str] = field(default_factory=dict)
    """What the destination has, as far as this deployment knows: path → digest."""
    seen: dict[str, list[str]] = field(default_factory=dict)
    """Every version of a path this deployment has seen (image originals, pushes)."""
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    """path → {"digest": content to push, or None for a deletion, "since": first change}."""
    conflicts: list[dict[str, str]] = field(default_factory=list)
    not_propagated: list[str] = field(default_factory=list)
    last_sync_at: float | None = None
    last_error: str | None = None

    @classmethod
    def load(cls, path: Path) -> SyncState:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            pending = {
                str(name): {"digest": entry.get("digest"), "since": float(entry["since"])}
                for name, entry in (raw.get("pending") or {}).items()
                # an older format held names without content; a damaged entry is dropped
                if isinstance(entry, dict) and _safe_entry(str(name), entry.get("digest"))
            }
            return cls(
                synced=dict(raw.get("synced") or {}),
                seen={k: list(v) for k, v in (raw.get("seen") or {}).items()},
                pending=pending,
                conflicts=list(raw.get("conflicts") or []),
                not_propagated=list(raw.get("not_propagated") or []),
                last_sync_at=raw.get("last_sync_at"),
                last_error=raw.get("last_error"),
            )
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
            return cls()

    def save(self, path: Path) -> None:
        data = {
            "synced": self.synced,
            "seen": self.seen,
            "pending": self.pending,
            "conflicts": self.conflicts,
            "not_propagated": self.not_propagated,
            "last_sync_at": self.last_sync_at,
            "last_error": self.last_error,
        }
        write_atomically(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    def remember(self, name: str, digest: str) -> None:
        versions = self.seen.setdefault(name, [])
        if digest in versions:
            versions.remove(digest)
        versions.append(digest)
        del versions[:-SEEN_PER_FILE]


def _safe_entry(name: str, digest: object) -> bool:
    """A pending entry read back from the volume names a path inside the notebook folder and
    a content hash, nothing else (so a damaged file cannot make us write elsewhere)."""
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts:
        return False
    hexdigits = "0123456789abcdef"
    return digest is None or (
        isinstance(digest, str) and len(digest) == 64 and all(c in hexdigits for c in digest)
    )


def conflict_name(name: str, now: float) -> str:
    """``dir/<stem>.conflict-<UTC time><suffix>`` beside ``name``."""
    path = Path(name)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return (path.parent / f"{path.stem}.conflict-{stamp}{path.suffix}").as_posix()


class NotebookSync:
    """Watches ``root``, keeps edits durable in ``state_file``/``blobs``, pushes them."""

    def __init__(
        self,
        root: Path,
        state_file: Path,
        blobs: Path,
        push: Push,
        on_change: Callable[[dict[str, Any]], None],
        *,
        delete: Delete | None = None,
        excluded: Iterable[Path] = (),
        credential: Callable[[], str | None] = lambda: None,
        durable: bool = True,
        poll: float = 1.0,
        debounce: float,
        max_backoff: float = 60.0,
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self.state_file = state_file
        self.blobs = blobs
        self.push = push
        self.delete = delete
        self.on_change = on_change
        self.credential = credential
        self.durable = durable
        self.poll = poll
        self.debounce = debounce
        self.max_backoff = max_backoff
        self._backoff = wait_exponential(multiplier=2.0, max=max_backoff)  # 2, 4, 8 … s
        self.scanner = Scanner(self.root, excluded)
        self.state = SyncState.load(state_file)
        self.errors: dict[str, str] = {}
        """Per-file problems found while watching (encoding, size, permissions)."""
        self.refused: dict[str, tuple[str, str]] = {}
        """path → (digest, why) the destination refused; retried once the content changes."""
        self._refused_credential: str | None = None
        self._needs_sign_in: str | None = None
        self._refused_at = 0.0
        self._last_change = 0.0
        self._failures = 0
        self._retry_at = 0.0
        self._lock = asyncio.Lock()

    # -- what is shown -------------------------------------------------------------------------

    def public(self) -> dict[str, Any]:
        state = self.state
        errors = {**self.errors, **{name: why for name, (_, why) in self.refused.items()}}
        return {
            "pending": sorted(state.pending, key=lambda name: state.pending[name]["since"]),
            "last_sync_at": state.last_sync_at,
            "last_error": state.last_error,
            "errors": dict(sorted(errors.items())),
            "conflicts": list(state.conflicts),
            "not_propagated": sorted(state.not_propagated),
            "needs_sign_in": self._needs_sign_in,
            "durable": self.durable,
        }

    def _save(self) -> None:
        self.state.save(self.state_file)
        self._collect_blobs()
        self.on_change(self.public())

    def _blob(self, digest: str) -> Path:
        return self.blobs / digest

    def _collect_blobs(self) -> None:
        wanted = {entry["digest"] for entry in self.state.pending.values() if entry["digest"]}
        with contextlib.suppress(OSError):
            for blob in self.blobs.iterdir():
                if blob.name not in wanted and not blob.name.startswith("."):
                    blob.unlink(missing_ok=True)

    def _keep(self, name: str, data: bytes, digest: str, now: float) -> None:
        """The content first (atomically), then the entry naming it (saved by the caller)."""
        write_atomically(self._blob(digest), data)
        since = self.state.pending.get(name, {}).get("since", now)
        self.state.pending[name] = {"digest": digest, "since": since}

    # -- start ---------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Bring the pending edits of earlier containers into this one (see the module doc)."""
        state = self.state
        current, self.errors = self.scanner.scan()
        now = time.time()
        for name, entry in sorted(state.pending.items()):
            wanted: str | None = entry["digest"]
            here = current.get(name)
            if wanted is None:
                if here is not None:  # the file is back (the image has it): nothing to delete
                    del state.pending[name]
                continue
            if here == wanted:
                continue
            try:
                data = self._blob(wanted).read_bytes()
            except OSError:
                del state.pending[name]
                state.last_error = f"the pending edit of {name} was lost from the state volume"
                continue
            if here is None or here in state.seen.get(name, ()):
                write_atomically(self.root / name, data)
                current[name] = wanted
                continue
            # Changed in Quix meanwhile: keep it, save the edit beside it, say so.
            beside = conflict_name(name, now)
            write_atomically(self.root / beside, data)
            del state.pending[name]
            state.pending[beside] = {"digest": wanted, "since": entry["since"]}
            current[beside] = wanted
            state.conflicts.append(
                {
                    "file": name,
                    "saved_as": beside,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                    "message": f"{name} was changed in Quix while your edit waited; your "
                    f"version is saved as {beside}",
                }
            )
        for name, digest in current.items():
            state.remember(name, digest)
            if name not in state.pending:
                state.synced[name] = digest  # this container was built from what Quix has
        for name in list(state.synced):
            if name not in current and name not in self.errors:
                del state.synced[name]
        self.scanner.scan()  # restored files have new stat keys: learn them, quietly
        self._save()
        if state.pending:
            self._last_change = time.monotonic() - self.debounce  # left over: push soon

    # -- watching ------------------------------------------------------------------------------

    def scan(self) -> None:
        """Keep every change (content first) as pending; notice deletions."""
        state = self.state
        current, errors = self.scanner.scan()
        changed = errors != self.errors
        self.errors = errors
        now = time.time()
        for name, digest in current.items():
            entry = state.pending.get(name)
            known = entry["digest"] if entry is not None else state.synced.get(name)
            if digest == known:
                continue
            if digest == state.synced.get(name):
                state.pending.pop(name, None)  # changed back to what Quix has
                changed = True
                continue
            try:
                data = read_notebook(self.root / name)
            except (OSError, ValueError):
                continue  # changed again under us: the next walk sees it
            digest = hashlib.sha256(data).hexdigest()
            self._keep(name, data, digest, now)
            self._last_change = time.monotonic()
            changed = True
        gone = [
            name
            for name in {*state.synced, *state.pending}
            if name not in current and name not in errors
        ]
        for name in gone:
            entry = state.pending.get(name)
            if entry is not None and entry["digest"] is None:
                continue
            if name in state.synced:
                state.pending[name] = {"digest": None, "since": now}
                self._last_change = time.monotonic()
            else:
                state.pending.pop(name, None)  # created and deleted before it was pushed
            changed = True
        if changed:
            self._save()

    # -- pushing -------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Push pending files, oldest change first. An outage or a refused credential stops
        the round; a refused path or an unreadable blob is reported for that path alone."""
        async with self._lock:
            await self._flush()

    async def _flush(self) -> None:
        state = self.state
        for name in sorted(state.pending, key=lambda n: state.pending[n]["since"]):
            entry = state.pending.get(name)
            if entry is None:
                continue
            digest: str | None = entry["digest"]
            refused = self.refused.get(name)
            if refused is not None and refused[0] == digest:
                continue
            try:
                if digest is None:
                    if self.delete is None:
                        del state.pending[name]
                        state.synced.pop(name, None)
                        if name not in state.not_propagated:
                            state.not_propagated.append(name)
                        self._save()
                        continue
                    await self.delete(name)
                else:
                    text = self._blob(digest).read_bytes().decode("utf-8")
                    await self.push(name, text)
            except CredentialRefused as error:
                self._refused_credential = self.credential()
                self._refused_at = time.monotonic()
                self._needs_sign_in = f"{error}: sign in again to save {name} to Quix"
                state.last_error = self._needs_sign_in
                self._save()
                return
            except FileRefused as error:
                self.refused[name] = (digest or "", f"Quix refused it: {error}")
                self.on_change(self.public())
                continue
            except (OSError, UnicodeDecodeError) as error:
                self.refused[name] = (digest or "", f"its pending content is unreadable: {error}")
                self.on_change(self.public())
                continue
            except Exception as error:  # an outage: everything stays pending, retried later
                self._failures += 1
                delay = pause(self._backoff, self._failures)
                self._retry_at = time.monotonic() + delay
                state.last_error = f"could not push {name}: {error} (retrying in {delay:.0f} s)"
                self._save()
                return
            self._failures = 0
            self._needs_sign_in = None
            self.refused.pop(name, None)
            if digest is None:
                state.synced.pop(name, None)
            else:
                state.synced[name] = digest
                state.remember(name, digest)
            if state.pending.get(name, {}).get("digest", 0) == digest:
                del state.pending[name]  # not edited again during the push
            state.last_sync_at = time.time()
            state.last_error = None
            self._save()

    def _may_push(self) -> bool:
        # The same credential would be refused again: wait for another one (someone signs in),
        # trying the same one again only after REFUSED_RETRY (its rights may have been fixed).
        return (
            self._needs_sign_in is None
            or self.credential() != self._refused_credential
            or time.monotonic() - self._refused_at >= REFUSED_RETRY
        )

    async def flush_now(self, timeout: float) -> list[str]:
        """Push what is pending now, ignoring the debounce and the backoff, for at most
        ``timeout`` seconds; returns what is still pending (it stays durable)."""

        async def everything() -> None:
            await asyncio.get_running_loop().run_in_executor(None, self.scan)
            if self.state.pending and self._may_push():
                await self.flush()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everything(), timeout)
        return list(self.public()["pending"])

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.reconcile)
        while True:
            await loop.run_in_executor(None, self.scan)
            now = time.monotonic()
            quiet = now - self._last_change >= self.debounce
            if self.state.pending and quiet and now >= self._retry_at and self._may_push():
                await self.flush()
            delay = self.poll
            if self.state.pending and not quiet:  # wake when the quiet period ends
                delay = min(delay, max(0.05, self._last_change + self.debounce - now))
            await asyncio.sleep(delay)
