"""The environment on fast disk: with the state volume on a (simulated) network filesystem, the
venv marimo's kernels import from lives on local disk and the volume keeps a snapshot, so
packages survive a container replacement (SIGKILL, a fresh local disk) however it happens.

Quix's layout: notebooks in ``app/``, the volume mounted at ``app/state`` (a FUSE passthrough,
``tests/support/slow_volume.py``, so its filesystem type is not a local disk's), ``Quix__*`` set.
A container replacement is: the orchestrator's whole process tree SIGKILLed, its local
``--env-dir`` removed (a new container has a fresh disk), a new orchestrator on the same volume.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from jobs.layout import StateLayout
from tests.support.index import LocalIndex
from tests.support.orchestrator import Orchestrator, OrchestratorFactory
from tests.support.slow_volume import slow_volume
from tests.support.wheels import build_wheel

DELAY = 0.0005
"""Half a millisecond per file operation: a network volume, at a cost the suite can afford."""


@pytest.fixture
def volume(tmp_path: Path, notebook_dir: Path) -> Iterator[Path]:
    """Quix's state volume, mounted inside the notebook folder as Quix mounts it."""
    backing, mountpoint = tmp_path / "volume-backing", notebook_dir / "state"
    backing.mkdir()
    mountpoint.mkdir()
    with slow_volume(backing, mountpoint, delay=DELAY) as mounted:
        yield mounted


def environment(process: Orchestrator) -> dict[str, object]:
    env = process.status()["environment"]
    assert isinstance(env, dict)
    return env


def wait_snapshot(process: Orchestrator, newer_than: float = 0.0) -> dict[str, object]:
    """Until the volume holds a snapshot taken after ``newer_than`` and none is being written."""

    def saved(status: dict[str, object]) -> bool:
        env = status["environment"]
        assert isinstance(env, dict)
        snap = env.get("snapshot")
        return isinstance(snap, dict) and snap["made_at"] > newer_than and not env["snapshotting"]

    return process.wait_for(saved, timeout=120, what="a snapshot on the volume")["environment"]  # type: ignore[no-any-return]


def wait_complete(process: Orchestrator) -> dict[str, Any]:
    """Until marimo serves and a kernel may start: after a replacement the editor is served
    while the venv and requirements steps still restore (kernels held), so the first ready
    status does not say yet how the restore went."""
    return process.wait_for(
        lambda s: bool(s["ready"] and not s["kernels_held"]),
        timeout=180,
        what="the environment complete (marimo ready, no kernel held)",
    )


def wait_ledger_lists(process: Orchestrator, layout: StateLayout, package: str) -> None:
    """Until the ledger on the volume lists ``package`` among the user's packages."""
    process.wait_for(
        lambda _: package in json.loads(layout.ledger.read_text()).get("user", {}),
        timeout=30,
        what=f"the ledger on the volume lists {package}",
    )


def replace_container(process: Orchestrator, env_dir: Path) -> None:
    """SIGKILL the whole tree (no orderly stop), and the container's local disk is gone."""
    process.kill_everything()
    shutil.rmtree(env_dir, ignore_errors=True)


def kernel_imports(process: Orchestrator, module: str) -> str:
    """What a kernel of the running marimo prints for ``module``'s file: where it imports from."""
    return process.kernel_output(f"import {module}\nprint({module}.__file__)").strip()


def test_the_venv_runs_from_local_disk_and_an_editor_install_survives_a_replacement(
    orchestrator: OrchestratorFactory,
    notebook_dir: Path,
    volume: Path,
    tmp_path: Path,
    index: LocalIndex,
) -> None:
    env_dir = tmp_path / "local-disk" / "env"
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n")
    first = orchestrator(notebook_dir, volume, "--env-dir", str(env_dir))
    first.wait_ready()
    placed = environment(first)
    assert placed["location"] == "local", placed
    assert placed["path"] == str(env_dir / "venv")
    assert "network filesystem" in str(placed["reason"])
    assert not (volume / "venv").exists(), "nothing runs from the volume"
    assert kernel_imports(first, "orch_alpha").startswith(str(env_dir))
    wait_snapshot(first)

    # The user installs a package from the editor; the container dies right after, before a
    # new snapshot could be written: the ledger on the volume is what remembers it.
    assert first.marimo_install("orch-gamma")["success"] is True
    layout = StateLayout(volume)
    wait_ledger_lists(first, layout, "orch-gamma")
    replace_container(first, env_dir)

    # The editor serves from the snapshot while the ledger's package is downloaded again (held
    # at the index): kernels wait meanwhile, so a notebook opened as the download goes on
    # (its WebSocket may reach the proxy just before or just after) imports the package
    # instead of failing to find it.
    download = index.control.hold("orch-gamma")
    second = orchestrator(notebook_dir, volume, "--env-dir", str(env_dir))
    assert index.control.arrived["orch-gamma"].wait(timeout=120), second.log_text()
    status = second.wait_ready()
    assert status["kernels_held"], status
    assert second.step(status, "requirements")["status"] == "running", status
    with ThreadPoolExecutor(1) as pool:
        opened_now = pool.submit(kernel_imports, second, "orch_gamma")
        download.set()
        assert opened_now.result(timeout=120).startswith(str(env_dir))
    status = second.status()
    venv = second.step(status, "venv")
    assert "Restored the Python packages from the snapshot" in venv["message"], venv
    assert "restored orch-gamma==3.0" in second.step(status, "requirements")["message"]
    assert kernel_imports(second, "orch_alpha").startswith(str(env_dir))
    assert isinstance(environment(second).get("restored_seconds"), float)
    # Then the snapshot catches up, so the next replacement needs no installer at all.
    wait_snapshot(second, newer_than=second.step(status, "requirements")["finished_at"])
    replace_container(second, env_dir)
    third = orchestrator(notebook_dir, volume, "--env-dir", str(env_dir))
    status = wait_complete(third)
    assert third.step(status, "requirements")["status"] == "skipped"
    assert kernel_imports(third, "orch_gamma").startswith(str(env_dir))


def test_a_kill_during_the_snapshot_write_loses_nothing(
    orchestrator: OrchestratorFactory, notebook_dir: Path, volume: Path, tmp_path: Path
) -> None:
    env_dir = tmp_path / "local-disk" / "env"
    first = orchestrator(notebook_dir, volume, "--env-dir", str(env_dir))
    first.wait_ready()
    before = wait_snapshot(first)
    assert first.marimo_install("orch-gamma")["success"] is True
    first.wait_for(
        lambda s: bool(s["environment"]["snapshotting"]), timeout=60, what="a snapshot write"
    )
    replace_container(first, env_dir)
    layout = StateLayout(volume)
    kept = json.loads(layout.snapshot_record.read_text())
    assert kept["made_at"] == before["snapshot"]["made_at"], "the old snapshot still stands"  # type: ignore[index]
    assert (layout.snapshot_archives / kept["archive"]).exists()

    second = orchestrator(notebook_dir, volume, "--env-dir", str(env_dir))
    status = wait_complete(second)
    assert "Restored" in second.step(status, "venv")["message"]
    assert kernel_imports(second, "orch_gamma").startswith(str(env_dir))
    wait_snapshot(second, newer_than=float(kept["made_at"]))
    leftovers = [p.name for p in layout.snapshot_archives.iterdir()]
    assert len(leftovers) == 1, f"the killed writer's file is cleaned up: {leftovers}"


def test_a_corrupt_snapshot_is_rebuilt_from_the_dependency_files_and_says_so(
    orchestrator: OrchestratorFactory, notebook_dir: Path, volume: Path, tmp_path: Path
) -> None:
    env_dir = tmp_path / "local-disk" / "env"
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n")
    first = orchestrator(notebook_dir, volume, "--env-dir", str(env_dir))
    first.wait_ready()
    assert first.marimo_install("orch-gamma")["success"] is True
    wait_snapshot(first)
    layout = StateLayout(volume)
    wait_ledger_lists(first, layout, "orch-gamma")
    assert first.terminate() == 0
    record = json.loads(layout.snapshot_record.read_text())
    archive = layout.snapshot_archives / record["archive"]
    damaged = bytearray(archive.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    archive.write_bytes(bytes(damaged))
    shutil.rmtree(env_dir)

    second = orchestrator(notebook_dir, volume, "--env-dir", str(env_dir))
    status = wait_complete(second)
    warning = str(status["environment"]["warning"])
    assert "could not be used" in warning and "reinstalled" in warning, warning
    assert (layout.broken_snapshot / record["archive"]).exists(), "kept aside, not deleted"
    assert second.step(status, "venv")["status"] == "done"
    assert "restored orch-gamma==3.0" in second.step(status, "requirements")["message"]
    assert kernel_imports(second, "orch_alpha").startswith(str(env_dir))
    assert kernel_imports(second, "orch_gamma").startswith(str(env_dir))
    fresh = wait_snapshot(second)
    assert fresh["snapshot"]["made_at"] > record["made_at"]  # type: ignore[index]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A local disk of 4 MB (a tmpfs), too small for any real environment."""
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_a_local_disk_too_small_falls_back_to_the_volume_with_a_warning(
    orchestrator: OrchestratorFactory,
    notebook_dir: Path,
    volume: Path,
    tmp_path: Path,
    small_disk: Path,
) -> None:
    first = orchestrator(notebook_dir, volume, "--env-dir", str(tmp_path / "big" / "env"))
    first.wait_ready()
    snapshot = wait_snapshot(first)["snapshot"]
    assert snapshot["unpacked"] > 4_000_000  # type: ignore[index]
    assert first.terminate() == 0

    second = orchestrator(notebook_dir, volume, "--env-dir", str(small_disk / "env"))
    status = second.wait_ready()
    placed = status["environment"]
    assert placed["location"] == "volume"
    assert (
        "local disk too small" in placed["warning"] and str(small_disk / "env") in placed["warning"]
    )
    assert placed["path"] == str(volume / "venv")
    printed = second.kernel_output("import sys\nprint(sys.prefix)").strip()
    assert printed == str(volume / "venv")


def test_three_run_mode_replicas_each_run_from_their_own_local_disk(
    orchestrator: OrchestratorFactory,
    notebook_dir: Path,
    volume: Path,
    tmp_path: Path,
) -> None:
    (notebook_dir / "requirements.txt").write_text("orch-alpha\n")
    disks = [tmp_path / f"replica-{n}" / "env" for n in range(3)]
    replicas = [
        orchestrator(notebook_dir, volume, "--marimo-mode", "run", "--env-dir", str(disk))
        for disk in disks
    ]
    for replica, disk in zip(replicas, disks, strict=True):
        replica.wait_ready()
        marimo_python = _marimo_interpreter(replica)
        assert marimo_python.startswith(str(disk)), (marimo_python, disk)
        assert not marimo_python.startswith(str(volume))
    generations = [p for p in (volume / "envs").iterdir() if p.is_dir()]
    assert len(generations) == 1, "one environment built for all replicas"
    assert (generations[0] / "env-snapshot.json").exists()
    built = [r for r in replicas if "Published the environment" in r.log_text()]
    assert len(built) == 1, "one installer run, the others restored the snapshot"


def _marimo_interpreter(process: Orchestrator) -> str:
    """The interpreter of the marimo this orchestrator supervises."""
    pid = process.status()["marimo"]["pid"]
    return str(psutil.Process(pid).cmdline()[0])


def test_a_local_state_folder_is_used_in_place(
    orchestrator: OrchestratorFactory, notebook_dir: Path, tmp_path: Path
) -> None:
    """Quix's layout on a local disk (a volume that is actually local): nothing is copied."""
    process = orchestrator(notebook_dir)
    process.wait_ready()
    placed = environment(process)
    assert placed["location"] == "volume" and "local disk" in str(placed["reason"])
    assert placed["snapshot"] is None
    assert not StateLayout(notebook_dir / "state").snapshot_record.exists()
    assert os.path.isdir(notebook_dir / "state" / "venv")


def test_after_a_replacement_the_editor_is_served_while_the_packages_are_restored(
    orchestrator: OrchestratorFactory, notebook_dir: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    """marimo serves from a skeleton of the venv at once; a kernel started meanwhile waits
    and imports the restored package, never a half-restored environment."""
    build_wheel(wheelhouse, "orch-bulky", "1.0", padding=12_000_000)
    (notebook_dir / "requirements.txt").write_text("orch-bulky\n")
    env_dir = tmp_path / "local-disk" / "env"
    backing, mountpoint = tmp_path / "volume-backing", notebook_dir / "state"
    backing.mkdir()
    mountpoint.mkdir()
    # 2 MB/s: restoring the ~12 MB snapshot takes seconds, longer than marimo takes to start.
    with slow_volume(backing, mountpoint, delay=DELAY, bandwidth=2_000_000) as volume:
        first = orchestrator(notebook_dir, volume, "--env-dir", str(env_dir))
        first.wait_ready()
        wait_snapshot(first)
        replace_container(first, env_dir)

        second = orchestrator(notebook_dir, volume, "--env-dir", str(env_dir))
        serving = second.wait_for(
            lambda s: bool(s["ready"] and s["kernels_held"]),
            timeout=60,
            what="the editor served while the packages are restored",
        )
        assert second.step(serving, "venv")["status"] == "running", serving
        # Spawned by the head start, before the server's own modules loaded.
        assert "kernels wait for the restore" in second.log_text()
        code, _, page = second.get("/", headers={"Accept": "text/html"})
        assert code == 200 and b"<marimo-version" in page, page[:300]

        # A notebook opened now: its kernel starts once the packages are all in place.
        assert kernel_imports(second, "orch_bulky").startswith(str(env_dir))
        status = second.status()
        assert status["kernels_held"] is False
        assert "Restored the Python packages" in second.step(status, "venv")["message"]
        assert not (env_dir / "venv" / ".orchestrator-skeleton").exists()
