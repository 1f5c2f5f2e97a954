"""Inputs of the startup jobs, resolved once by the orchestrator and never changed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

InstallerChoice = Literal["auto", "uv", "pip"]
MarimoMode = Literal["edit", "run"]


def repr_without(record: Any, hidden: str) -> str:
    """``Name(field=value, ...)`` of the NamedTuple ``record``, leaving out the field ``hidden``
    (a secret, or a mapping that may hold some): settings end up in tracebacks and logs."""
    shown = (f"{name}={getattr(record, name)!r}" for name in record._fields if name != hidden)
    return f"{type(record).__name__}({', '.join(shown)})"


class RunAs(NamedTuple):
    """Another user to run marimo (and so every notebook cell and terminal) as.

    ``gid`` is the orchestrator's own group: the venv, caches and marimo's settings are shared
    through it (group-writable), while the orchestrator's secrets (mode 0600) are not.
    """

    uid: int
    gid: int
    home: str


class PopenUser(NamedTuple):
    user: int | None
    group: int | None
    extra_groups: list[int] | None


def as_user(user: RunAs | None) -> PopenUser:
    """``Popen``'s ``user``, ``group`` and ``extra_groups`` for ``user`` (none: ourselves)."""
    if user is None:
        return PopenUser(None, None, None)
    return PopenUser(user.uid, user.gid, [])


class Liveness(NamedTuple):
    """How a running marimo's liveness is watched (``--marimo-probe-*``, jobs/liveness.py);
    ``misses`` 0: not watched."""

    interval: float
    """Seconds between the starts of two probes."""
    timeout: float
    """Seconds one probe may take before it counts as missed."""
    misses: int
    """Missed probes in a row that make marimo hung."""

    @property
    def enabled(self) -> bool:
        return self.misses > 0

    @property
    def detection_seconds(self) -> float:
        """The longest a hang goes unnoticed: until the next probe, then ``misses`` probes, one
        started every ``interval`` seconds or as soon as the previous one timed out."""
        return self.interval + (self.misses - 1) * max(self.interval, self.timeout) + self.timeout


class Switching(NamedTuple):
    """How run mode moves marimo to another environment without failing requests
    (``--marimo-switch-*``, :meth:`jobs.marimo.MarimoSupervisor.switch`)."""

    drain: float
    """Seconds the replaced marimo may take to answer what it was sent before it is stopped."""
    margin: int
    """Bytes of memory that must stay available beyond a second marimo as large as the running
    one (its whole process tree) for both to run side by side; else it is stopped first."""


class JobSettings(NamedTuple):
    """Everything the jobs need to know; no job reads ``os.environ`` or the CLI itself.

    Resolved once (orchestrator/config.py holds it as ``Config.jobs``); the defaults live with
    the options' declarations (orchestrator/options.py), not here.

    ``env`` is the environment handed to children (installers, marimo): the orchestrator's own
    environment, so installer variables such as ``PIP_INDEX_URL`` or ``UV_INDEX_URL`` pass
    through untouched.
    """

    notebook_dir: Path
    requirements: Path
    state_dir: Path
    wait_for_state: bool
    state_timeout: float
    installer: InstallerChoice
    record_installs: bool
    """Edit mode with uv: marimo writes Install-button installs into the notebook's header
    (``MARIMO_MANAGE_SCRIPT_METADATA``, see jobs/marimo_command.py ``records_installs``)."""
    env_location: Literal["auto", "local", "volume"]
    """Where the venv runs from: see jobs/env_location.py."""
    env_dir: Path
    """The local folder the venv runs from when it does not run from the state volume."""
    marimo_mode: MarimoMode
    marimo_ready_timeout: float
    marimo_crash_window: float
    """marimo exits within this many seconds of its start count towards a crash loop."""
    marimo_liveness: Liveness
    """How a running marimo is probed, and when it counts as hung (jobs/liveness.py)."""
    marimo_switch: Switching
    """Run mode: how marimo moves to a new environment generation (jobs/switch_room.py)."""
    lease_seconds: float
    """Run mode: a build lease whose heartbeat stopped this long ago is taken over."""
    env: Mapping[str, str]
    not_persistent: str | None
    """Why the state directory, though usable, does not survive a restart (reported as a
    warning with ``persistent: false``); ``None`` when it does."""
    marimo_user: RunAs | None
    """Run marimo as this user instead of the orchestrator's (needs CAP_SETUID, CAP_SETGID);
    ``None``: as the orchestrator's own."""

    def __repr__(self) -> str:  # the environment may hold secrets
        return repr_without(self, "env")
