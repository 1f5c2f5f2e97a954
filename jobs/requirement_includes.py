"""A requirements file and every file it includes (``-r``, ``-c`` and their long forms).

What an install resolves to depends on every file reached this way, so the skip check must
cover all of their contents, and a watcher must watch all of them.

Invariants:
- an include is resolved against the folder of the file that names it (as pip and uv do),
  after expanding ``${VAR}`` from the children's environment (pip's rule: upper case, digits
  and underscores only);
- each file is read once, whatever the cycles; a missing file is kept, with ``content`` None;
- only requirement lines go through ``packaging``; options, URLs and paths are left to the
  installers (jobs/requirements.py's ``validate`` reports lines the installers cannot read).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packaging.requirements import InvalidRequirement, Requirement

from jobs.direct_references import DirectReference, parse

IncludeKind = Literal["requirement", "constraint"]

_OPTIONS: dict[str, IncludeKind] = {
    "-r": "requirement",
    "--requirement": "requirement",
    "-c": "constraint",
    "--constraint": "constraint",
}
_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)\}")
_REMOTE = ("http://", "https://", "file:")


@dataclass(frozen=True)
class RequirementFile:
    """A file reached from the top file; ``content`` is None when it does not exist."""

    path: Path
    kind: IncludeKind
    content: bytes | None


@dataclass(frozen=True)
class SourcedRequirement:
    """A requirement line and the file it is in (as a constraint when ``kind`` says so)."""

    origin: Path
    requirement: Requirement
    kind: IncludeKind
    where: str = ""
    """The file's label and the line, for messages: ``requirements.txt line 2``."""


@dataclass(frozen=True)
class Followed:
    files: tuple[RequirementFile, ...]
    """The top file first, then its includes in the order they were found."""
    requirements: tuple[SourcedRequirement, ...]
    problems: tuple[str, ...]
    references: tuple[DirectReference, ...] = ()
    """Lines naming a path, a URL or a repository (jobs/direct_references.py), in every file."""


def logical_lines(text: str) -> list[str]:
    """Lines with ``\\`` continuations joined and comments removed, as pip reads them."""
    return [line for _, line in numbered_lines(text)]


def numbered_lines(text: str) -> list[tuple[int, str]]:
    """:func:`logical_lines`, each with the number of its first physical line (from 1)."""
    joined: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        start = start or number
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        joined.append((start, pending + raw))
        pending, start = "", 0
    if pending:
        joined.append((start, pending))
    result = []
    for number, line in joined:
        line = re.sub(r"(^|\s+)#.*$", "", line).strip()
        if line:
            result.append((number, line))
    return result


def includes(line: str) -> list[tuple[IncludeKind, str]]:
    """The files a line includes: ``-r x``, ``-rx``, ``--requirement=x``, ``-c x`` …"""
    try:
        tokens = shlex.split(line)
    except ValueError:
        return []
    found: list[tuple[IncludeKind, str]] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        for option, kind in _OPTIONS.items():
            if token == option and index < len(tokens):
                found.append((kind, tokens[index]))
                index += 1
                break
            if option.startswith("--") and token.startswith(option + "="):
                found.append((kind, token[len(option) + 1 :]))
                break
            if not option.startswith("--") and token.startswith(option) and len(token) > 2:
                found.append((kind, token[2:]))
                break
    return found


def follow(top: Path, env: Mapping[str, str], name: str) -> Followed:
    """Read ``top`` and every file it includes, recursively. ``name`` labels ``top`` in
    messages; included files are named by their path as written."""
    files: list[RequirementFile] = []
    requirements: list[SourcedRequirement] = []
    references: list[DirectReference] = []
    problems: list[str] = []
    seen: set[Path] = set()
    queue: list[tuple[Path, IncludeKind, str]] = [(top, "requirement", name)]
    while queue:
        path, kind, label = queue.pop(0)
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        try:
            content: bytes | None = path.read_bytes()
        except FileNotFoundError:
            content = None
        except OSError as error:
            problems.append(f"cannot read {label}: {error.strerror}")
            content = None
        files.append(RequirementFile(path, kind, content))
        if content is None:
            if path != top:
                problems.append(f"{label} is included but does not exist")
            continue
        for number, line in numbered_lines(content.decode("utf-8", "replace")):
            if kind == "requirement" and (reference := parse(line, label, number)) is not None:
                references.append(reference)
            if line.startswith("-"):
                for include_kind, target in includes(line):
                    target = _VARIABLE.sub(lambda m: env.get(m.group(1), m.group(0)), target)
                    if target.startswith(_REMOTE):
                        problems.append(
                            f"{label} includes {target}: a remote file is not followed, so its "
                            "changes are not noticed"
                        )
                        continue
                    # A file included from a constraints file constrains too.
                    effective: IncludeKind = "constraint" if kind == "constraint" else include_kind
                    queue.append((path.parent / target, effective, target))
                continue
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            requirements.append(
                SourcedRequirement(path, requirement, kind, f"{label} line {number}")
            )
    return Followed(tuple(files), tuple(requirements), tuple(problems), tuple(references))
