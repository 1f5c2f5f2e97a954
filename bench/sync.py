"""Notebook sync in Quix's layout: idle CPU of the watch loop, and edit-to-push latency.

    .venv/bin/python bench/sync.py [--wheels /opt/pypi/files] [--idle 30] [--edits 5]

The layout is Quix's: an ``app`` folder with the notebooks, the state volume inside it
(``app/state``) holding a venv with numpy and pandas installed by uv (offline, from ``--wheels``,
a folder of wheels; with none there, a generated tree of 40,000 ``.py`` files under
``app/state/venv`` stands in, and the output says so), and uv's cache beside it.

- idle CPU: the real :class:`jobs.notebook_sync.NotebookSync` loop (poll every second) runs in
  this process with nothing changing; CPU time of the process over ``--idle`` seconds of wall
  time. The earlier loop (every synced file under the notebook folder hashed every second, venv
  included) is measured the same way for comparison.
- latency: seconds from writing a notebook to the fake Quix portal (tests/support/quix_portal.py)
  receiving it, through the real :class:`orchestrator.quix.portal.QuixPortal` push, for the default
  debounce (5 s) and a short one (0.5 s); the median of ``--edits`` edits each.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs.layout import StateLayout  # noqa: E402
from jobs.notebook_sync import NotebookSync  # noqa: E402
from orchestrator.quix.portal import QuixPortal  # noqa: E402
from orchestrator.quix.settings import QuixSettings  # noqa: E402
from tests.support.quix_portal import FakeQuixPortal  # noqa: E402

NOTEBOOK = "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n    return\n"


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def populate(state: Path, wheels: Path | None) -> str:
    venv = state / "venv"
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    if wheels is not None and any(wheels.glob("pandas-*.whl")):
        subprocess.run([uv, "venv", "-q", str(venv)], check=True)
        env = {**os.environ, "UV_CACHE_DIR": str(state / "cache" / "uv"), "UV_NO_CONFIG": "1"}
        subprocess.run(
            [
                uv,
                "pip",
                "install",
                "-q",
                "--python",
                str(venv / "bin" / "python"),
                "--no-index",
                "--find-links",
                str(wheels),
                "numpy",
                "pandas",
            ],
            check=True,
            env=env,
        )
        what = "numpy and pandas installed by uv into app/state/venv (cache in app/state/cache/uv)"
    else:
        site = venv / "lib" / "python3.11" / "site-packages"
        for package in range(200):
            folder = site / f"pkg{package}" / "sub"
            folder.mkdir(parents=True)
            for module in range(200):
                (folder / f"m{module}.py").write_text(f"VALUE = {module}\n" * 20)
        (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
        what = "a generated tree standing in for numpy+pandas: 40,000 .py files in app/state/venv"
    files = sum(len(names) for _, _, names in os.walk(state))
    py = sum(1 for _, _, names in os.walk(state) for name in names if name.endswith(".py"))
    return f"{what}; {files} files under app/state, {py} of them .py"


def old_scan(root: Path) -> dict[str, str]:
    """The earlier loop's walk: every synced file under the notebook folder, hashed."""
    found: dict[str, str] = {}
    skipped = ("__pycache__", "__marimo__", ".git", ".venv", "node_modules")
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part in skipped or part.startswith(".") for part in relative.parts):
            continue
        if not path.is_file() or (path.suffix not in (".py", ".md", ".qmd")):
            continue
        found[relative.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


async def idle_new(app: Path, seconds: float) -> tuple[float, int]:
    layout = StateLayout(app / "state")

    async def push(path: str, text: str) -> None:
        raise AssertionError("nothing changes at idle")

    sync = NotebookSync(
        app, layout.sync_state, layout.sync_blobs, push, lambda _: None, excluded=(layout.root,)
    )
    task = asyncio.create_task(sync.run())
    while sync.state.synced == {}:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.5)  # the first walks are done
    hashed = sync.scanner.hashed
    start_cpu, start = cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    used = cpu_seconds() - start_cpu
    wall = time.monotonic() - start
    task.cancel()
    return used / wall, sync.scanner.hashed - hashed


def idle_old(app: Path, seconds: float) -> tuple[float, float]:
    start_cpu, start = cpu_seconds(), time.monotonic()
    walks: list[float] = []
    while time.monotonic() - start < seconds:
        began = time.monotonic()
        old_scan(app)
        walks.append(time.monotonic() - began)
        time.sleep(max(0.0, 1.0 - walks[-1]))
    return (cpu_seconds() - start_cpu) / (time.monotonic() - start), statistics.median(walks)


async def latency(app: Path, debounce: float, edits: int) -> list[float]:
    layout = StateLayout(app / "state")
    delays: list[float] = []
    with FakeQuixPortal() as fake:
        fake.state.allowed_tokens.add("bench-user")
        portal = QuixPortal(QuixSettings.from_env(fake.env()))  # type: ignore[arg-type]

        async def push(path: str, text: str) -> None:
            await portal.push_file("bench-user", path, text)

        sync = NotebookSync(
            app,
            layout.sync_state,
            layout.sync_blobs,
            push,
            lambda _: None,
            excluded=(layout.root,),
            debounce=debounce,
        )
        task = asyncio.create_task(sync.run())
        await asyncio.sleep(1.5)
        for edit in range(edits):
            before = len(fake.state.files)
            written = time.monotonic()
            (app / "notebook.py").write_text(NOTEBOOK + f"# edit {debounce} {edit}\n")
            while len(fake.state.files) == before:
                await asyncio.sleep(0.005)
            delays.append(time.monotonic() - written)
            await asyncio.sleep(0.2)
        task.cancel()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, default=Path("/opt/pypi/files"))
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--edits", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        app = Path(tmp) / "app"
        (app / "state").mkdir(parents=True)
        (app / "notebook.py").write_text(NOTEBOOK)
        for extra in range(5):
            (app / f"notebook{extra}.py").write_text(NOTEBOOK * 20)
        print(populate(app / "state", args.wheels if args.wheels.is_dir() else None))
        share, hashed = asyncio.run(idle_new(app, args.idle))
        print(
            f"sync loop at idle (poll 1 s): {100 * share:.2f} % of one core over {args.idle:.0f} s; "
            f"files hashed while idle: {hashed}"
        )
        old_share, walk = idle_old(app, min(args.idle, 15.0))
        print(
            f"earlier loop at idle: {100 * old_share:.1f} % of one core "
            f"(one walk+hash {walk:.3f} s, {len(old_scan(app))} files)"
        )
        for debounce in (0.5, 5.0):
            delays = asyncio.run(latency(app, debounce, args.edits))
            print(
                f"edit-to-push, debounce {debounce} s: median {statistics.median(delays):.2f} s, "
                f"min {min(delays):.2f} s, max {max(delays):.2f} s ({len(delays)} edits)"
            )


if __name__ == "__main__":
    main()
