"""The ``venv`` step: a virtualenv on the state volume that marimo can run from.

The venv is made with ``--system-site-packages`` so marimo and everything the image ships are
seen, not reinstalled. When the orchestrator itself runs inside a virtualenv (development, tests)
the image's packages live in *that* env's site-packages, which ``--system-site-packages`` does not
reach; a ``.pth`` file in the new venv layers them in the same way, after the venv's own.

Invariant: the manifest's ``venv`` record is written only after the venv was created and its
interpreter answered; it is cleared (together with ``install``) before anything is deleted, so an
interrupted rebuild is always detected and redone.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import site
import sys
import time
from pathlib import Path

from jobs import ledger
from jobs.errors import PermanentError, TransientError
from jobs.installers import Installer
from jobs.interpreter import Interpreter
from jobs.layout import StateLayout
from jobs.manifest import Manifest, VenvRecord
from jobs.processes import lines, spawn
from jobs.reporting import Reporter

LAYER_PTH = "_marimo_orchestrator_image.pth"

_PROBE = (
    "import importlib.util, json, sys; print(json.dumps({'version': sys.version, "
    "'isolated': sys.prefix != sys.base_prefix, "
    "'marimo': importlib.util.find_spec('marimo') is not None}))"
)


def image_site_dirs() -> list[str]:
    """site-packages of the orchestrator's own env when it is a venv, else nothing."""
    if sys.prefix == sys.base_prefix:
        return []
    return [path for path in site.getsitepackages() if Path(path).is_dir()]


async def _run(argv: list[str], env: dict[str, str], reporter: Reporter, source: str) -> list[str]:
    process = await spawn(argv, env=env)
    output = [line async for line in lines(process)]
    for line in output:
        reporter.log("venv", source, line)
    code = await process.wait()
    if code != 0:
        raise TransientError(f"{argv[0]} exited with code {code}: {' '.join(output[-3:])}")
    return output


async def probe(python: Path, env: dict[str, str]) -> dict[str, object] | None:
    """What the interpreter says about itself, or ``None`` when it does not run."""
    if not python.exists():  # follows symlinks: a dangling interpreter does not exist
        return None
    try:
        process = await spawn([str(python), "-c", _PROBE], env=env)
        out = [line async for line in lines(process)]
        code = await asyncio.wait_for(process.wait(), timeout=60)
    except (OSError, TimeoutError):
        return None
    if code != 0 or not out:
        return None
    try:
        answer = json.loads(out[-1])
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _pyvenv_home_exists(venv: Path) -> bool:
    try:
        for line in (venv / "pyvenv.cfg").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                return Path(value.strip()).is_dir()
    except OSError:
        return False
    return False


async def why_unusable(layout: StateLayout, interpreter: Interpreter, env: dict[str, str]) -> str:
    """Empty when the venv can be reused as is, else the reason to rebuild it."""
    manifest = Manifest.load(layout.manifest)
    if not layout.venv.exists():
        return "no venv yet"
    if manifest.venv is None:
        return "the venv was not completed (no manifest record)"
    if not interpreter.matches(manifest.venv):
        return "the image's Python changed"
    if not _pyvenv_home_exists(layout.venv):
        return "pyvenv.cfg points to a Python that does not exist"
    answer = await probe(layout.venv_python, env)
    if answer is None:
        return "the venv's interpreter does not run"
    if answer.get("version") != interpreter.version or not answer.get("isolated"):
        return "the venv's interpreter is not the image's Python in a venv"
    if not answer.get("marimo"):
        return "marimo cannot be imported from the venv"
    return ""


def _bundled_pip_wheel() -> Path | None:
    import ensurepip

    bundled = Path(ensurepip.__file__).parent / "_bundled"
    wheels = sorted(bundled.glob("pip-*.whl"))
    return wheels[-1] if wheels else None


async def create(
    layout: StateLayout,
    installer: Installer,
    env: dict[str, str],
    reporter: Reporter,
    requirements: Path | None = None,
) -> None:
    """(Re)build the venv from scratch; pip is seeded from the interpreter's own bundled wheel,
    so creation never needs the network.

    The old venv's user packages go into the ledger before it goes away, read from its own
    files (``requirements`` tells ours from the user's), whatever the manifest says."""
    interpreter = Interpreter.current()
    ledger.rescue(layout, requirements)
    manifest = Manifest.load(layout.manifest)
    manifest.venv = None
    manifest.install = None
    manifest.save(layout.manifest)
    if layout.venv.exists() or layout.venv.is_symlink():
        reporter.step_progress("venv", f"Removing the old venv at {layout.venv}", 0.05)
        await asyncio.get_running_loop().run_in_executor(None, remove, layout.venv)
    reporter.step_progress("venv", f"Creating a venv at {layout.venv}", 0.1)
    pip_wheel = _bundled_pip_wheel()
    if installer.uv_bin is not None and pip_wheel is not None:
        await _run(
            [
                installer.uv_bin,
                "venv",
                "--system-site-packages",
                "--python",
                interpreter.base_executable,
                str(layout.venv),
            ],
            env,
            reporter,
            "uv",
        )
        reporter.step_progress("venv", "Seeding pip into the venv", 0.5)
        await _run(
            [
                installer.uv_bin,
                "pip",
                "install",
                "--python",
                str(layout.venv_python),
                "--no-index",
                "--no-deps",
                str(pip_wheel),
            ],
            {**env, "UV_CACHE_DIR": str(layout.uv_cache)},
            reporter,
            "uv",
        )
    else:
        await _run(
            [interpreter.base_executable, "-m", "venv", "--system-site-packages", str(layout.venv)],
            env,
            reporter,
            "venv",
        )
    write_layer(layout)
    reporter.step_progress("venv", "Checking the venv's interpreter", 0.9)
    answer = await probe(layout.venv_python, env)
    if answer is None or not answer.get("isolated"):
        raise TransientError(f"the new venv's interpreter {layout.venv_python} does not run")
    if not answer.get("marimo"):
        raise PermanentError(f"marimo cannot be imported from the new venv at {layout.venv}")
    manifest.venv = VenvRecord(
        python_version=interpreter.version,
        base_executable=interpreter.base_executable,
        created_at=time.time(),
    )
    manifest.save(layout.manifest)
    ledger.reset_baseline(layout)


async def build(
    layout: StateLayout,
    installer: Installer,
    env: dict[str, str],
    reporter: Reporter,
    requirements: Path | None,
    reason: str,
) -> str:
    """:func:`create`, timed: the page is told how long the last build took (its ETA) and the
    manifest's history records this one. Returns the message saying what was built and why."""
    reporter.step_progress("venv", f"Building the venv: {reason}", 0.0)
    history = Manifest.load(layout.manifest).history
    if (expected := history.get("venv_seconds")) is not None:
        reporter.step_expected("venv", float(expected))
    started = time.monotonic()
    await create(layout, installer, env, reporter, requirements)
    manifest = Manifest.load(layout.manifest)
    manifest.history["venv_seconds"] = round(time.monotonic() - started, 3)
    manifest.save(layout.manifest)
    return f"Built the venv at {layout.venv} in {time.monotonic() - started:.1f} s ({reason})"


def write_layer(layout: StateLayout) -> None:
    """The ``.pth`` that layers the image's packages in when the orchestrator runs from a
    virtualenv (see the module docstring)."""
    dirs = image_site_dirs()
    if not dirs:
        return
    for site_packages in layout.venv.glob("lib/python*/site-packages"):
        (site_packages / LAYER_PTH).write_text("\n".join(dirs) + "\n", encoding="utf-8")


def remove(path: Path) -> None:
    """Remove a venv (or whatever stands at its path), wholly or raise."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            shutil.rmtree(path)
