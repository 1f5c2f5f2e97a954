"""The ``requirements`` step: install every declared source into the venv, or skip it.

The sources (the requirements file with its includes, the notebooks' PEP 723 headers,
``pyproject.toml`` + ``uv.lock``) are read by jobs/sources.py and turned into the installer's
input by jobs/declared_install.py; each installer command runs through jobs/installer_run.py.
The packages users install themselves are jobs/user_installs.py's.

Invariants:
- the install is skipped (no installer process at all) exactly when the fingerprint of what
  decides its result (every source's content, interpreter, installer, index settings, the
  image's packages) equals the one the manifest recorded after the last *successful* install;
- conflicting sources and a stale ``uv.lock`` fail the step before the venv is touched; every
  problem the sources have is logged and ends the step's message, never dropped, and so are
  the header pins that give way to a curated file (jobs/source_conflicts.py), in one line;
- ``pending_install`` is set before an installer starts and cleared with the success record or
  when the installer exits with a failure, so only an install killed half-way is redone with a
  forced reinstall at the next start (a failed one is not "interrupted");
- what the image already provides is never downloaded nor copied into the venv (jobs/image.py).
"""

from __future__ import annotations

import errno
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

from jobs import declared_install as declared_job
from jobs import image as image_job
from jobs import ledger, scratch
from jobs.blocking import off_loop
from jobs.declared_install import InstallInput
from jobs.direct_references import local_files
from jobs.errors import DiskFullError, JobError, PermanentError, TransientError
from jobs.install_summary import changes, no_changes, summary
from jobs.installer_run import InstallerRun
from jobs.installers import Installer, find_uv
from jobs.layout import StateLayout
from jobs.manifest import InstallRecord, Manifest
from jobs.reporting import Reporter
from jobs.script_headers import HeaderCache
from jobs.sources import Declared


class InstallOutcome(NamedTuple):
    """What :func:`install` did, with the step's closing message.

    ``installed``: the installer ran and succeeded; ``unchanged``: skipped, the fingerprint
    matches the last successful install; ``no_file``: skipped, there is no requirements file.
    """

    kind: Literal["installed", "unchanged", "no_file"]
    message: str
    summary: str = ""
    """What the install added or changed, for the files that asked (jobs/install_summary.py)."""
    changes: dict[str, Any] | None = None
    """The same, structured, for ``/-/status`` (jobs/install_summary.py ``changes``); every
    outcome has one (empty lists when nothing was installed)."""


def validate(path: Path, content: str) -> None:
    """Reject a requirements file the installers could not parse, naming the line."""
    from packaging.requirements import InvalidRequirement, Requirement

    for number, raw in enumerate(content.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-", "git+", "http://", "https://", "file:", ".")):
            continue
        try:
            Requirement(line)
        except InvalidRequirement as error:
            raise PermanentError(
                f"{path} line {number}: {line!r} is not a valid requirement "
                f"({str(error).splitlines()[0]})"
            ) from None


async def _install_with_uv(
    run: InstallerRun, given: InstallInput, named: str, image: dict[str, str], reinstall: list[str]
) -> str:
    """Install what the image lacks; the image's packages stay out of uv's resolution."""
    installer, python = run.installer, run.layout.venv_python
    if not given.filtered:
        await run(installer.install_argv(python, [*reinstall, "-r", str(given.path)]))
        return ""
    for entry in given.satisfied:
        run.reporter.log("requirements", "orchestrator", f"Already provided: {entry}")
    satisfied = f"; {len(given.satisfied)} already in the image" if given.satisfied else ""
    if given.empty:
        return satisfied
    excluded = set(image_job.excludes(image, set(given.requested)))
    for _ in range(3):
        excludes_file = given.path.parent / "image-excludes.txt"
        excludes_file.write_text("\n".join(sorted(excluded)) + "\n", encoding="utf-8")
        argv = [*reinstall, "--excludes", str(excludes_file), "-r", str(given.path)]
        try:
            await run(installer.install_argv(python, argv))
        except JobError as error:
            # Users know their files, not our combined copy of them.
            raise error.renamed(str(given.path), named) from None
        needed = image_job.conflicts(ledger.site_packages(run.layout.venv), image, excluded)
        if not needed:
            return satisfied
        run.reporter.log(
            "requirements",
            "orchestrator",
            f"Requirements need other versions than the image's of {', '.join(sorted(needed))}; "
            "installing those into the venv",
        )
        excluded -= needed
    raise PermanentError("the requirements and the image's packages cannot be reconciled")


async def install(
    requirements: Path,
    layout: StateLayout,
    installer: Installer,
    env: Mapping[str, str],
    reporter: Reporter,
    force: bool = False,
    before_change: Callable[[], Awaitable[None]] | None = None,
    declared: Declared | None = None,
    previous: Declared | None = None,
) -> InstallOutcome:
    """Install every declared source unless nothing changed since the last successful install.

    ``declared`` is what was read (jobs/declared_job.py); without it the sources are read from
    ``requirements``'s folder. ``force`` (a user asked for a reinstall) runs the installer even
    when nothing changed. ``before_change`` is awaited once it is decided that the venv will
    change, before anything is written. ``previous``: the sources the last successful install
    had; a package a header declares only now is named in the summary even when the venv
    already had it ("numpy 2.1.3 added to notebook.py's dependencies").
    """
    if declared is None:
        declared = await off_loop(
            declared_job.gather,
            requirements.parent,
            requirements,
            env,
            HeaderCache(),
            [layout.root],
        )
    for problem in declared.problems:
        reporter.log("requirements", "orchestrator", problem)
    noted = "".join(f"; {problem}" for problem in declared.problems)
    if given_way := await off_loop(declared_job.notes, declared):
        reporter.log("requirements", "orchestrator", given_way)
        noted += f"; {given_way}"
    prepared = await off_loop(_prepare, declared, layout, installer, env, force)
    named = declared_job.describe(declared)
    if prepared is None:
        return InstallOutcome(
            "no_file",
            f"nothing declared: no requirements file at {requirements}, no notebook header "
            f"dependencies, no pyproject.toml{noted}",
            changes=no_changes(),
        )
    image, wanted, skip = prepared
    if skip:
        return InstallOutcome(
            "unchanged", f"{named} unchanged since the last install{noted}", changes=no_changes()
        )
    workdir = scratch.temp_root() / scratch.owned_name("orchestrator-install")
    await off_loop(workdir.mkdir, mode=0o700)
    given: InstallInput | None = None
    try:
        uv_bin = installer.uv_bin or find_uv() or "uv"
        given = await off_loop(
            declared_job.write_input, declared, image, uv_bin, env, workdir, installer.name == "uv"
        )
        if before_change is not None:
            await before_change()
        interrupted, expected = await off_loop(_mark_pending, given, layout, image, wanted)
        before = await off_loop(ledger.scan, layout.venv)
        outcome = await _run_installer(
            given,
            named,
            layout,
            installer,
            env,
            reporter,
            image,
            interrupted,
            expected,
            wanted,
            declared,
        )
        outcome += await _remove_unrequested_copies(
            InstallerRun(installer, layout, env, reporter, declared), given.names_file, named, image
        )
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):  # our own files: the manifest, the input
            raise DiskFullError(
                f"the disk is full: {error.strerror} ({error.filename or 'writing'})"
            ) from None
        raise
    finally:
        await off_loop(_clean_up, workdir, layout, None if given is None else given.names_file)
    added = None if previous is None else declared_job.header_additions(previous, declared)
    after = await off_loop(ledger.scan, layout.venv)
    return InstallOutcome(
        "installed",
        f"{outcome}{noted}",
        summary(before, after, declared, added),
        changes(before, after, declared, added),
    )


async def _run_installer(
    given: InstallInput,
    named: str,
    layout: StateLayout,
    installer: Installer,
    env: Mapping[str, str],
    reporter: Reporter,
    image: dict[str, str],
    interrupted: bool,
    expected: float | None,
    wanted: str,
    declared: Declared,
) -> str:
    reinstall = []
    if interrupted:
        reporter.log("requirements", "orchestrator", "The last install was interrupted: redoing it")
        reinstall = ["--reinstall"] if installer.name == "uv" else ["--force-reinstall"]
    reporter.step_progress("requirements", f"Installing {named} with {installer.name}")
    if expected is not None:
        reporter.step_expected("requirements", float(expected))
    started = time.monotonic()
    run = InstallerRun(installer, layout, env, reporter, declared)
    try:
        if installer.name == "uv":
            try:
                extra = await _install_with_uv(run, given, named, image, reinstall)
            except TransientError as error:
                # The cache on the state volume may hold everything: try without the index.
                reporter.log("requirements", "orchestrator", f"{error}; trying the cache offline")
                run.env = {**run.env, "UV_OFFLINE": "1"}
                try:
                    extra = await _install_with_uv(run, given, named, image, reinstall)
                except (TransientError, PermanentError):
                    raise error from None
                extra += " (offline, from the cache)"
        else:
            try:
                await run(
                    installer.install_argv(layout.venv_python, [*reinstall, "-r", str(given.path)])
                )
            except JobError as error:
                raise error.renamed(str(given.path), named) from None
            # pip keeps an installed version when a local wheel of that version changed (uv
            # installs it again by itself); the install runs only when something changed.
            if changed := await off_loop(local_files, declared.references, run.folder or Path()):
                paths = [str(path) for path in changed]
                await run(
                    installer.install_argv(
                        layout.venv_python, ["--force-reinstall", "--no-deps", *paths]
                    )
                )
            extra = ""
    except JobError:
        # The installer ran to its end and failed: not an interruption, nothing to force.
        await off_loop(_clear_pending, layout)
        raise
    duration = time.monotonic() - started
    await off_loop(_record_success, layout, installer, wanted, duration)
    return f"Installed {named} with {installer.name} in {duration:.1f} s{extra}"


# -- the blocking parts of install(), run off the loop (jobs/blocking.py) ----------------------


def _prepare(
    declared: Declared,
    layout: StateLayout,
    installer: Installer,
    env: Mapping[str, str],
    force: bool,
) -> tuple[dict[str, str], str, bool] | None:
    """Checks the sources; None when nothing is declared. The last item says the install can
    be skipped (unchanged and not forced)."""
    declared_job.check(declared)
    if declared_job.nothing_declared(declared):
        return None
    top = declared.requirements_file
    if top.exists():
        try:
            validate(top, top.read_text(encoding="utf-8", errors="replace"))
        except OSError as error:
            raise PermanentError(f"cannot read {top}: {error.strerror}") from None
    image = image_job.image_distributions()
    wanted = declared_job.fingerprint(declared, installer, env, image)
    manifest = Manifest.load(layout.manifest)
    unchanged = (
        not force and manifest.install is not None and manifest.install.fingerprint == wanted
    )
    return image, wanted, unchanged


def _mark_pending(
    given: InstallInput, layout: StateLayout, image: Mapping[str, str], wanted: str
) -> tuple[bool, float | None]:
    """Records the install as under way. Returns whether the previous one was interrupted, and
    how long the last one took (None if unknown)."""
    manifest = Manifest.load(layout.manifest)
    interrupted = manifest.pending_install is not None
    manifest.install = None
    manifest.pending_install = wanted
    manifest.save(layout.manifest)
    ledger.sync(layout, given.names_file, image)
    expected = manifest.history.get("last_install_seconds")
    return interrupted, None if expected is None else float(expected)


def _clear_pending(layout: StateLayout) -> None:
    failed = Manifest.load(layout.manifest)
    failed.pending_install = None
    failed.save(layout.manifest)


def _clean_up(workdir: Path, layout: StateLayout, names_file: Path | None) -> None:
    if names_file is not None:
        # Even after a failure half-way: what got in was asked for by us, not by the user.
        ledger.record_baseline(layout, names_file)
    shutil.rmtree(workdir, ignore_errors=True)


def _record_success(
    layout: StateLayout, installer: Installer, wanted: str, duration: float
) -> None:
    manifest = Manifest.load(layout.manifest)
    manifest.install = InstallRecord(
        fingerprint=wanted, installer=installer.name, finished_at=time.time(), duration=duration
    )
    manifest.pending_install = None
    manifest.history["last_install_seconds"] = round(duration, 3)
    manifest.save(layout.manifest)


async def _remove_unrequested_copies(
    run: InstallerRun, names_file: Path, named: str, image: Mapping[str, str]
) -> str:
    """A pin removed from the sources takes effect: the venv's copy of an image package that
    nothing asks for any more goes, so the image's version is seen again."""
    stale = await off_loop(ledger.unrequested_image_copies, run.layout, names_file, image)
    if not stale:
        return ""
    described = ", ".join(
        f"{name} {version} (the image has {image[name]})" for name, version in sorted(stale.items())
    )
    run.reporter.log(
        "requirements",
        "orchestrator",
        f"{named} no longer asks for {described}: removing the venv's copy",
    )
    await run(run.installer.uninstall_argv(run.layout.venv_python, sorted(stale)))
    return f"; removed the venv's {described}: no longer in {named}"
