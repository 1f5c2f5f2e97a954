"""What should be installed: every place a marimo or uv user declares dependencies.

The sources, read without running anything:
- the requirements file (default ``<notebook_dir>/requirements.txt``, may be missing) with every
  file it includes (``-r``/``-c``, jobs/requirement_includes.py);
- the file ``UV_CONFIG_FILE`` names in the children's environment (a relative name is taken
  from the orchestrator's working directory; the installers get it made absolute);
- the local files and folders the requirement lines name by path (a wheel next to the
  requirements file), by their ``stat`` (jobs/direct_references.py); a path is relative to the
  requirements file's folder, where the installers run;
- each notebook's PEP 723 header (jobs/script_headers.py);
- ``pyproject.toml`` with ``uv.lock`` (the locked versions, exported by jobs/install_input.py),
  or ``pyproject.toml`` alone (its ``[project] dependencies``).

Invariants:
- :attr:`Declared.digest` covers the contents of every file that decides what gets installed
  and nothing else: a header's text but not the cells around it; a missing file hashes to a
  value of its own; a local distribution named by path counts by size and mtime. It changes
  exactly when one of them changes;
- :attr:`Declared.files` lists every file read, missing ones included (a watcher waits for them);
- nothing is dropped silently: what cannot be applied is in :attr:`Declared.problems`;
- a bare ``marimo`` requirement (no version, extras, URL; marimo adds one to the headers it
  writes) is not installed: the image provides marimo. A constrained one is kept, and the
  image filter (jobs/image.py) leaves it out when the image's version satisfies it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from jobs.direct_references import DirectReference, local_state, parse
from jobs.dist_metadata import canonical
from jobs.requirement_includes import SourcedRequirement, follow
from jobs.script_headers import HeaderCache, HeaderScan, ScriptHeader, parse_requirements


@dataclass(frozen=True)
class LockedProject:
    """A uv project in the notebook folder: ``pyproject.toml`` and ``uv.lock``."""

    pyproject: Path
    lock: Path
    pins: Mapping[str, str]
    """canonical name → version, for the packages uv.lock holds in exactly one version (those
    locked in several, per platform, are left out). Used for conflicts; what gets installed
    comes from ``uv export`` (jobs/install_input.py)."""


@dataclass(frozen=True)
class Declared:
    """Everything declared in a notebook folder; see the module's docstring."""

    notebook_dir: Path
    requirements_file: Path
    digest: str
    files: tuple[Path, ...]
    headers: tuple[ScriptHeader, ...]
    requirement_lines: tuple[SourcedRequirement, ...]
    """Requirement lines of the requirements file and its includes (constraints marked)."""
    lock: LockedProject | None
    project_dependencies: tuple[Requirement, ...]
    """``[project] dependencies`` of a ``pyproject.toml`` without ``uv.lock``."""
    index_options: tuple[str, ...]
    """Installer options from the headers' ``[tool.uv]`` (``--index-url …`` lines)."""
    problems: tuple[str, ...]
    parts: tuple[tuple[str, str | None], ...] = ()
    """What :attr:`digest` hashes: ``(role:name, sha256 or None)`` per source, e.g.
    ``("header:sales.py", …)``; comparing two tells which source changed."""
    references: tuple[DirectReference, ...] = ()
    """Lines naming a path, a URL or a repository instead of a project, in the requirements
    files and the headers, with where each is (for messages naming the line)."""

    @property
    def install_folder(self) -> Path:
        """Where the installers run, so relative paths mean what they mean next to the
        requirements file: its folder, or the notebook folder when that folder is missing."""
        folder = self.requirements_file.parent
        return folder if folder.is_dir() else self.notebook_dir

    def asked_where(self) -> dict[str, str]:
        """canonical name → the line that asks for it (``requirements.txt line 2``, ``sales.py's
        header``), for failure messages; the first source wins."""
        from jobs.dist_metadata import canonical

        found: dict[str, str] = {}
        for entry in self.requirement_lines:
            if entry.kind != "constraint" and entry.where:
                found.setdefault(canonical(entry.requirement.name), entry.where)
        for header in self.headers:
            for dependency in header.dependencies:
                found.setdefault(canonical(dependency.name), f"{self.label(header.path)}'s header")
        return found

    def label(self, path: Path) -> str:
        """A file's name in messages: relative to the notebook folder when inside it."""
        try:
            return str(path.relative_to(self.notebook_dir))
        except ValueError:
            return str(path)


def is_bare_marimo(requirement: Requirement) -> bool:
    return (
        canonical(requirement.name) == "marimo"
        and not requirement.specifier
        and not requirement.extras
        and not requirement.url
    )


def collect(
    notebook_dir: Path,
    requirements_file: Path | None,
    env: Mapping[str, str],
    python_version: str,
    cache: HeaderCache | None = None,
    excluded: Iterable[Path] = (),
) -> Declared:
    """Read every source under ``notebook_dir``. ``python_version`` is the venv's interpreter
    version (``requires-python`` is checked against it); ``excluded`` are folders the header
    scan never enters (the state directory); ``cache`` keeps unchanged notebooks unread."""
    notebook_dir = Path(os.path.realpath(notebook_dir))
    top = Path(os.path.realpath(requirements_file or notebook_dir / "requirements.txt"))
    material: list[tuple[str, str | None]] = []
    files: list[Path] = []
    problems: list[str] = []

    def add(role: str, path: Path, content: bytes | None) -> None:
        files.append(path)
        digest = None if content is None else hashlib.sha256(content).hexdigest()
        material.append((f"{role}:{_name(notebook_dir, path)}", digest))

    followed = follow(top, env, top.name)
    for entry in followed.files:
        add(entry.kind, entry.path, entry.content)
    problems.extend(followed.problems)
    references = list(followed.references)
    for reference in followed.references:
        if reference.kind == "path":
            state = local_state(reference, top.parent)
            material.append((f"local:{reference.location}", state))

    if config := env.get("UV_CONFIG_FILE"):
        path = Path(os.path.abspath(config))
        add("uv-config", path, _read(path))

    scans = (cache or HeaderCache()).scan(notebook_dir, excluded)
    headers = _headers(notebook_dir, scans, Version(python_version), problems)
    for header in headers:
        label = f"{_name(notebook_dir, header.path)}'s header"
        for dependency in header.dependencies:
            if dependency.url and (found := parse(str(dependency), label, None)):
                references.append(found)
    for scan in scans:
        material.append((f"header:{_name(notebook_dir, scan.path)}", _header_sha(scan)))
        files.append(scan.path)

    pyproject_path, lock_path = notebook_dir / "pyproject.toml", notebook_dir / "uv.lock"
    pyproject_bytes, lock_bytes = _read(pyproject_path), _read(lock_path)
    add("pyproject", pyproject_path, pyproject_bytes)
    add("lock", lock_path, lock_bytes)
    lock, project_dependencies = _project(
        pyproject_path, pyproject_bytes, lock_path, lock_bytes, Version(python_version), problems
    )
    index_options = _index_options(notebook_dir, headers, problems)
    digest = hashlib.sha256(json.dumps(material).encode()).hexdigest()
    return Declared(
        notebook_dir=notebook_dir,
        requirements_file=top,
        digest=digest,
        files=tuple(files),
        headers=headers,
        requirement_lines=followed.requirements,
        lock=lock,
        project_dependencies=project_dependencies,
        index_options=index_options,
        problems=tuple(problems),
        parts=tuple(material),
        references=tuple(references),
    )


def _name(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _header_sha(scan: HeaderScan) -> str | None:
    """What in a header decides what gets installed, not how it is written: marimo rewrites a
    header when it saves a notebook (layout, order, a bare ``marimo`` added), and that must not
    run an installer. A header that does not parse counts by its text."""
    header = scan.header
    if header is None:
        return _sha(None if scan.block is None else scan.block.encode())
    meaning = {
        "dependencies": sorted(
            str(requirement)
            for requirement in header.dependencies
            if not is_bare_marimo(requirement)
        ),
        "requires-python": None if header.requires_python is None else str(header.requires_python),
        "index": {key: repr(value) for key, value in sorted(header.index_settings.items())},
        "venv": header.venv,
    }
    return _sha(json.dumps(meaning, sort_keys=True).encode())


def _sha(content: bytes | None) -> str | None:
    return None if content is None else hashlib.sha256(content).hexdigest()


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _headers(
    root: Path, scans: tuple[HeaderScan, ...], python: Version, problems: list[str]
) -> tuple[ScriptHeader, ...]:
    headers = []
    for scan in scans:
        problems.extend(scan.problems)
        header = scan.header
        if header is None:
            continue
        headers.append(header)
        name = _name(root, header.path)
        if header.requires_python is not None and not header.requires_python.contains(
            python, prereleases=True
        ):
            problems.append(
                f"{name}: its header asks for Python {header.requires_python}, "
                f"the environment has Python {python}"
            )
        if header.venv is not None:
            problems.append(
                f"{name}: its header sets [tool.marimo.venv] to {header.venv!r}: marimo may run "
                "this notebook's kernel there, outside the managed environment"
            )
    return tuple(headers)


def _project(
    pyproject: Path,
    pyproject_bytes: bytes | None,
    lock: Path,
    lock_bytes: bytes | None,
    python: Version,
    problems: list[str],
) -> tuple[LockedProject | None, tuple[Requirement, ...]]:
    if pyproject_bytes is None:
        if lock_bytes is not None:
            problems.append("uv.lock has no pyproject.toml next to it: it is not used")
        return None, ()
    try:
        data = tomllib.loads(pyproject_bytes.decode("utf-8", "replace"))
    except tomllib.TOMLDecodeError as error:
        problems.append(f"pyproject.toml is not valid TOML: {error}")
        return None, ()
    project = data.get("project")
    if not isinstance(project, dict):
        if lock_bytes is not None:
            problems.append("uv.lock is not used: pyproject.toml has no [project] table")
        return None, ()
    if (spec := project.get("requires-python")) is not None:
        try:
            if not SpecifierSet(str(spec)).contains(python, prereleases=True):
                problems.append(
                    f"pyproject.toml asks for Python {spec}, the environment has Python {python}"
                )
        except InvalidSpecifier:
            problems.append(f"pyproject.toml: requires-python {spec!r} is not valid")
    if lock_bytes is not None:
        return LockedProject(pyproject, lock, _pins(lock_bytes, problems)), ()
    dependencies = parse_requirements(
        project.get("dependencies", []) or [], "pyproject.toml: dependency", problems
    )
    return None, tuple(dependencies)


def _pins(lock_bytes: bytes, problems: list[str]) -> Mapping[str, str]:
    try:
        data = tomllib.loads(lock_bytes.decode("utf-8", "replace"))
    except tomllib.TOMLDecodeError as error:
        problems.append(f"uv.lock is not valid TOML: {error}")
        return {}
    versions: dict[str, set[str]] = {}
    for package in data.get("package", []):
        if not isinstance(package, dict) or "registry" not in package.get("source", {}):
            continue
        name, version = package.get("name"), package.get("version")
        if isinstance(name, str) and isinstance(version, str):
            versions.setdefault(canonical(name), set()).add(version)
    return {name: found.pop() for name, found in versions.items() if len(found) == 1}


def _index_options(
    root: Path, headers: tuple[ScriptHeader, ...], problems: list[str]
) -> tuple[str, ...]:
    """The headers' ``[tool.uv]`` index settings as installer options, in one set for the one
    environment: two different default indexes cannot both apply, and are reported."""
    defaults: dict[str, list[str]] = {}
    options: list[str] = []
    no_index: list[str] = []

    def once(line: str) -> None:
        if line not in options:
            options.append(line)

    for header in headers:
        name = _name(root, header.path)
        settings = header.index_settings
        if isinstance(url := settings.get("index-url"), str):
            defaults.setdefault(url, []).append(name)
        for url in _strings(settings.get("extra-index-url")):
            once(f"--extra-index-url {url}")
        for url in _strings(settings.get("find-links")):
            once(f"--find-links {url}")
        if settings.get("no-index") is True:
            no_index.append(name)
        indexes = settings.get("index")
        for entry in indexes if isinstance(indexes, list) else []:
            url = entry.get("url") if isinstance(entry, dict) else None
            if not isinstance(url, str):
                problems.append(f"{name}: its header has a [[tool.uv.index]] without a url")
            elif entry.get("explicit") is True:
                problems.append(
                    f"{name}: its header's explicit index {url} is not applied: packages are "
                    "bound to it through [tool.uv.sources], which a shared environment cannot "
                    "honour"
                )
            elif entry.get("default") is True:
                defaults.setdefault(url, []).append(name)
            else:
                once(f"--extra-index-url {url}")
    if len(defaults) > 1:
        described = "; ".join(f"{', '.join(names)} use {url}" for url, names in defaults.items())
        problems.append(f"the notebooks' headers name different default indexes: {described}")
    elif defaults:
        options.insert(0, f"--index-url {next(iter(defaults))}")
    if no_index:
        options.insert(0, "--no-index")
    return tuple(options)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []
