"""The one requirements file the installer is given, made from every declared source.

It ``-r``-includes the user's requirements file by absolute path (so its own relative includes
keep working), then carries the headers' index options, every header dependency (markers
kept, a bare ``marimo`` left out: the image provides it; an exact pin that gives way to a
curated file, jobs/source_conflicts.py ``yielded``, by its name, extras and markers only), a
lone ``pyproject.toml``'s dependencies, and a uv project's locked versions.

Invariants:
- a uv project is never resolved here: its lock is checked against its ``pyproject.toml``
  (``uv export --locked --offline``) and exported as pinned lines without network; a lock that
  does not match is a :class:`PermanentError` naming both files, never a silent re-lock;
- local paths in the export are made absolute, since the file lives in another folder;
- the file is written only into the given work folder. Blocking (runs uv): call it through
  jobs/blocking.py's ``off_loop``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from packaging.requirements import Requirement

from jobs.errors import PermanentError
from jobs.source_conflicts import yielded
from jobs.sources import Declared, LockedProject, is_bare_marimo

EXPORT_TIMEOUT = 60.0
FILE_NAME = "declared-requirements.txt"


def write_install_input(
    declared: Declared, workdir: Path, uv_bin: str, env: Mapping[str, str]
) -> Path:
    """Write the combined requirements file into ``workdir`` and return its path.

    ``uv_bin`` runs the export of a uv project (whichever installer installs); ``env`` is the
    children's environment (its ``UV_CACHE_DIR`` and index settings apply to the check).
    """
    lines = [f"# Every declared dependency, for the installer (written by {__name__})"]
    if declared.requirements_file.exists():
        lines.append(f"-r {declared.requirements_file.resolve()}")
    lines.extend(declared_lines(declared, uv_bin, env))
    target = workdir / FILE_NAME
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def declared_lines(declared: Declared, uv_bin: str, env: Mapping[str, str]) -> list[str]:
    """Everything but the requirements file: the headers' index options and dependencies, a
    lone ``pyproject.toml``'s dependencies, a uv project's locked versions (each line ends with
    ``  # <source>`` but the locked ones)."""
    lines = list(declared.index_options)
    seen: set[str] = set()
    gives_way = {(entry.notebook, str(entry.pin)) for entry in yielded(declared)}
    for header in declared.headers:
        name = declared.label(header.path)
        for dependency in header.dependencies:
            if (name, str(dependency)) in gives_way:
                dependency = unpinned(dependency)
            if is_bare_marimo(dependency) or str(dependency) in seen:
                continue
            seen.add(str(dependency))
            lines.append(f"{dependency}  # {name}")
    for dependency in declared.project_dependencies:
        if not is_bare_marimo(dependency):
            lines.append(f"{dependency}  # pyproject.toml")
    if declared.lock is not None:
        lines.extend(locked_lines(declared.lock, uv_bin, env))
    return lines


def unpinned(requirement: Requirement) -> Requirement:
    """The same requirement without its version specifier (name, extras and markers kept)."""
    bare = Requirement(str(requirement))
    bare.specifier = type(bare.specifier)()
    return bare


def locked_lines(project: LockedProject, uv_bin: str, env: Mapping[str, str]) -> list[str]:
    """The lock's pinned requirements (``name==version ; markers``), checked and offline."""
    folder = project.pyproject.parent
    argv = [
        uv_bin,
        "export",
        "--locked",
        "--offline",
        "--no-python-downloads",
        "--format",
        "requirements-txt",
        "--no-hashes",
        "--no-header",
        "--no-annotate",
        "--no-emit-project",
        "--directory",
        str(folder),
    ]
    child = dict(env)
    for name in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "UV_FROZEN", "UV_NO_SYNC"):
        child.pop(name, None)
    try:
        done = subprocess.run(
            argv,
            env=child,
            capture_output=True,
            text=True,
            timeout=EXPORT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise PermanentError(
            f"uv took more than {EXPORT_TIMEOUT:.0f} s to read {project.lock}"
        ) from None
    except OSError as error:
        raise PermanentError(f"cannot run uv to read {project.lock}: {error.strerror}") from None
    if done.returncode != 0:
        said = " ".join(line.strip() for line in done.stderr.splitlines() if line.strip())
        raise PermanentError(
            f"{project.lock} does not match {project.pyproject} (or cannot be checked "
            f"offline): run `uv lock` in {folder} and commit uv.lock; the orchestrator never "
            f"re-locks. uv said: {said[-600:]}"
        )
    return [_absolute(line, folder) for line in done.stdout.splitlines() if line.strip()]


def _absolute(line: str, folder: Path) -> str:
    """``./pkg`` and ``-e ./pkg`` relative to the project, made absolute."""
    prefix, rest = ("-e ", line[3:]) if line.startswith("-e ") else ("", line)
    if rest.startswith(("./", "../")) or rest in (".", ".."):
        return prefix + os.path.normpath(folder / rest)
    return line
