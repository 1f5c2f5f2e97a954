"""The ``requirements`` step: install the requirements file into the venv, or skip it.

Invariant: the install is skipped (no installer process at all) exactly when the fingerprint of
what decides its result (file content, interpreter, installer, index settings) equals the one the
manifest recorded after the last *successful* install.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path

from jobs.errors import PermanentError
from jobs.installers import INDEX_VARIABLES, Installer, ProgressParser, classify_failure
from jobs.layout import StateLayout
from jobs.manifest import InstallRecord, Manifest
from jobs.processes import lines, spawn
from jobs.redact import redact
from jobs.reporting import Reporter
from jobs.venv import Interpreter


def fingerprint(content: bytes, installer: Installer, env: Mapping[str, str]) -> str:
    """A hash only: index settings may hold credentials and are never stored in clear."""
    interpreter = Interpreter.current()
    material = {
        "requirements": hashlib.sha256(content).hexdigest(),
        "python": [interpreter.version, interpreter.base_executable],
        "installer": installer.name,
        "index": {name: env.get(name) for name in INDEX_VARIABLES},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def validate(path: Path, content: str) -> None:
    """Reject a requirements file the installers could not parse, naming the line."""
    from packaging.requirements import InvalidRequirement, Requirement

    for number, raw in enumerate(content.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-", "git+", "http://", "https://", "file:", ".")):
            continue
        try:
            Requirement(line)
        except InvalidRequirement as error:
            raise PermanentError(
                f"{path} line {number}: {line!r} is not a valid requirement ({error})"
            ) from None


def read_requirements(path: Path) -> bytes | None:
    """The file's bytes, or ``None`` when there is no file (nothing to install)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise PermanentError(f"cannot read {path}: {error.strerror}") from None


async def install(
    requirements: Path,
    layout: StateLayout,
    installer: Installer,
    env: Mapping[str, str],
    reporter: Reporter,
) -> str | None:
    """Install, returning a message; ``None`` means it was skipped as unchanged."""
    content = read_requirements(requirements)
    if content is None:
        return "none"
    validate(requirements, content.decode("utf-8", "replace"))
    wanted = fingerprint(content, installer, env)
    manifest = Manifest.load(layout.manifest)
    if manifest.install is not None and manifest.install.fingerprint == wanted:
        return None
    manifest.install = None
    manifest.save(layout.manifest)

    argv = installer.install_argv(layout.venv_python, ["-r", str(requirements)])
    reporter.step_progress("requirements", f"Installing {requirements.name} with {installer.name}")
    started = time.monotonic()
    process = await spawn(argv, env=installer.environment(env, layout))
    parser = ProgressParser()
    output: list[str] = []
    async for line in lines(process):
        clean = redact(line)
        output.append(clean)
        reporter.log("requirements", installer.name, clean)
        if update := parser.feed(clean):
            reporter.step_progress("requirements", update[0], update[1])
    code = await process.wait()
    if code != 0:
        raise classify_failure(installer.name, code, output)

    duration = time.monotonic() - started
    manifest = Manifest.load(layout.manifest)
    manifest.install = InstallRecord(
        fingerprint=wanted, installer=installer.name, finished_at=time.time(), duration=duration
    )
    manifest.history["last_install_seconds"] = round(duration, 3)
    manifest.save(layout.manifest)
    return f"installed {requirements.name} with {installer.name} in {duration:.1f} s"
