"""The environment on local disk: placing it, restoring it from the volume's snapshot, and
keeping that snapshot up to date in the background.

The pipeline (jobs/runner.py) asks :func:`place` once the state folder is known, calls
:func:`restore` at the start of the ``venv`` step, and tells a :class:`SnapshotKeeper` whenever
the venv may have changed (an install, a rebuild, marimo's Install button seen by the ledger's
watcher). See jobs/snapshot.py for what is on the volume and why it is always valid.

Invariants:
- a restored venv is described by the manifest that was taken with it (the snapshot record's),
  written *after* the venv is in place: a crash in between leaves a venv without a manifest
  record, which the ``venv`` step rebuilds, never trusts;
- a snapshot that fails its checksum is kept aside (``env-snapshot.broken/``) and the
  environment is rebuilt from the dependency files and the ledger, and ``/-/status`` says so;
- the keeper never makes the volume hold a snapshot of a venv caught in the middle of a change:
  what it archived is kept only when the venv's signature (its manifest and its site-packages'
  mtimes) did not change while it was read; otherwise it tries again after the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from jobs import ledger, snapshot, snapshot_restore
from jobs.atomic import write_atomically
from jobs.blocking import at_low_priority, off_loop
from jobs.env_location import Placement, decide
from jobs.errors import JobError
from jobs.interpreter import Interpreter
from jobs.layout import StateLayout
from jobs.manifest import Manifest
from jobs.reporting import Reporter
from jobs.settings import JobSettings

if TYPE_CHECKING:
    from jobs.head_start import HeadStart

DEBOUNCE = 3.0
"""Seconds without further change before a snapshot is taken (an install comes in bursts)."""


def place(
    settings: JobSettings, root: StateLayout, persistent: bool
) -> tuple[StateLayout, Placement, snapshot.SnapshotRecord | None]:
    """``root`` with ``local`` set when the environment runs from local disk (see
    jobs/env_location.py), the placement that says why, and the volume's snapshot record.
    Blocking: reads the record and the mount table."""
    record = snapshot.load(root.snapshot_record)
    placement = decide(
        settings.env_location,
        root.root,
        settings.env_dir,
        persistent,
        needed_bytes=record.unpacked if record is not None else None,
    )
    return root._replace(local=placement.local), placement, record


def describe(
    layout: StateLayout,
    placement: Placement,
    record: snapshot.SnapshotRecord | None,
    **extra: Any,
) -> dict[str, Any]:
    """``/-/status``'s ``environment``: where the packages live and their snapshot (``record``,
    as last read or written: never read here, this runs on the event loop)."""
    if layout.local is None:
        record = None
    return {
        "location": "local" if layout.local is not None else "volume",
        "path": str(layout.venv),
        "reason": placement.reason,
        "warning": placement.warning,
        "snapshot": None
        if record is None
        else {
            "made_at": record.made_at,
            "size": record.size,
            "unpacked": record.unpacked,
            "files": record.files,
            "seconds": record.seconds,
        },
        "snapshotting": False,
        **extra,
    }


def signature(layout: StateLayout) -> tuple[str, float]:
    """Changes whenever the venv's content may have: its manifest and its site-packages."""
    try:
        manifest = layout.manifest.read_text(encoding="utf-8")
    except OSError:
        manifest = ""
    return manifest, ledger.site_packages_mtime(layout)


class Restored(NamedTuple):
    """What :func:`restore` did: ``seconds`` is set when the venv was restored; ``warning``
    says why a snapshot on the volume could not be used (the caller then builds anew)."""

    message: str
    seconds: float | None = None
    warning: str | None = None


async def restore(layout: StateLayout, reporter: Reporter) -> Restored:
    """Put the snapshot's venv in place on local disk when the local one is missing or was not
    completed.

    Call only when ``layout.local`` is set and the local venv is not usable."""
    record = await off_loop(snapshot.load, layout.snapshot_record)
    if record is None:
        return Restored("no snapshot on the volume yet")
    interpreter = Interpreter.current()
    if record.python_version != interpreter.version:
        return Restored("the snapshot was made with another Python")
    reporter.step_progress(
        "venv",
        f"Restoring your Python packages from the snapshot on the volume "
        f"({record.size / 1_000_000:.0f} MB, {record.files} files)",
        0.1,
    )
    reporter.step_expected("venv", max(record.seconds, 0.5))
    await off_loop(_clear, layout, True)
    try:
        seconds = await at_low_priority(
            snapshot_restore.restore, record, layout.snapshot_archives, layout.venv
        )
    except snapshot.CorruptSnapshot as error:
        aside = await off_loop(
            snapshot.keep_aside, layout.snapshot_record, layout.snapshot_archives, record
        )
        kept = f"; it was kept at {aside}" if aside is not None else ""
        return Restored(
            "the snapshot is corrupt",
            warning=f"The snapshot of the Python packages could not be used ({error}){kept}: "
            "they are reinstalled from requirements.txt and the packages you added",
        )
    await off_loop(_write_manifest, layout, record.manifest)
    return Restored(
        f"Restored the Python packages from the snapshot in {seconds:.1f} s", seconds=seconds
    )


def _clear(layout: StateLayout, keep_skeleton: bool = False) -> None:
    """Remove a local venv that was not completed (but a skeleton, with ``keep_skeleton``: the
    restore exchanges it), and the manifest that goes with it."""
    from jobs.venv import remove

    with contextlib.suppress(FileNotFoundError):
        layout.manifest.unlink()
    if keep_skeleton and (layout.venv / snapshot_restore.SKELETON_MARK).is_file():
        return
    if layout.venv.exists() or layout.venv.is_symlink():
        remove(layout.venv)
    layout.venv.parent.mkdir(parents=True, exist_ok=True)


RUN_APART = frozenset({"pip"})
"""Distributions every venv has its own copy of that marimo's server never imports (it runs
them as programs of their own, and only through requests the kernel hold keeps waiting)."""


def why_not_serve_early(layout: StateLayout) -> str:
    """Empty when marimo may serve from a skeleton of the venv while the snapshot is restored
    into place (see :func:`make_skeleton`), else why not. Blocking: reads the record and the
    image's distributions.

    marimo then runs from the image's packages until the exchange, and its processes keep
    what they imported: that is the same program only when the restored venv adds packages
    and neither replaces one of the image's nor adds import paths (``.pth`` files), so a
    snapshot that does, or does not say, is restored first, as before."""
    from jobs.image import image_distributions

    if layout.local is None:
        return "the environment runs from the volume"
    if Manifest.load(layout.manifest).venv is not None and layout.venv_python.exists():
        return "the venv on local disk is there"
    record = snapshot.load(layout.snapshot_record)
    if record is None:
        return "no snapshot on the volume"
    if record.python_version != Interpreter.current().version:
        return "the snapshot was made with another Python"
    if record.distributions is None or record.path_files is None:
        return "the snapshot does not list its packages"
    if record.path_files:
        return f"the snapshot's packages add import paths ({', '.join(record.path_files)})"
    shadowed = sorted(set(record.distributions) & set(image_distributions()) - RUN_APART)
    if shadowed:
        return f"the snapshot replaces packages of the image ({', '.join(shadowed[:5])})"
    return ""


async def serves_early(
    mode: str, layout: StateLayout, head: HeadStart | None, reporter: Reporter
) -> bool:
    """Whether marimo serves from a skeleton of the venv, kernels held, while the venv is
    restored (edit mode, :func:`why_not_serve_early`): the skeleton is made here unless the
    marimo started early (``head``) runs from one already; a marimo started early on anything
    else rules it out."""
    skeleton = head is not None and head.skeleton and head.python == layout.venv_python
    if mode != "edit" or (head is not None and not skeleton):
        return False
    if not skeleton:  # else the head start made it and started marimo on it already
        why_not = await off_loop(why_not_serve_early, layout)
        if why_not:
            if layout.local is not None:
                reporter.log("venv", "orchestrator", f"marimo waits for the venv: {why_not}")
            return False
        await off_loop(make_skeleton, layout)
    reporter.log(
        "venv",
        "orchestrator",
        "marimo starts while your Python packages are restored; notebooks connect once "
        "they are in place",
    )
    return True


def make_skeleton(layout: StateLayout) -> None:
    """A venv with no packages of its own at ``layout.venv``, marked as a skeleton: it runs
    marimo from the image at once; :func:`restore` exchanges it for the restored venv in one
    atomic rename (jobs/snapshot.py). Never described by a manifest record, so nothing takes
    it for a complete venv, after a crash either."""
    import venv as stdlib_venv

    from jobs.venv import write_layer

    _clear(layout)
    stdlib_venv.EnvBuilder(system_site_packages=True, symlinks=True, with_pip=False).create(
        layout.venv
    )
    write_layer(layout)
    (layout.venv / snapshot_restore.SKELETON_MARK).write_text(
        "No packages yet: the snapshot on the volume is being restored.\n", encoding="utf-8"
    )


def _write_manifest(layout: StateLayout, raw: dict[str, Any]) -> None:
    import json

    write_atomically(layout.manifest, json.dumps(raw, indent=2, sort_keys=True) + "\n")
    if Manifest.load(layout.manifest).venv is None:  # not understood: never trusted
        raise JobError(f"the snapshot's manifest for {layout.venv} is not understood")


def take_snapshot(
    layout: StateLayout,
    unchanged: Callable[[], bool] = lambda: True,
    abort: threading.Event | None = None,
) -> snapshot.SnapshotRecord | None:
    """:func:`snapshot.take` of ``layout``'s venv, with its manifest, onto its volume folder."""
    from jobs.venv import LAYER_PTH

    return snapshot.take(
        layout.venv,
        Manifest.load(layout.manifest).as_json(),
        Interpreter.current().version,
        layout.snapshot_record,
        layout.snapshot_archives,
        unchanged,
        abort,
        ignore_pth=LAYER_PTH,
    )


class StartReport(Protocol):
    """What the ``venv`` step learnt about the snapshot (jobs/environment.py)."""

    snapshot_warning: str | None
    restored_seconds: float | None


class SnapshotKeeper:
    """Takes a new snapshot a few seconds after the venv changed, one at a time, in a worker
    thread; tells the board while it writes and when it is done."""

    def __init__(
        self,
        layout: StateLayout,
        placement: Placement,
        reporter: Reporter,
        record: snapshot.SnapshotRecord | None,
        debounce: float = DEBOUNCE,
    ) -> None:
        self.layout = layout
        self.placement = placement
        self.record = record
        """The volume's snapshot record as this keeper last read or wrote it."""
        self.reporter = reporter
        self.debounce = debounce
        self._wanted = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._only_if_stale = False
        self._abort = threading.Event()
        self.extra: dict[str, Any] = {}

    def report(self, **extra: Any) -> None:
        self.extra.update(extra)
        self.reporter.environment_changed(
            describe(self.layout, self.placement, self.record, **self.extra)
        )

    def after_change(self, steps: StartReport, only_if_stale: bool = False) -> None:
        """After an install, a rebuild or a change seen by the ledger's watcher: say what the
        start did with the snapshot (``steps``), and take a new one once things are quiet."""
        if steps.snapshot_warning or steps.restored_seconds is not None:
            self.report(
                warning=steps.snapshot_warning or self.placement.warning,
                restored_seconds=steps.restored_seconds,
            )
        self.changed(only_if_stale)

    def changed(self, only_if_stale: bool = False) -> None:
        """The venv may have changed: a snapshot follows once things are quiet (with
        ``only_if_stale``, only when the volume's snapshot is not of the venv as it is)."""
        self._only_if_stale = only_if_stale and (self._task is None or self._task.done())
        self._idle.clear()
        self._wanted.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="snapshot-keeper")

    async def settled(self) -> None:
        """Until no snapshot is wanted or being written (tests, orderly stops)."""
        await self._idle.wait()

    def needs_snapshot(self) -> bool:
        """True when the volume holds no snapshot of the venv as it is now."""
        record = snapshot.load(self.layout.snapshot_record)
        if record is None:
            return True
        return record.manifest != Manifest.load(self.layout.manifest).as_json() or (
            record.made_at < ledger.site_packages_mtime(self.layout)
        )

    async def _run(self) -> None:
        if self._only_if_stale and not await off_loop(self.needs_snapshot):
            self._wanted.clear()
        while self._wanted.is_set():
            self._wanted.clear()
            await asyncio.sleep(self.debounce)
            if self._wanted.is_set():
                continue  # still changing
            await self._take()
        self._idle.set()

    async def _take(self) -> None:
        layout = self.layout
        before = await off_loop(signature, layout)
        if Manifest.load(layout.manifest).venv is None or not layout.venv.is_dir():
            return  # no complete venv to keep
        self.report(snapshotting=True)
        started = time.monotonic()
        try:
            record = await off_loop(
                take_snapshot, layout, lambda: signature(layout) == before, self._abort
            )
        except (OSError, JobError) as error:
            self.reporter.log(
                "venv", "orchestrator", f"Could not save the snapshot of the packages: {error}"
            )
            self.report(snapshotting=False, snapshot_error=str(error))
            return
        if record is None:
            self._wanted.set()  # changed while archived: once more, after the change
            self.report(snapshotting=False)
            return
        self.record = record
        self.reporter.log(
            "venv",
            "orchestrator",
            f"Saved a snapshot of the Python packages on the volume "
            f"({record.size / 1_000_000:.0f} MB) in {time.monotonic() - started:.1f} s",
        )
        self.report(snapshotting=False, snapshot_error=None)

    async def stop(self) -> None:
        """Abandon a snapshot being written (the volume keeps the previous one) and stop."""
        self._abort.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def local_copy(generation: StateLayout, reporter: Reporter) -> None:
    """Run mode on a shared volume: make this replica's local copy of a published generation
    from its snapshot, unless it has one already. Nothing is built here: a generation whose
    snapshot cannot be used simply does not count as finished (the caller's checks fail)."""
    if await off_loop(_complete, generation):
        return
    restored = await restore(generation, reporter)
    if restored.warning is not None:
        reporter.log("venv", "orchestrator", restored.warning)


def _complete(layout: StateLayout) -> bool:
    return Manifest.load(layout.manifest).venv is not None and layout.venv_python.exists()


async def snapshot_for_replicas(generation: StateLayout, reporter: Reporter) -> bool:
    """Run mode: the snapshot the other replicas restore a new generation from, taken before it
    is published (a generation without one is not published); True when it was saved."""
    try:
        record = await off_loop(take_snapshot, generation)
    except (OSError, JobError) as error:
        reporter.log("venv", "orchestrator", f"Could not save the environment's snapshot: {error}")
        return False
    return record is not None


def prune_local_copies(root: StateLayout) -> list[Path]:
    """Run mode: remove local copies of generations that are gone from the volume (collected:
    no replica uses them), so a long-lived container's disk does not fill with old ones."""
    if root.local is None or not root.local.is_dir():
        return []
    removed = []
    for folder in root.local.iterdir():
        if folder.name == "cache" or folder.name.startswith(".") or not folder.is_dir():
            continue
        if not (root.envs / folder.name).exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
