"""Every path the orchestrator owns under the state directory (documented in state_layout.md).

Invariant: no other module builds a path under the state directory by hand; they all ask a
:class:`StateLayout`. ``tests/test_state_layout.py`` checks that state_layout.md names each one.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class StateLayout(NamedTuple):
    """``env`` is where the environment's durable records (ledger, snapshot; and the venv and
    manifest unless ``local`` is set) live: the root itself, or in run mode on a shared folder
    one generation under ``envs/`` (jobs/generations.py).

    ``local``: the folder on the container's own disk the venv runs from when the state volume
    is a network filesystem (jobs/env_location.py); the venv and its manifest then live under
    it (a generation in a subfolder of its own name) and the volume keeps a snapshot
    (jobs/snapshot.py). ``None``: everything lives on the volume."""

    root: Path
    env: Path | None = None
    local: Path | None = None

    @property
    def env_root(self) -> Path:
        return self.env or self.root

    @property
    def run_root(self) -> Path:
        """Where the venv and its manifest live: local disk when ``local`` is set."""
        if self.local is None:
            return self.env_root
        return self.local / self.env.name if self.env is not None else self.local

    @property
    def snapshot_record(self) -> Path:
        """Names the environment's current snapshot and its checksum (jobs/snapshot.py)."""
        return self.env_root / "env-snapshot.json"

    @property
    def snapshot_archives(self) -> Path:
        """The environment's snapshot archives (one, plus one being written)."""
        return self.env_root / "env-snapshots"

    @property
    def broken_snapshot(self) -> Path:
        """The last snapshot that failed its checksum, kept aside for inspection."""
        return self.env_root / "env-snapshot.broken"

    @property
    def envs(self) -> Path:
        """Run mode on a shared folder: immutable environment generations, one folder each."""
        return self.root / "envs"

    @property
    def move_lease(self) -> Path:
        """Run mode: the lease of the one replica moving its marimo to a new generation."""
        return self.root / "move.lease"

    @property
    def lock(self) -> Path:
        """Held (flock) by the one orchestrator allowed to change this directory."""
        return self.root / ".orchestrator.lock"

    @property
    def build_lease(self) -> Path:
        """Run mode: the lease (jobs/lease.py) of the one replica building the environment."""
        return self.root / "build.lease"

    @property
    def venv(self) -> Path:
        return self.run_root / "venv"

    @property
    def manifest(self) -> Path:
        """What the venv is and what was last installed successfully (written atomically)."""
        return self.run_root / "manifest.json"

    @property
    def session_secret(self) -> Path:
        """Signs session cookies (mode 0600), so signed-in users stay signed in across restarts."""
        return self.root / "session-secret"

    @property
    def revoked_sessions(self) -> Path:
        """Sessions ended before their time (logout, a refused Quix token), one per line, so
        they stay ended across restarts (orchestrator/trust/revocations.py)."""
        return self.root / "sessions-revoked"

    @property
    def sync_state(self) -> Path:
        """Notebook edits not yet pushed to Quix, and what Quix has (jobs/notebook_sync.py)."""
        return self.root / "quix-sync.json"

    @property
    def sync_blobs(self) -> Path:
        """The content of each notebook edit not yet pushed to Quix, named by its SHA-256."""
        return self.root / "quix-sync-pending"

    @property
    def ledger(self) -> Path:
        """Packages the user installed into the venv, restored after a rebuild."""
        return self.env_root / "ledger.json"

    @property
    def uv_cache(self) -> Path:
        """On local disk with the venv when it runs from there: an install then writes no
        file over the network (uv unpacks every wheel into its cache first)."""
        return (self.local or self.root) / "cache" / "uv"

    @property
    def pip_cache(self) -> Path:
        return (self.local or self.root) / "cache" / "pip"

    @property
    def asset_cache(self) -> Path:
        """marimo's content-hashed assets compressed once, served by the proxy
        (proxy/precompressed.py)."""
        return self.root / "cache" / "marimo-assets"

    @property
    def xdg_config(self) -> Path:
        """``XDG_CONFIG_HOME`` for marimo, so its user settings persist."""
        return self.root / "config"

    @property
    def marimo_config(self) -> Path:
        return self.xdg_config / "marimo" / "marimo.toml"

    @property
    def image_excludes(self) -> Path:
        """The image's packages, one a line: ``UV_EXCLUDE`` for marimo's Install button, so uv
        never copies them into the venv over the image's."""
        return self.root / "image-excludes.txt"

    @property
    def venv_python(self) -> Path:
        return self.venv / "bin" / "python"

    def all_paths(self) -> dict[str, Path]:
        """Name → path of everything above, for documentation checks."""
        return {
            "lock": self.lock,
            "build_lease": self.build_lease,
            "move_lease": self.move_lease,
            "envs": self.envs,
            "venv": self.venv,
            "manifest": self.manifest,
            "ledger": self.ledger,
            "snapshot_record": self.snapshot_record,
            "snapshot_archives": self.snapshot_archives,
            "broken_snapshot": self.broken_snapshot,
            "session_secret": self.session_secret,
            "revoked_sessions": self.revoked_sessions,
            "sync_state": self.sync_state,
            "sync_blobs": self.sync_blobs,
            "uv_cache": self.uv_cache,
            "pip_cache": self.pip_cache,
            "asset_cache": self.asset_cache,
            "xdg_config": self.xdg_config,
            "marimo_config": self.marimo_config,
            "image_excludes": self.image_excludes,
        }
