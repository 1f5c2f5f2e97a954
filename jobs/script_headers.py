"""PEP 723 script headers (``# /// script`` … ``# ///``) of the notebooks, read cheaply.

A notebook's header says what it needs: ``dependencies`` (PEP 508), ``requires-python``,
``[tool.uv]`` index settings and marimo's ``[tool.marimo.venv]``. This module parses one header
(:func:`parse_header`) and keeps a folder's headers current (:class:`HeaderCache`).

Invariants:
- a notebook is read only when its ``(size, mtime_ns)`` differs from the previous scan's;
- ``block`` is the header's text only, so an edit in a cell body never changes it;
- nothing is dropped silently: an unparsable header, a line that is not PEP 508 and every
  ``[tool.uv]`` key we do not apply become ``problems`` naming the notebook;
- the walk follows jobs/notebook_scan.py: it never enters a hidden folder, a cache, a virtual
  environment (a folder holding ``pyvenv.cfg``), an excluded folder (the state directory) nor a
  symbolic link, and reads only ``*.py`` files.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from jobs.notebook_scan import MAX_BYTES, SKIPPED_DIRS

HEADER = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")
"""The regular expression PEP 723 gives."""

INDEX_KEYS = frozenset({"index-url", "extra-index-url", "find-links", "no-index", "index"})
"""``[tool.uv]`` keys the orchestrator applies (as installer options, see jobs/sources.py)."""


@dataclass(frozen=True)
class ScriptHeader:
    """One notebook's parsed header."""

    path: Path
    dependencies: tuple[Requirement, ...]
    requires_python: SpecifierSet | None
    index_settings: Mapping[str, object]
    """The ``[tool.uv]`` keys of :data:`INDEX_KEYS` that the header sets, as given."""
    venv: str | None
    """``[tool.marimo.venv] path`` (or ``[tool.marimo] venv = "…"``): marimo may run this
    notebook's kernel there, outside the managed venv."""


@dataclass(frozen=True)
class HeaderScan:
    """What one notebook declares: ``block`` is None when it has no script header; ``header``
    is None when it has none or when the header does not parse."""

    path: Path
    block: str | None
    header: ScriptHeader | None
    problems: tuple[str, ...]


def find_block(text: str) -> tuple[str, str] | None:
    """(the header's raw text, its TOML) of the ``script`` block, or None.

    PEP 723: more than one ``script`` block is an error: a ValueError whose first argument is
    the blocks' text.
    """
    blocks = [match for match in HEADER.finditer(text) if match.group("type") == "script"]
    if not blocks:
        return None
    if len(blocks) > 1:
        raise ValueError("".join(match.group(0) for match in blocks))
    match = blocks[0]
    toml = "".join(
        line[2:] if line.startswith("# ") else line[1:]
        for line in match.group("content").splitlines(keepends=True)
    )
    return match.group(0), toml


def parse_header(path: Path, text: str, name: str) -> HeaderScan:
    """Parse ``text`` (the notebook at ``path``, called ``name`` in messages)."""
    try:
        found = find_block(text)
    except ValueError as error:
        problem = f"{name}: it has more than one `# /// script` header"
        return HeaderScan(path, str(error.args[0]), None, (problem,))
    if found is None:
        return HeaderScan(path, None, None, ())
    block, toml = found
    try:
        data = tomllib.loads(toml)
    except tomllib.TOMLDecodeError as error:
        return HeaderScan(
            path, block, None, (f"{name}: its `# /// script` header is not valid TOML: {error}",)
        )
    problems: list[str] = []
    dependencies: list[Requirement] = []
    raw = data.get("dependencies", [])
    if not isinstance(raw, list):
        problems.append(f"{name}: its header's `dependencies` is not a list")
        raw = []
    dependencies.extend(parse_requirements(raw, f"{name}: its header's dependency", problems))
    requires_python = None
    if (spec := data.get("requires-python")) is not None:
        try:
            requires_python = SpecifierSet(str(spec))
        except InvalidSpecifier:
            problems.append(f"{name}: its header's requires-python {spec!r} is not valid")
    tool = _table(data.get("tool"))
    uv = _table(tool.get("uv"))
    index = {key: value for key, value in uv.items() if key in INDEX_KEYS}
    for key in sorted(set(uv) - INDEX_KEYS):
        problems.append(
            f"{name}: its header's [tool.uv] sets `{key}`, which the orchestrator does not apply "
            "to the shared environment"
        )
    venv = _venv(_table(tool.get("marimo")))
    header = ScriptHeader(path, tuple(dependencies), requires_python, MappingProxyType(index), venv)
    return HeaderScan(path, block, header, tuple(problems))


def _table(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _venv(marimo: dict[str, object]) -> str | None:
    venv = marimo.get("venv")
    if isinstance(venv, str):
        return venv
    path = _table(venv).get("path")
    return path if isinstance(path, str) else None


class HeaderCache:
    """The headers of a folder's notebooks; a notebook is re-read only when it changed."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple[int, int], HeaderScan]] = {}
        self.reads = 0
        """Notebooks read so far (for tests and the benchmark)."""

    def scan(self, root: Path, excluded: Iterable[Path] = ()) -> tuple[HeaderScan, ...]:
        """The headers under ``root``, ordered by relative path (notebooks with none left out)."""
        root_text = os.path.realpath(root)
        skip = {os.path.realpath(path) for path in excluded}
        known: dict[str, tuple[tuple[int, int], HeaderScan]] = {}
        stack = [root_text]
        prefix = len(root_text) + 1
        while stack:
            directory = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            if directory != root_text and any(e.name == "pyvenv.cfg" for e in entries):
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if entry.name not in SKIPPED_DIRS and entry.path not in skip:
                            stack.append(entry.path)
                        continue
                    if not entry.name.endswith(".py") or not entry.is_file(follow_symlinks=False):
                        continue
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = (info.st_size, info.st_mtime_ns)
                previous = self._known.get(entry.path)
                if previous is not None and previous[0] == key:
                    known[entry.path] = previous
                    continue
                if info.st_size > MAX_BYTES:
                    continue
                self.reads += 1
                try:
                    text = Path(entry.path).read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                known[entry.path] = (key, parse_header(Path(entry.path), text, entry.path[prefix:]))
        self._known = known
        ordered = (scan for _, (_, scan) in sorted(known.items()))
        return tuple(scan for scan in ordered if scan.block is not None)


def parse_requirements(
    items: Iterable[object], what: str, problems: list[str]
) -> list[Requirement]:
    """Each item as a PEP 508 requirement; one that is not becomes a problem naming ``what``
    (e.g. "sales.py: its header's dependency") and the item, and is left out."""
    parsed = []
    for item in items:
        try:
            parsed.append(Requirement(str(item)))
        except InvalidRequirement as error:
            problems.append(
                f"{what} {item!r} is not a valid requirement ({str(error).splitlines()[0]})"
            )
    return parsed
