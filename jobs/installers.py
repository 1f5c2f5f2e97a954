"""uv and pip: which one runs, and its command line (what its output means: installer_output.py).

Both installers' own settings (``PIP_*``, ``UV_*``) pass through untouched; we only add the
cache location and bound their built-in retries so that our retry policy decides, and the page
can say "attempt 2 of 5" truthfully.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal, NamedTuple

from jobs.errors import PermanentError
from jobs.layout import StateLayout
from jobs.settings import InstallerChoice

InstallerName = Literal["uv", "pip"]

INDEX_VARIABLES = (
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_NO_INDEX",
    "PIP_CONSTRAINT",
    "PIP_CONFIG_FILE",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
    "UV_CONSTRAINT",
)
"""Settings that change what an install resolves to: part of the skip fingerprint."""

PATH_VARIABLES = (
    "UV_CONFIG_FILE",
    "UV_CONSTRAINT",
    "UV_OVERRIDE",
    "UV_FIND_LINKS",
    "UV_CACHE_DIR",
    "PIP_CONFIG_FILE",
    "PIP_CONSTRAINT",
    "PIP_FIND_LINKS",
    "PIP_CACHE_DIR",
)
"""Settings that may hold paths relative to the orchestrator's working directory. The
installers run from the requirements file's folder (so that the file's relative paths mean
what they mean next to it): :meth:`Installer.environment` makes these absolute first."""


class Installer(NamedTuple):
    name: InstallerName
    uv_bin: str | None

    def install_argv(self, python: Path, args: list[str]) -> list[str]:
        """The command line installing ``args`` (e.g. ``["-r", path]``) into ``python``'s env."""
        if self.name == "uv":
            assert self.uv_bin is not None
            return [self.uv_bin, "pip", "install", "--python", str(python), *args]
        return [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            "--retries",
            "1",
            "--timeout",
            "30",
            *args,
        ]

    def uninstall_argv(self, python: Path, names: list[str]) -> list[str]:
        """The command line removing distributions ``names`` from ``python``'s env."""
        if self.name == "uv":
            assert self.uv_bin is not None
            return [self.uv_bin, "pip", "uninstall", "--python", str(python), *names]
        return [str(python), "-m", "pip", "uninstall", "--disable-pip-version-check", "-y", *names]

    def environment(self, base: Mapping[str, str], layout: StateLayout) -> dict[str, str]:
        """``base`` plus a cache on the state volume and bounded built-in retries."""
        env = dict(base)
        for name in PATH_VARIABLES:
            if env.get(name):
                env[name] = anchored(env[name])
        env.pop("VIRTUAL_ENV", None)
        env.pop("UV_PROJECT_ENVIRONMENT", None)
        if self.name == "uv":
            env.setdefault("UV_CACHE_DIR", str(layout.uv_cache))
            env.setdefault("UV_HTTP_TIMEOUT", "30")
            env.setdefault("UV_HTTP_RETRIES", "1")
            env.setdefault("UV_NO_PROGRESS", "1")
        else:
            env.setdefault("PIP_CACHE_DIR", str(layout.pip_cache))
        return env


def anchored(value: str) -> str:
    """Each relative path in a (space- or comma-separated) setting made absolute against the
    orchestrator's working directory; URLs and absolute paths are kept as they are."""
    import os
    import re

    def absolute(match: re.Match[str]) -> str:
        item = match.group(0)
        if "://" in item or item.startswith(("/", "~", "$")):
            return item
        return os.path.abspath(item)

    return re.sub(r"[^\s,]+", absolute, value)


def find_uv() -> str | None:
    """The uv binary shipped with the ``uv`` package, else one on PATH."""
    import shutil

    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def resolve_installer(choice: InstallerChoice) -> Installer:
    """``auto`` means uv when it is available, else pip."""
    if choice == "pip":
        return Installer("pip", None)
    uv_bin = find_uv()
    if uv_bin is None:
        if choice == "uv":
            raise PermanentError("--installer uv was chosen but no uv binary was found")
        return Installer("pip", None)
    return Installer("uv", uv_bin)
