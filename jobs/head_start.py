"""Warm start: marimo starts before the server's own modules load, when the state directory
says the last start left a usable venv with its requirements installed.

The head start is speculative. What is checked here is cheap (files and the manifest); the
pipeline then runs its full checks (the venv's interpreter probe, the requirements fingerprint)
while marimo boots beside it, and adopts the process only when they find nothing to change.
Otherwise the process tree is ended before the venv is touched.

Invariants:
- edit mode: the state lock is taken before marimo starts and handed to the pipeline, never
  released in between, so a second orchestrator can never race this one on the venv;
- run mode: using an environment needs no exclusivity, so no lock is taken (as for the
  pipeline, jobs/lease.py); marimo starts from the generation published for this image
  (jobs/generations.py); no head start while another replica holds the build lease;
- nothing here writes to the state directory (the lock file aside) or raises: any surprise
  means no head start, and the ordinary path runs; after a container replacement it may make a
  skeleton venv in the local env folder and start marimo on it (kernels held while the
  pipeline restores the snapshot: jobs/runner.py), never adopted as a complete venv;
- the process is not routed to until the pipeline adopted it (the board learns of marimo only
  through the supervisor).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.env_location import probably_local
from jobs.errors import JobError
from jobs.installers import Installer, resolve_installer
from jobs.interpreter import Interpreter
from jobs.layout import StateLayout
from jobs.manifest import Manifest
from jobs.marimo_command import (
    TokenFile,
    free_port,
    marimo_argv,
    marimo_environment,
    records_installs,
)
from jobs.parent_death import die_with_parent
from jobs.settings import JobSettings, as_user
from jobs.state import StateLock, try_lock

if TYPE_CHECKING:
    from jobs.reporting import Reporter


class HeadStart:
    """A marimo started early, and the state lock it was started under."""

    __slots__ = ("installer", "lock", "popen", "port", "python", "skeleton", "started", "token")

    def __init__(
        self,
        lock: StateLock | None,
        popen: subprocess.Popen[bytes],
        port: int,
        token: TokenFile,
        python: Path,
        installer: Installer,
        skeleton: bool = False,
    ) -> None:
        self.skeleton = skeleton
        """Started from a skeleton of a venv the snapshot is about to be restored into
        (jobs/local_env.py): adopted only by the pipeline's serving-while-restoring path."""
        self.lock = lock
        self.popen = popen
        self.port = port
        self.token = token
        self.python = python
        self.installer = installer
        self.started = time.monotonic()

    def __repr__(self) -> str:
        return f"HeadStart(pid={self.popen.pid}, port={self.port})"

    def end(self) -> None:
        """End marimo's process tree (blocking: call it from a worker thread) and its token."""
        from jobs.processes import terminate_tree

        terminate_tree(self.popen.pid, timeout=5.0)
        with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
            self.popen.wait(timeout=5.0)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self.token.remove()

    async def discard(self, reporter: Reporter, reason: str) -> None:
        """Says why on the log, then ends the process tree (in a worker thread): the one way a
        head start that will not be adopted goes."""
        import asyncio

        reporter.log(
            None,
            "orchestrator",
            f"Stopping the marimo started early (pid {self.popen.pid}): {reason}",
        )
        await asyncio.get_running_loop().run_in_executor(None, self.end)


def why_not(settings: JobSettings, layout: StateLayout, installer: Installer) -> str:
    """Empty when the last start left a venv and an install that look reusable, else why not."""
    manifest = Manifest.load(layout.manifest)
    if not Interpreter.current().matches(manifest.venv):
        return "no venv from this Python on record"
    if not layout.venv_python.exists():
        return "the venv's interpreter is missing"
    if manifest.pending_install is not None:
        return "an install was interrupted"
    if settings.requirements.exists() and manifest.install is None:
        return "no successful install on record"
    if manifest.install is not None and manifest.install.installer != installer.name:
        return "the installer changed"
    return ""


def begin(settings: JobSettings) -> HeadStart | None:
    """Start marimo at once on a warm state; ``None`` (and nothing held) otherwise."""
    layout = StateLayout(settings.state_dir)
    if not layout.root.is_dir():
        return None
    if settings.not_persistent is None:
        local = probably_local(settings.env_location, settings.state_dir, settings.env_dir)
        layout = layout._replace(local=local)
    try:
        installer = resolve_installer(settings.installer)
    except JobError:
        return None
    lock: StateLock | None = None
    if settings.marimo_mode == "run":
        if layout.build_lease.exists():
            return None
        from jobs import generations

        try:
            generation = generations.current(layout, generations.image_key())
        except Exception:  # an optimisation only: the ordinary path says what is wrong
            return None
        if generation is None:
            return None
        layout = generation
    else:
        try:
            lock = try_lock(layout)
        except OSError:
            return None
        if lock is None:
            return None
    token: TokenFile | None = None
    skeleton = False
    try:
        if why_not(settings, layout, installer):
            skeleton = lock is not None and _skeleton_made(layout)
            if not skeleton:
                if lock is not None:
                    lock.release()
                return None
        python = layout.venv_python
        port = free_port()
        token = TokenFile.create(shared=settings.marimo_user is not None)
        popen = subprocess.Popen(
            marimo_argv(python, settings.marimo_mode, settings.notebook_dir, port, token.path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=marimo_environment(
                settings.env,
                python,
                layout,
                installer,
                settings.marimo_user,
                records_installs(settings.record_installs, settings.marimo_mode, installer),
            ),
            cwd=settings.notebook_dir,
            start_new_session=True,
            preexec_fn=die_with_parent,  # only calls prctl: see jobs/parent_death.py
            user=as_user(settings.marimo_user).user,
            group=as_user(settings.marimo_user).group,
            extra_groups=as_user(settings.marimo_user).extra_groups,
        )
    except Exception:  # a head start is an optimisation: the ordinary path will say what failed
        if token is not None:
            token.remove()
        if lock is not None:
            lock.release()
        return None
    return HeadStart(lock, popen, port, token, python, installer, skeleton)


def _skeleton_made(layout: StateLayout) -> bool:
    """After a container replacement (edit mode, the venv on local disk and not there yet):
    a skeleton made at the venv's path when the volume's snapshot lets marimo serve while it is
    restored (:func:`jobs.local_env.why_not_serve_early`), so marimo starts now. Writes only to
    the local env folder, never to the state folder."""
    if layout.local is None:
        return False
    from jobs import local_env

    if local_env.why_not_serve_early(layout):
        return False
    local_env.make_skeleton(layout)
    return True
