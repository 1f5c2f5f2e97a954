"""Requirement lines that name no project on an index: local paths (a wheel, an sdist, a folder,
``-e ./pkg``), URLs and version-control repositories, each with the file and line it is on.

The installers run from the requirements file's folder (jobs/requirements.py), so a relative
path means what it means next to that file, as when a user runs ``pip install -r
requirements.txt`` there; :func:`local_state` resolves it against that same folder.

Invariants:
- :func:`local_state` is cheap (a ``stat`` per file, never a read): a local distribution file
  replaced or touched changes the declared sources' digest; a folder counts by the files that
  define its build (``pyproject.toml``, ``setup.py``, ``setup.cfg``), not by its code (an
  editable install follows the code by itself);
- :func:`blamed` picks a reference only when the installer's error lines name its location, so
  a failure elsewhere is never pinned on a git or URL line.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

ReferenceKind = Literal["path", "url", "vcs"]

_VCS = ("git+", "hg+", "svn+", "bzr+")
_URL = ("http://", "https://", "ftp://")
_ARCHIVES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz")
_BUILD_FILES = ("pyproject.toml", "setup.py", "setup.cfg")
_EDITABLE = re.compile(r"^(?:-e|--editable)(?:\s+|=)(.+)$")
_EGG = re.compile(r"(?:^|&)egg=([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class DirectReference:
    """One line naming a path, a URL or a repository instead of a project."""

    label: str
    """The file it is in, as messages name it (``requirements.txt``, ``sales.py's header``)."""
    line: int | None
    """Its first line in that file (None for a notebook header)."""
    text: str
    """The line as written, comments removed."""
    kind: ReferenceKind
    location: str
    """The path as written, or the URL without ``git+``, the revision and the fragment: what an
    installer's error quotes."""
    name: str | None
    """The project it provides, when the line tells (``name @``, ``#egg=``, a file name)."""

    def where(self) -> str:
        return self.label if self.line is None else f"{self.label} line {self.line}"


def parse(text: str, label: str, line: int | None) -> DirectReference | None:
    """The reference on one logical line (comments removed), or None for a project name, an
    option or an include."""
    from packaging.requirements import InvalidRequirement, Requirement

    target, name = text.strip(), None
    if editable := _EDITABLE.match(target):
        target = editable.group(1).strip().strip("'\"")
    elif target.startswith("-"):
        return None
    else:
        try:
            requirement = Requirement(target)
        except InvalidRequirement:
            target = target.split(";", 1)[0].strip()
            target = re.sub(r"\[[^\]/]*\]$", "", target)  # ./pkg[extra]
        else:
            if requirement.url is None:
                return None
            target, name = requirement.url, requirement.name
    kind, location = _locate(target)
    if kind is None:
        return None
    return DirectReference(label, line, text.strip(), kind, location, name or _name_of(target))


def _locate(target: str) -> tuple[ReferenceKind | None, str]:
    lowered = target.lower()
    if lowered.startswith(_VCS):
        parts = urlsplit(target.split("+", 1)[1])
        path = parts.path.rsplit("@", 1)[0] if "@" in parts.path else parts.path
        return "vcs", urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    if lowered.startswith(_URL):
        parts = urlsplit(target)
        return "url", urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
    if lowered.startswith("file:"):
        return "path", unquote(urlsplit(target).path)
    if "/" in target or target.startswith(".") or lowered.endswith(_ARCHIVES):
        return "path", target
    return None, ""


def _name_of(target: str) -> str | None:
    from packaging.utils import (
        InvalidSdistFilename,
        InvalidWheelFilename,
        parse_sdist_filename,
        parse_wheel_filename,
    )

    if egg := _EGG.search(urlsplit(target).fragment):
        return egg.group(1)
    file_name = unquote(urlsplit(target).path).rstrip("/").rsplit("/", 1)[-1]
    try:
        if file_name.endswith(".whl"):
            return str(parse_wheel_filename(file_name)[0])
        if file_name.endswith((".tar.gz", ".zip")):
            return str(parse_sdist_filename(file_name)[0])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
    return None


def local_state(reference: DirectReference, folder: Path) -> str | None:
    """What decides a local path's install, cheaply: a file's size and mtime, a folder's build
    files' (None when it is missing). ``folder``: where the installers run from."""
    path = folder / os.path.expanduser(reference.location)
    try:
        found = path.stat()
    except OSError:
        return None
    if not stat.S_ISDIR(found.st_mode):
        return f"{found.st_size}:{found.st_mtime_ns}"
    parts = []
    for name in _BUILD_FILES:
        try:
            build = (path / name).stat()
        except OSError:
            continue
        parts.append(f"{name}:{build.st_size}:{build.st_mtime_ns}")
    return "folder;" + ";".join(parts)


def project_name(reference: DirectReference, folder: Path) -> str | None:
    """The project a reference provides: as the line tells, else a local folder's
    ``pyproject.toml`` ``[project] name`` (None when neither says)."""
    if reference.name is not None or reference.kind != "path":
        return reference.name
    import tomllib

    try:
        with open(folder / os.path.expanduser(reference.location) / "pyproject.toml", "rb") as f:
            project = tomllib.load(f).get("project")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    name = project.get("name") if isinstance(project, dict) else None
    return name if isinstance(name, str) else None


def local_files(references: Iterable[DirectReference], folder: Path) -> list[Path]:
    """The local distribution files (not folders, not editables) among ``references``."""
    found = []
    for reference in references:
        if reference.kind != "path" or reference.text.startswith("-"):
            continue
        path = folder / os.path.expanduser(reference.location)
        if path.is_file():
            found.append(path.resolve())
    return found


def blamed(
    references: Iterable[DirectReference], error_lines: list[str], folder: Path | None
) -> DirectReference | None:
    """The reference the installer's error lines name: its URL (pip's ``host='…'`` and path
    form included) or its path, resolved against ``folder`` (where the installer ran)."""
    text = "\n".join(error_lines)
    for reference in references:
        if reference.kind == "path":
            # Both installers quote the path they resolved, from the folder they ran in.
            if folder is not None and os.path.normpath(folder / reference.location) in text:
                return reference
            continue
        if reference.location in text or reference.location.rstrip("/") in text:
            return reference
        parts = urlsplit(reference.location)
        host = f"host='{parts.hostname}'"
        if parts.path and parts.path in text and host in text:
            return reference
    return None
