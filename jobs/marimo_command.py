"""How marimo is started: its command line, environment, port and token file.

Standard library only (plus the light job modules): the warm-start path in jobs/head_start.py
starts marimo from here before the server's own modules have loaded.

Invariants: the token reaches marimo only through a 0600 file in a private directory that the
caller deletes once marimo answered; it is never on a command line or in the environment.
``MARIMO_MANAGE_SCRIPT_METADATA`` is in marimo's environment exactly when
:func:`records_installs` says so, whatever the orchestrator's own environment holds: marimo's
recording forces its package manager to uv, so it is never set with pip.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from jobs.installers import Installer
from jobs.layout import StateLayout
from jobs.scratch import owned_name, temp_root
from jobs.settings import MarimoMode, RunAs

MANAGE_SCRIPT_METADATA = "MARIMO_MANAGE_SCRIPT_METADATA"
_SCRUBBED_VARIABLES = ("UV", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONHOME", "CONDA_PREFIX")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def records_installs(wanted: bool, mode: MarimoMode, installer: Installer) -> bool:
    """Whether marimo writes Install-button installs into the notebook's PEP 723 header: asked
    for (``--record-installs``), in edit mode (run mode has no Install button), with uv (marimo's
    recording switches its Install button to uv; with pip the user's choice of installer wins
    and nothing is recorded)."""
    return wanted and mode == "edit" and installer.name == "uv"


NOT_RECORDED_WITH_PIP = (
    "Packages installed with marimo's Install button are not recorded in the notebook's "
    "header: marimo records them only when it installs with uv, and the installer is pip "
    "(they are kept in the state folder's ledger instead)"
)


def marimo_environment(
    base: Mapping[str, str],
    python: Path,
    layout: StateLayout,
    installer: Installer,
    user: RunAs | None = None,
    record_installs: bool = False,
) -> dict[str, str]:
    """What marimo runs with: the venv first on PATH, our installer and its cache (with the
    image's packages excluded from uv's resolution, when that list was written), the state
    volume's config. Inherited variables that would switch marimo's uv to project mode are
    dropped first (see reference/marimo.md). ``record_installs``: the result of
    :func:`records_installs`."""
    env = {key: value for key, value in base.items() if key not in _SCRUBBED_VARIABLES}
    env.pop(MANAGE_SCRIPT_METADATA, None)
    if record_installs:
        env[MANAGE_SCRIPT_METADATA] = "true"
    venv_bin = python.parent
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', os.defpath)}"
    if (venv_bin.parent / "pyvenv.cfg").exists():
        env["VIRTUAL_ENV"] = str(venv_bin.parent)
    if installer.uv_bin is not None:
        env["UV"] = installer.uv_bin
    env.update(installer.environment({}, layout))
    if installer.name == "uv" and "UV_EXCLUDE" not in env and layout.image_excludes.is_file():
        # marimo's Install button runs uv, which ignores system site-packages: without this it
        # copies the image's packages (other versions, even) into the venv as dependencies.
        env["UV_EXCLUDE"] = str(layout.image_excludes)
    env["XDG_CONFIG_HOME"] = str(layout.xdg_config)
    env["MARIMO_SKIP_UPDATE_CHECK"] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    if user is not None:
        env["HOME"] = user.home
        for name in ("USER", "LOGNAME"):
            env.pop(name, None)
    return env


class TokenFile:
    """A fresh random token in a private 0600 file, for ``--token-password-file``.

    The token is a secret: it is not part of the repr."""

    __slots__ = ("path", "token")

    def __init__(self, token: str, path: Path) -> None:
        self.token = token
        self.path = path

    def __repr__(self) -> str:
        return f"TokenFile(path={self.path!r})"

    @classmethod
    def create(cls, shared: bool = False) -> TokenFile:
        """``shared``: readable by our group too (marimo running as another user of it)."""
        token = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        # As tempfile.mkdtemp does (a fresh 0700 folder, refused if the name exists), without
        # importing tempfile and shutil on the warm start's path.
        # Named after this process, so a killed orchestrator's folder is found (jobs/scratch.py).
        folder = temp_root() / owned_name("marimo-token")
        os.mkdir(folder, 0o700)
        path = folder / "token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token)
        if shared:
            os.chmod(path, 0o640)
            os.chmod(folder, 0o750)
        return cls(token, path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()


def marimo_argv(
    python: Path, mode: MarimoMode, notebook_dir: Path, port: int, token_file: Path
) -> list[str]:
    """``<venv>/bin/python -m marimo``, never the ``marimo`` script: that is what makes
    ``sys.prefix != sys.base_prefix`` hold in marimo, so it offers its Install button.

    ``--no-skew-protection``: marimo's skew token is random per process and its frontend keeps
    the one its page was served with, so after any restart every POST of an open tab (the
    re-instantiation first) would get 401 "Invalid server token" and the tab would be lost
    until reloaded. The proxy still demands the header's presence on the same requests marimo
    did (``proxy.gate.lacks_server_token``), which is what kept cross-site forms out."""
    argv = [str(python), "-m", "marimo", mode, str(notebook_dir)]
    argv += ["--headless", "--no-sandbox", "--host", "127.0.0.1", "-p", str(port)]
    argv.append("--no-skew-protection")
    argv += ["--token-password-file", str(token_file)]
    if mode == "edit":
        argv.append("--skip-update-check")
    return argv
