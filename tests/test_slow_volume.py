"""The simulated network volume (tests/support/slow_volume.py): it behaves as a filesystem that
a venv, tar and atomic replacement need, its delay and bandwidth limit are real, and it is gone
with its server when the context manager is left.

Without FUSE here (no /dev/fuse, fusermount, libfuse3 or mfusepy) the tests are skipped, except
in CI (``CI=true``), where `make volume-deps` has installed them and they must run.
"""

from __future__ import annotations

import ctypes.util
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.slow_volume import mount_type, slow_volume

ROOT = Path(__file__).resolve().parents[1]


def _missing() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if shutil.which("fusermount") is None:
        return "no fusermount (Debian's fuse3 package; make volume-deps)"
    if ctypes.util.find_library("fuse3") is None:
        return "no libfuse3 (Debian's libfuse3-3; make volume-deps)"
    if importlib.util.find_spec("mfusepy") is None:
        return "no mfusepy in the venv (test extras; make volume-deps)"
    return None


def _require_fuse() -> None:
    if (message := _missing()) is None:
        return
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"slow volume tests cannot run in CI: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(backing, mount) at 1 ms per operation, shared by this module's functional tests."""
    _require_fuse()
    base = tmp_path_factory.mktemp("volume")
    backing, mountpoint = base / "backing", base / "mount"
    backing.mkdir()
    mountpoint.mkdir()
    with slow_volume(backing, mountpoint, delay=0.001) as mounted:
        yield backing, mounted


def _servers() -> list[psutil.Process]:
    """This process's children that are slow_volume servers."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "tests.support.slow_volume" in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def test_mounts_as_fuse_and_is_gone_with_its_server_after_an_error(tmp_path: Path) -> None:
    _require_fuse()
    backing, mountpoint = tmp_path / "backing", tmp_path / "mount"
    backing.mkdir()
    mountpoint.mkdir()
    with (
        pytest.raises(RuntimeError, match="the test failed"),
        slow_volume(backing, mountpoint) as mounted,
    ):
        assert os.path.ismount(mounted)
        assert (mount_type(mounted) or "").startswith("fuse")
        assert len(_servers()) == 1
        (mounted / "kept").write_text("on the backing folder")
        raise RuntimeError("the test failed")
    assert not os.path.ismount(mountpoint)
    assert mount_type(mountpoint) is None
    assert _servers() == []
    assert (backing / "kept").read_text() == "on the backing folder"


def test_a_venv_made_on_the_volume_runs(volume: tuple[Path, Path]) -> None:
    _, mounted = volume
    venv = mounted / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sys, json; print(sys.prefix)"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip() == str(venv)


def test_replacing_a_file_is_atomic_for_a_reader(volume: tuple[Path, Path]) -> None:
    """A reader that opens the target over and over sees one whole version or another."""
    _, mounted = volume
    target = mounted / "state.json"
    versions = [f"version {i} ".encode() * (500 + i) for i in range(30)]
    target.write_bytes(versions[0])
    seen: list[bytes] = []
    errors: list[OSError] = []
    done = threading.Event()

    def read_until_done() -> None:
        while not done.is_set():
            try:
                seen.append(target.read_bytes())
            except OSError as error:
                errors.append(error)

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for version in versions[1:]:
            temporary = mounted / "state.json.tmp"
            fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                os.write(fd, version)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, target)
    finally:
        done.set()
        reader.join()
    assert errors == []
    assert seen, "the reader read nothing"
    assert set(seen) <= set(versions)
    assert target.read_bytes() == versions[-1]
    assert not (mounted / "state.json.tmp").exists()


def test_links_modes_times_and_exclusive_create(volume: tuple[Path, Path]) -> None:
    backing, mounted = volume
    folder = mounted / "links"
    folder.mkdir()
    script = folder / "run.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o755)
    assert subprocess.run([str(script)], capture_output=True, text=True).stdout == "ran\n"
    assert os.stat(backing / "links" / "run.sh").st_mode & 0o777 == 0o755

    (folder / "relative").symlink_to("run.sh")
    (folder / "absolute").symlink_to(script)
    assert os.readlink(folder / "relative") == "run.sh"
    assert os.readlink(backing / "links" / "absolute") == str(script)
    assert (folder / "relative").read_text() == (folder / "absolute").read_text()

    os.link(script, folder / "hard")
    assert os.path.samefile(script, folder / "hard")
    assert os.stat(script).st_nlink == 2

    os.utime(script, ns=(1_500_000_000_123_456_789, 1_600_000_000_987_654_321))
    assert os.stat(script).st_mtime_ns == 1_600_000_000_987_654_321
    assert os.stat(backing / "links" / "run.sh").st_atime_ns == 1_500_000_000_123_456_789

    with pytest.raises(FileExistsError):
        os.open(script, os.O_CREAT | os.O_EXCL | os.O_WRONLY)

    os.remove(folder / "hard")
    os.rename(folder / "relative", folder / "renamed")
    assert sorted(os.listdir(folder)) == ["absolute", "renamed", "run.sh"]
    shutil.rmtree(folder)
    assert not (backing / "links").exists()


def test_large_sequential_files_and_tar(volume: tuple[Path, Path], tmp_path: Path) -> None:
    _, mounted = volume
    data = os.urandom(8 << 20)
    (mounted / "big").write_bytes(data)
    assert hashlib.sha256((mounted / "big").read_bytes()).digest() == hashlib.sha256(data).digest()

    source = tmp_path / "tree"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "mod.py").write_text("x = 1\n")
    (source / "link").symlink_to("pkg/mod.py")
    archive = tmp_path / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(source, arcname="tree")
    with tarfile.open(archive) as tar:
        tar.extractall(mounted / "extracted", filter="tar")
    extracted = mounted / "extracted" / "tree"
    assert (extracted / "link").read_text() == "x = 1\n"
    assert (
        os.stat(extracted / "pkg" / "mod.py").st_mtime
        == os.stat(source / "pkg" / "mod.py").st_mtime
    )


def test_each_stat_costs_the_delay(tmp_path: Path) -> None:
    _require_fuse()
    backing, mountpoint = tmp_path / "backing", tmp_path / "mount"
    backing.mkdir()
    mountpoint.mkdir()
    (backing / "file").write_text("x")
    n, delay = 100, 0.005
    with slow_volume(backing, mountpoint, delay=delay) as mounted:
        os.stat(mounted / "file")
        started = time.monotonic()
        for _ in range(n):
            os.stat(mounted / "file")
        on_volume = time.monotonic() - started
    started = time.monotonic()
    for _ in range(n):
        os.stat(backing / "file")
    on_backing = time.monotonic() - started
    assert on_volume >= n * delay
    assert on_backing < on_volume


def test_bandwidth_limits_reads_and_writes(tmp_path: Path) -> None:
    _require_fuse()
    backing, mountpoint = tmp_path / "backing", tmp_path / "mount"
    backing.mkdir()
    mountpoint.mkdir()
    size, bandwidth = 2 << 20, 10e6
    data = os.urandom(size)
    with slow_volume(backing, mountpoint, delay=0.0, bandwidth=bandwidth) as mounted:
        started = time.monotonic()
        (mounted / "blob").write_bytes(data)
        writing = time.monotonic() - started
        started = time.monotonic()
        assert (mounted / "blob").read_bytes() == data
        reading = time.monotonic() - started
    # Every byte crosses its direction's line, one request after another.
    assert writing >= size / bandwidth
    assert reading >= size / bandwidth


def test_the_cli_serves_until_sigterm(tmp_path: Path) -> None:
    _require_fuse()
    backing, mountpoint = tmp_path / "backing", tmp_path / "mount"
    backing.mkdir()
    mountpoint.mkdir()
    (backing / "hello").write_text("hi")
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.support.slow_volume", str(backing), str(mountpoint)],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mountpoint):
            assert server.poll() is None, "the server exited before mounting"
            assert time.monotonic() < deadline, "not mounted within 30 s"
            time.sleep(0.01)  # polling the mount, bounded by the deadline
        assert (mountpoint / "hello").read_text() == "hi"
        assert mount_type(mountpoint) == "fuse.slow_volume"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert mount_type(mountpoint) is None
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if mount_type(mountpoint) is not None:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)
