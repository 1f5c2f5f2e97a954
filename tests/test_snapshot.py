"""The environment's snapshot (jobs/snapshot.py) with real venvs, real tar and real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import snapshot, snapshot_restore
from jobs.env_location import decide, filesystem_type


def _venv_with_package(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*"))  # lib/pythonX.Y
    package = site / "site-packages" / "snapmark"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 42\n", encoding="utf-8")


def _imports(venv: Path) -> str:
    if not (venv / "bin" / "python").exists():
        return ""
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import snapmark; print(snapmark.VALUE)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip()


def test_a_snapshot_restores_a_working_venv_on_the_path_it_was_taken_from(tmp_path: Path) -> None:
    venv = tmp_path / "local" / "venv"
    volume = tmp_path / "volume"
    _venv_with_package(venv)
    record = snapshot.take(venv, {"venv": None}, "3.x", volume / "rec.json", volume / "archives")
    assert record is not None and record.files > 3 and record.unpacked > 0
    assert snapshot.load(volume / "rec.json") == record
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    assert _imports(venv) == ""
    snapshot_restore.restore(record, volume / "archives", venv)
    assert _imports(venv) == "42"
    assert (venv / "bin" / "python").is_symlink()  # links stay links
    assert not list(venv.parent.glob(".venv.restoring-*"))


def test_a_corrupt_archive_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _venv_with_package(venv)
    record = snapshot.take(venv, {}, "3.x", tmp_path / "rec.json", tmp_path / "archives")
    assert record is not None
    archive = tmp_path / "archives" / record.archive
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    with pytest.raises(snapshot.CorruptSnapshot, match=r"checksum|not a valid archive|extracted"):
        snapshot_restore.restore(record, tmp_path / "archives", venv)
    assert not venv.exists()
    assert not list(tmp_path.glob(".venv.restoring-*"))
    aside = snapshot.keep_aside(tmp_path / "rec.json", tmp_path / "archives", record)
    assert aside is not None and (aside / record.archive).exists()
    assert snapshot.load(tmp_path / "rec.json") is None


def test_a_missing_archive_is_corrupt_not_a_crash(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _venv_with_package(venv)
    record = snapshot.take(venv, {}, "3.x", tmp_path / "rec.json", tmp_path / "archives")
    assert record is not None
    (tmp_path / "archives" / record.archive).unlink()
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    with pytest.raises(snapshot.CorruptSnapshot, match="cannot read"):
        snapshot_restore.restore(record, tmp_path / "archives", venv)


def test_a_snapshot_restored_elsewhere_has_its_scripts_moved_along(tmp_path: Path) -> None:
    venv = tmp_path / "one" / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # with pip's script
    record = snapshot.take(venv, {}, "3.x", tmp_path / "rec.json", tmp_path / "archives")
    assert record is not None
    elsewhere = tmp_path / "another-replica" / "venv"
    elsewhere.parent.mkdir()
    snapshot_restore.restore(record, tmp_path / "archives", elsewhere)
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    pip = subprocess.run(
        [str(elsewhere / "bin" / "pip"), "--version"], capture_output=True, text=True, check=False
    )
    assert pip.returncode == 0 and str(elsewhere) in pip.stdout, pip.stderr
    activate = (elsewhere / "bin" / "activate").read_text(encoding="utf-8")
    assert str(elsewhere) in activate and str(venv) not in activate


def test_a_venv_changed_while_archived_keeps_the_previous_snapshot(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _venv_with_package(venv)
    first = snapshot.take(venv, {}, "3.x", tmp_path / "rec.json", tmp_path / "archives")
    assert first is not None
    (venv / "extra.txt").write_text("new", encoding="utf-8")
    second = snapshot.take(
        venv, {}, "3.x", tmp_path / "rec.json", tmp_path / "archives", unchanged=lambda: False
    )
    assert second is None
    assert snapshot.load(tmp_path / "rec.json") == first
    assert sorted(p.name for p in (tmp_path / "archives").iterdir()) == [first.archive]


def test_leftovers_of_a_killed_writer_go_and_the_record_still_names_a_whole_archive(
    tmp_path: Path,
) -> None:
    venv = tmp_path / "venv"
    _venv_with_package(venv)
    record = snapshot.take(venv, {}, "3.x", tmp_path / "rec.json", tmp_path / "archives")
    assert record is not None
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = tmp_path / "archives" / f".incoming-{dead.pid}-1.tmp"
    leftover.write_bytes(b"half an archive")
    live = tmp_path / "archives" / f".incoming-{os.getpid()}-1.tmp"
    live.write_bytes(b"being written")
    removed = snapshot.remove_others(tmp_path / "archives", keep=record.archive)
    assert removed == [leftover] and live.exists()
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    snapshot_restore.restore(record, tmp_path / "archives", venv)
    assert _imports(venv) == "42"


def test_records_not_understood_are_no_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "rec.json"
    for text in ("", "[]", '{"format": 1}', json.dumps({"format": 2}), "\xff"):
        path.write_text(text, encoding="utf-8")
        assert snapshot.load(path) is None


def test_local_state_keeps_the_venv_where_it_is_and_a_forced_local_copy_checks_space(
    tmp_path: Path,
) -> None:
    state, env_dir = tmp_path / "state", tmp_path / "env"
    state.mkdir()
    assert filesystem_type(state) != ""
    same_disk = decide("auto", state, env_dir, persistent=True)
    assert same_disk.local is None and "local disk" in same_disk.reason
    assert decide("local", state, env_dir, persistent=True).local == env_dir
    too_big = decide("local", state, env_dir, persistent=True, needed_bytes=1 << 60)
    assert too_big.local is None and too_big.warning and "local disk too small" in too_big.warning
    assert decide("local", state, env_dir, persistent=False).local is None
    assert decide("volume", state, env_dir, persistent=True).local is None


def test_an_unwritable_local_folder_falls_back_to_the_volume(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    placement = decide("local", state, blocker / "env", persistent=True)
    assert placement.local is None and placement.warning and "cannot write" in placement.warning


def test_local_copies_of_generations_gone_from_the_volume_are_pruned(tmp_path: Path) -> None:
    from jobs.layout import StateLayout
    from jobs.local_env import prune_local_copies

    root = StateLayout(tmp_path / "state", local=tmp_path / "local")
    (root.envs / "kept").mkdir(parents=True)
    for name in ("kept", "collected", "cache", ".kept.restoring-1"):
        (tmp_path / "local" / name / "venv").mkdir(parents=True)
    assert prune_local_copies(root) == [tmp_path / "local" / "collected"]
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == [
        ".kept.restoring-1",
        "cache",
        "kept",
    ]


def test_an_abandoned_snapshot_leaves_the_previous_one_and_no_partial_file(
    tmp_path: Path,
) -> None:
    import threading

    from jobs.errors import JobError

    venv = tmp_path / "venv"
    _venv_with_package(venv)
    first = snapshot.take(venv, {}, "3.x", tmp_path / "rec.json", tmp_path / "archives")
    assert first is not None
    stopping = threading.Event()
    stopping.set()
    with pytest.raises(JobError, match="abandoned"):
        snapshot.take(venv, {}, "3.x", tmp_path / "rec.json", tmp_path / "archives", abort=stopping)
    assert snapshot.load(tmp_path / "rec.json") == first
    assert [p.name for p in (tmp_path / "archives").iterdir()] == [first.archive]


def test_a_restore_over_a_skeleton_exchanges_it_and_sweeps_killed_restores(
    tmp_path: Path,
) -> None:
    """marimo may run from a skeleton at the venv's path while the snapshot is restored: the
    restored venv takes its place in one exchange; staging folders of killed restores go,
    a live process's stays."""
    venv = tmp_path / "local" / "venv"
    volume = tmp_path / "volume"
    _venv_with_package(venv)
    record = snapshot.take(venv, {"venv": None}, "3.x", volume / "rec.json", volume / "archives")
    assert record is not None
    assert record.distributions == () and record.path_files == ()
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv / snapshot_restore.SKELETON_MARK).write_text("skeleton\n", encoding="utf-8")
    running_from_skeleton = os.open(venv, os.O_RDONLY)  # a process's handle on the old folder
    dead = venv.with_name(".venv.restoring-999999999")
    alive = venv.with_name(f".venv.restoring-{os.getppid()}")
    for leftover in (dead, alive):
        (leftover / "lib").mkdir(parents=True)
    try:
        snapshot_restore.restore(record, volume / "archives", venv)
        assert _imports(venv) == "42"
        assert not (venv / snapshot_restore.SKELETON_MARK).exists()
        assert not dead.exists() and alive.exists()
    finally:
        os.close(running_from_skeleton)


def test_a_restore_refuses_to_replace_a_venv_that_is_not_a_skeleton(tmp_path: Path) -> None:
    venv = tmp_path / "local" / "venv"
    volume = tmp_path / "volume"
    _venv_with_package(venv)
    record = snapshot.take(venv, {"venv": None}, "3.x", volume / "rec.json", volume / "archives")
    assert record is not None
    with pytest.raises(snapshot.JobError, match="appeared while the snapshot was restored"):
        snapshot_restore.restore(record, volume / "archives", venv)
    assert _imports(venv) == "42"
    assert not list(venv.parent.glob(".venv.restoring-*"))
