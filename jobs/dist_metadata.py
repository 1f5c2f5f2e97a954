"""Installed distributions read from their metadata headers alone.

``importlib.metadata`` parses each METADATA file whole as an e-mail message (descriptions
included), on every install. The core metadata fields needed here (``Name``, ``Version``,
``Requires-Dist``) are single-line headers that come before the first blank line, so only that
block is read: the cost follows the headers, never the length of a description.

Invariant: the same distributions, in the same order, as ``importlib.metadata.distributions``
over the same paths (``*.dist-info`` and ``*.egg-info``, folder or file, per path in order).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


def canonical(name: str) -> str:
    """A distribution's name as PEP 503 compares it (``Foo_Bar.baz`` → ``foo-bar-baz``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    requires: list[str] = field(default_factory=list)


def _metadata_file(entry: os.DirEntry[str]) -> str | None:
    lowered = entry.name.lower()
    if lowered.endswith(".dist-info") and entry.is_dir():
        return os.path.join(entry.path, "METADATA")
    if lowered.endswith(".egg-info"):
        return os.path.join(entry.path, "PKG-INFO") if entry.is_dir() else entry.path
    return None


def _headers(path: str) -> Distribution | None:
    name = version = ""
    requires: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break  # the body (description) follows: not needed
                key, _, value = line.partition(":")
                key = key.lower()
                if key == "name":
                    name = value.strip()
                elif key == "version":
                    version = value.strip()
                elif key == "requires-dist":
                    requires.append(value.strip())
    except OSError:
        return None
    return Distribution(name, version, requires) if name else None


def distributions(paths: Iterable[str]) -> Iterator[Distribution]:
    for directory in paths:
        try:
            entries = list(os.scandir(directory or "."))
        except OSError:
            continue
        for entry in entries:
            metadata = _metadata_file(entry)
            if metadata is not None and (found := _headers(metadata)) is not None:
                yield found
