"""A simulated network volume: a FUSE passthrough of a local folder that delays every operation.

Quix's state volume is a network filesystem on which each file operation is a round trip. This
module stands in for it in tests and benchmarks: :func:`slow_volume` mounts ``backing`` at
``mountpoint`` through FUSE (mfusepy on Debian's libfuse3) in a child process, and every request
the kernel sends to it (lookup/getattr, open, read, write, create, readdir, rename, fsync,
release, statfs, ...) waits ``delay`` seconds before it is carried out on ``backing``.

    python -m tests.support.slow_volume BACKING MOUNTPOINT --delay-ms 1 [--bandwidth-mbps N]

mounts in the foreground until SIGINT or SIGTERM (libfuse's own handlers end the loop and
unmount); ``make volume-deps`` installs what it needs (volume.mk).

libfuse 3 (>= 3.11), not 2: its path-based API answers ESTALE, not ENOENT, for a file whose
name was replaced between the kernel's lookup and its open, so the kernel looks the name up
again; with libfuse 2 an ``open`` racing an atomic rename over its target fails with ENOENT
(tests/test_slow_volume.py's reader sees it).

Invariants:
- every operation libfuse passes to the filesystem costs at least ``delay``, taken before it is
  carried out (each operation method is wrapped by :func:`_request`): a kernel lookup is one
  (getattr), a readdir is one for the whole listing (libfuse serves the kernel's further
  readdir requests for it from its buffer); FORGET and INIT cost nothing; concurrent ones wait
  concurrently (libfuse's multithreaded loop; the server is a process of its own, with its own
  GIL, so any process may use the mount);
- the kernel caches no attributes, names or missing names for longer than ``cache_timeout``
  (0 by default): each ``stat`` of a path on the mount reaches the server at least once;
- with ``bandwidth`` (bytes/s), the bytes read share one line and the bytes written another;
  a read or write of n bytes also waits until n / bandwidth seconds of its line are free;
- the operations are those of ``backing``'s filesystem, on its files: rename replaces
  atomically (``hard_remove``: libfuse never moves an open target aside first), O_EXCL and
  the other open flags are passed through, symlinks are stored verbatim (absolute and relative
  alike), hard links and inode numbers are the backing's (``use_ino``); files made through the
  mount by another user are given to that user when the server runs as root;
- the mount's type in /proc/self/mountinfo is ``fuse.slow_volume``;
- :func:`slow_volume` returns only once ``mountpoint`` is a mount point, and on leaving (an
  exception included) it has unmounted it and reaped the child, at once even while processes
  still use the mount (they are cut off: their next operation on it fails).

Limits (libfuse's path-based API): ``fstat`` of a file that is open but already unlinked may
fail (ESTALE); xattrs and O_TMPFILE are not supported; locks are the kernel's (local to this
machine).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

_ROOT = Path(__file__).resolve().parents[2]
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2
FSTYPE = "fuse.slow_volume"


class _Line:
    """One direction of the volume's link: when it is free again, shared by every request."""

    def __init__(self, bytes_per_second: float) -> None:
        self.rate = bytes_per_second
        self.free_at = 0.0
        self.lock = threading.Lock()

    def pass_bytes(self, size: int) -> None:
        """Reserves the line for ``size`` bytes and waits until their last byte has crossed."""
        with self.lock:
            now = time.monotonic()
            self.free_at = max(now, self.free_at) + size / self.rate
            due = self.free_at
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)  # the emulated link: this wait is the bandwidth limit itself


_Operation = TypeVar("_Operation", bound=Callable[..., Any])


def _request(method: _Operation) -> _Operation:
    """Marks ``method`` as a request of the kernel's: it waits the volume's delay first."""

    @functools.wraps(method)
    def delayed(self: SlowPassthrough, *args: Any) -> Any:
        if self.delay > 0:
            time.sleep(self.delay)  # the simulated round trip: this wait is the volume's cost
        return method(self, *args)

    return cast(_Operation, delayed)


class SlowPassthrough:
    """mfusepy operations: ``backing``'s files, each request delayed by ``delay`` seconds.

    Every public method is an operation libfuse calls, wrapped by :func:`_request`; operations
    not defined here are left unset in libfuse, which answers ENOSYS (xattrs, locks, ioctl), so
    the kernel stops asking. With ``raw_fi`` on, file operations receive the
    ``fuse_file_info`` whose ``fh`` is the backing file's descriptor; ``path`` is None for an
    open file whose name is gone.
    """

    use_ns = True  # times in nanoseconds, as ints

    def __init__(self, backing: Path, delay: float, bandwidth: float | None) -> None:
        self.root = os.path.realpath(backing)
        self.delay = delay
        self.reads = _Line(bandwidth) if bandwidth else None
        self.writes = _Line(bandwidth) if bandwidth else None
        self.as_root = os.geteuid() == 0

    def _full(self, path: str | None) -> str:
        if path is None:
            raise OSError(errno.ESTALE, "the file has no name any more")
        return os.path.join(self.root, path.lstrip("/"))

    def _give_to_caller(self, full: str) -> None:
        """Makes a new file the calling process's, as a filesystem would (server is root)."""
        if not self.as_root:
            return
        from mfusepy import fuse_get_context

        uid, gid, _ = fuse_get_context()
        if uid != 0 or gid != 0:
            os.lchown(full, uid, gid)

    @staticmethod
    def _attrs(st: os.stat_result) -> dict[str, int]:
        return {
            "st_mode": st.st_mode,
            "st_ino": st.st_ino,
            "st_nlink": st.st_nlink,
            "st_uid": st.st_uid,
            "st_gid": st.st_gid,
            "st_rdev": st.st_rdev,
            "st_size": st.st_size,
            "st_blksize": st.st_blksize,
            "st_blocks": st.st_blocks,
            "st_atime": st.st_atime_ns,
            "st_mtime": st.st_mtime_ns,
            "st_ctime": st.st_ctime_ns,
        }

    # Metadata.
    @_request
    def getattr(self, path: str | None, fi: Any = None) -> dict[str, int]:
        if fi is not None:
            return self._attrs(os.fstat(fi.fh))
        return self._attrs(os.lstat(self._full(path)))

    @_request
    def access(self, path: str, mode: int) -> None:
        if not os.access(self._full(path), mode, follow_symlinks=False):
            raise OSError(errno.EACCES, path)

    @_request
    def chmod(self, path: str | None, mode: int) -> None:
        os.chmod(self._full(path), mode & 0o7777)

    @_request
    def chown(self, path: str | None, uid: int, gid: int) -> None:
        os.lchown(self._full(path), uid, gid)

    @_request
    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> None:
        """Sets the times; libfuse 3 passes UTIME_NOW and UTIME_OMIT as ``0 s + that many ns``."""
        full = self._full(path)
        if times is None:
            os.utime(full, follow_symlinks=False)
            return
        now = time.time_ns()
        current = os.lstat(full) if _UTIME_OMIT in times else None
        atime, mtime = (now if value == _UTIME_NOW else value for value in times)
        if current is not None:
            atime = current.st_atime_ns if times[0] == _UTIME_OMIT else atime
            mtime = current.st_mtime_ns if times[1] == _UTIME_OMIT else mtime
        os.utime(full, ns=(atime, mtime), follow_symlinks=False)

    @_request
    def truncate(self, path: str | None, length: int, fi: Any = None) -> None:
        if fi is not None:
            os.ftruncate(fi.fh, length)
        else:
            os.truncate(self._full(path), length)

    @_request
    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self._full(path))
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree")
        return {key: getattr(sv, key) for key in (*keys, "f_favail", "f_flag", "f_namemax")}

    # Names.
    @_request
    def mknod(self, path: str, mode: int, dev: int) -> None:
        full = self._full(path)
        os.mknod(full, mode, dev)
        self._give_to_caller(full)

    @_request
    def mkdir(self, path: str, mode: int) -> None:
        full = self._full(path)
        os.mkdir(full, mode)
        self._give_to_caller(full)

    @_request
    def rmdir(self, path: str) -> None:
        os.rmdir(self._full(path))

    @_request
    def unlink(self, path: str) -> None:
        os.unlink(self._full(path))

    @_request
    def rename(self, old: str, new: str) -> None:
        os.rename(self._full(old), self._full(new))

    @_request
    def symlink(self, target: str, source: str) -> None:
        """``target`` is the new link's path on the mount, ``source`` its text, kept verbatim."""
        full = self._full(target)
        os.symlink(source, full)
        self._give_to_caller(full)

    @_request
    def readlink(self, path: str) -> str:
        return os.readlink(self._full(path))

    @_request
    def link(self, target: str, source: str) -> None:
        """Hard link: the new name ``target`` for the file at ``source`` (both on the mount)."""
        os.link(self._full(source), self._full(target), follow_symlinks=False)

    # Directories.
    @_request
    def opendir(self, path: str) -> int:
        return 0

    @_request
    def readdir(self, path: str | None, fh: int) -> list[tuple[str, dict[str, int], int]]:
        """Each entry with its inode number and type: with ``use_ino`` an entry without them
        would have inode 0, which readdir(3) skips."""
        full = self._full(path)
        here = os.lstat(full)
        parent = os.lstat(os.path.dirname(full)) if path != "/" else here
        entries = [
            (".", {"st_ino": here.st_ino, "st_mode": stat.S_IFDIR}, 0),
            ("..", {"st_ino": parent.st_ino, "st_mode": stat.S_IFDIR}, 0),
        ]
        with os.scandir(full) as listing:
            for entry in listing:
                if entry.is_symlink():
                    kind = stat.S_IFLNK
                elif entry.is_dir(follow_symlinks=False):
                    kind = stat.S_IFDIR
                elif entry.is_file(follow_symlinks=False):
                    kind = stat.S_IFREG
                else:
                    kind = stat.S_IFMT(entry.stat(follow_symlinks=False).st_mode)
                entries.append((entry.name, {"st_ino": entry.inode(), "st_mode": kind}, 0))
        return entries

    @_request
    def releasedir(self, path: str | None, fh: int) -> None:
        return None

    @_request
    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> None:
        fd = os.open(self._full(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # Files.
    @_request
    def open(self, path: str, fi: Any) -> None:
        fi.fh = os.open(self._full(path), fi.flags)

    @_request
    def create(self, path: str, mode: int, fi: Any) -> None:
        full = self._full(path)
        fi.fh = os.open(full, fi.flags | os.O_CREAT, mode)
        self._give_to_caller(full)

    @_request
    def read(self, path: str | None, size: int, offset: int, fi: Any) -> bytes:
        data = os.pread(fi.fh, size, offset)
        if self.reads is not None:
            self.reads.pass_bytes(len(data))
        return data

    @_request
    def write(self, path: str | None, data: bytes, offset: int, fi: Any) -> int:
        if self.writes is not None:
            self.writes.pass_bytes(len(data))
        return os.pwrite(fi.fh, data, offset)

    @_request
    def flush(self, path: str | None, fi: Any) -> None:
        return None  # a close(); the backing descriptor stays open until release

    @_request
    def fsync(self, path: str | None, datasync: int, fi: Any) -> None:
        if datasync:
            os.fdatasync(fi.fh)
        else:
            os.fsync(fi.fh)

    @_request
    def release(self, path: str | None, fi: Any) -> None:
        os.close(fi.fh)


def serve(
    backing: Path, mountpoint: Path, delay: float, bandwidth: float | None, cache_timeout: float
) -> None:
    """Mounts and serves in this process, in the foreground, until unmounted or signalled."""
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")  # mfusepy takes libfuse2 if it is there
    from mfusepy import FUSE, fuse_version_major, fuse_version_minor

    if (fuse_version_major, fuse_version_minor) < (3, 11):
        raise SystemExit(
            f"slow_volume needs libfuse >= 3.11, not {fuse_version_major}.{fuse_version_minor}"
        )
    os.umask(0)  # the kernel has applied the caller's umask to every mode it sends
    options: dict[str, Any] = {
        "foreground": True,
        "nothreads": False,
        "raw_fi": True,
        "fsname": "slow_volume",
        "subtype": "slow_volume",
        "default_permissions": True,
        "hard_remove": True,
        "use_ino": True,
        "attr_timeout": cache_timeout,
        "entry_timeout": cache_timeout,
        "negative_timeout": cache_timeout,
    }
    if os.geteuid() == 0 or _user_allow_other():
        options["allow_other"] = True
    FUSE(SlowPassthrough(backing, delay, bandwidth), str(mountpoint), **options)


def _user_allow_other() -> bool:
    try:
        lines = Path("/etc/fuse.conf").read_text().splitlines()
    except OSError:
        return False
    return any(line.strip() == "user_allow_other" for line in lines)


def mount_type(mountpoint: Path) -> str | None:
    """The filesystem type of the mount at ``mountpoint`` in /proc/self/mountinfo, or None."""
    target = os.path.realpath(mountpoint)
    found = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        point = fields[4].encode().decode("unicode_escape")
        if point == target:
            found = fields[separator + 1]  # the last one mounted there is the one seen
    return found


def _unmount(mountpoint: Path) -> None:
    """Unmounts: ``fusermount -u`` first, lazily (``-uz``, then ``umount -l``) if it is busy."""
    for command in (
        ["fusermount", "-u", "-q", str(mountpoint)],
        ["fusermount", "-u", "-z", "-q", str(mountpoint)],
        ["umount", "-l", str(mountpoint)],
    ):
        if not os.path.ismount(mountpoint) and mount_type(mountpoint) is None:
            return
        with contextlib.suppress(OSError):
            subprocess.run(command, check=False, stderr=subprocess.DEVNULL, timeout=30)


@contextlib.contextmanager
def slow_volume(
    backing: Path,
    mountpoint: Path,
    delay: float = 0.001,
    bandwidth: float | None = None,
    *,
    cache_timeout: float = 0.0,
    mount_timeout: float = 30.0,
) -> Iterator[Path]:
    """Mounts ``backing`` at ``mountpoint`` with ``delay`` seconds per operation; yields it.

    ``bandwidth`` (bytes/s, per direction) limits reads and writes; ``cache_timeout`` is how
    long the kernel may keep attributes and names (0: every lookup is a request). Both folders
    must exist. Raises RuntimeError, with the server's output, if the mount is not there within
    ``mount_timeout`` seconds. On leaving, the mount is gone and the server process reaped; a
    process still using the mount is cut off (its next operation on it fails).
    """
    command = [
        sys.executable,
        "-m",
        "tests.support.slow_volume",
        str(backing),
        str(mountpoint),
        "--delay-ms",
        repr(delay * 1000),
        "--cache-timeout",
        repr(cache_timeout),
    ]
    if bandwidth is not None:
        command += ["--bandwidth-mbps", repr(bandwidth * 8 / 1e6)]
    with tempfile.TemporaryFile() as output:
        child = subprocess.Popen(
            command, cwd=_ROOT, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
        try:
            deadline = time.monotonic() + mount_timeout
            while not os.path.ismount(mountpoint):
                if child.poll() is not None or time.monotonic() > deadline:
                    output.seek(0)
                    raise RuntimeError(
                        f"slow_volume: {mountpoint} not mounted (server exit code "
                        f"{child.returncode}): {output.read().decode(errors='replace')}"
                    )
                time.sleep(0.01)  # polling the mount table, bounded by the deadline
            yield mountpoint
        finally:
            _unmount(mountpoint)
            # A mount still in use was only detached (lazily): the server would serve the
            # processes holding it until they let go. Ending it cuts them off at once, as a
            # volume lost with its container would (their next operation fails: ENOTCONN).
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            _unmount(mountpoint)


def main(argv: list[str] | None = None) -> int:
    """The CLI: mounts in the foreground until SIGINT or SIGTERM; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.slow_volume",
        description="Mount BACKING at MOUNTPOINT through FUSE, each operation delayed.",
    )
    parser.add_argument("backing", type=Path)
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--delay-ms", type=float, default=1.0, help="per operation (default 1)")
    parser.add_argument(
        "--bandwidth-mbps",
        type=float,
        default=None,
        help="megabits (10^6 bits) per second, for reads and writes each (default: no limit)",
    )
    parser.add_argument(
        "--cache-timeout",
        type=float,
        default=0.0,
        help="seconds the kernel may cache attributes and names (default 0)",
    )
    args = parser.parse_args(argv)
    bandwidth = args.bandwidth_mbps * 1e6 / 8 if args.bandwidth_mbps else None
    try:
        serve(args.backing, args.mountpoint, args.delay_ms / 1000, bandwidth, args.cache_timeout)
    except RuntimeError as error:
        # libfuse 3's fuse_main answers 8 when its loop ended with an error, and a loop ended
        # by SIGINT or SIGTERM records the signal as one: both end here, unmounted.
        if error.args != (8,):
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
