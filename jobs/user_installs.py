"""The packages users install themselves (marimo's Install button, a terminal) kept working:
restored into a rebuilt venv at the versions the ledger recorded (jobs/ledger.py), and given
the versions of the image's packages they truly need.

Invariants: a restore installs exactly the ledger's packages the venv lacks, ``--no-deps`` (the
ledger has every one the user installed), from the cache when the index cannot be reached; an
image package is replaced in the venv only when a venv package's requirement excludes the
image's version, and the log says which, by which version, and for whom; every installer run
goes through :class:`jobs.installer_run.InstallerRun`.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping

from jobs import image as image_job
from jobs import ledger, scratch
from jobs.blocking import off_loop
from jobs.errors import TransientError
from jobs.installer_run import InstallerRun
from jobs.installers import Installer
from jobs.layout import StateLayout
from jobs.reporting import Reporter


async def install_what_ui_packages_need(
    layout: StateLayout, installer: Installer, env: Mapping[str, str], reporter: Reporter
) -> str:
    """marimo's Install button leaves the image's packages out of uv's resolution (UV_EXCLUDE);
    when a package it installed truly needs another version of one, that version goes into the
    venv now. Returns what was replaced and why ("" when nothing was needed)."""
    image, wanted = await off_loop(_image_packages_needed, layout)
    if not wanted:
        return ""
    run = InstallerRun(installer, layout, env, reporter)
    specs = [requirement for requirement, _ in wanted.values()]
    workdir = scratch.temp_root() / scratch.owned_name("orchestrator-install")
    workdir.mkdir(mode=0o700)
    try:
        args = list(specs)
        if installer.name == "uv":
            excludes_file = workdir / "image-excludes.txt"
            others = sorted(set(image) - set(wanted))
            excludes_file.write_text("".join(f"{name}\n" for name in others), encoding="utf-8")
            args = ["--excludes", str(excludes_file), *specs]
        await run(installer.install_argv(layout.venv_python, args))
    finally:
        await off_loop(shutil.rmtree, workdir, ignore_errors=True)
    now = await off_loop(ledger.scan, layout.venv)
    described = "; ".join(
        f"the image's {name} {image[name]} is replaced in the venv by {name} "
        f"{now.get(name, '?')}: {by} needs {requirement}"
        for name, (requirement, by) in sorted(wanted.items())
    )
    reporter.log("requirements", "orchestrator", described)
    return described


async def restore_user_packages(
    layout: StateLayout, installer: Installer, env: Mapping[str, str], reporter: Reporter
) -> str:
    """Reinstall the ledger's packages that a rebuilt venv lacks, at their recorded versions."""
    pins = await off_loop(ledger.missing_user_packages, layout)
    if not pins:
        await off_loop(ledger.mark_restored, layout)
        return ""
    reporter.step_progress("requirements", f"Restoring {len(pins)} packages you installed", 0.96)
    run = InstallerRun(installer, layout, env, reporter)
    try:
        await run(installer.install_argv(layout.venv_python, ["--no-deps", *pins]))
    except TransientError:
        run.env = {**run.env, "UV_OFFLINE": "1"}
        await run(installer.install_argv(layout.venv_python, ["--no-deps", *pins]))
    await off_loop(ledger.mark_restored, layout)
    return f"; restored {', '.join(pins)}"


def _image_packages_needed(
    layout: StateLayout,
) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """The image's packages, and those a venv package needs in another version than the
    image's (name → (requirement, needed by))."""
    image = image_job.image_distributions()
    own = set(ledger.scan(layout.venv))
    return image, image_job.needs(ledger.site_packages(layout.venv), image, set(image) - own)
