"""The compressing child process of :mod:`proxy.precompressed`: brotli quality 11 and gzip
level 9 over a batch of assets, outside the orchestrator's memory, at a lowered CPU priority.

Invariants: the child runs at :data:`NICENESS` more than the orchestrator; each output is
written to ``<file>.<gz|br>.part`` and renamed to ``<file>.<gz|br>`` only once complete, so an
output that exists is whole (the store then moves it into its folder atomically); the child
stops by itself when the orchestrator is gone (its parent changed); while the encoder is held
(marimo (re)starts) a running child is stopped (``SIGSTOP``) and no batch begins until it is
resumed; :meth:`Encoder.run` blocks (call it from a worker thread, never the event loop).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

from proxy.asset_http import CHUNK, SUFFIX

log = logging.getLogger("proxy.assets")

NICENESS = 10
"""Added to the compressing child's nice value: the editor's requests and marimo go first."""

_PROGRAM = r"""
import os, sys, zlib
try:
    os.nice(%d)
except OSError:
    pass
import brotli
parent = os.getppid()
for job in sys.argv[1:]:
    if os.getppid() != parent:
        break  # the orchestrator is gone
    source, _, encodings = job.rpartition(":")
    for encoding in encodings.split(","):
        if encoding == "gzip":
            z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            process, finish, suffix = z.compress, z.flush, "gz"
        else:
            b = brotli.Compressor(quality=11)
            process, finish, suffix = b.process, b.finish, "br"
        with open(source, "rb") as src, open(source + "." + suffix + ".part", "wb") as out:
            while chunk := src.read(%d):
                out.write(process(chunk))
            out.write(finish())
        os.replace(source + "." + suffix + ".part", source + "." + suffix)
"""


def program(niceness: int = NICENESS, chunk: int = CHUNK) -> str:
    """The compressing child's program: each ``<file>:<encoding>,...`` argument's encodings
    written beside the file as ``<file>.<gz|br>`` (renamed into place once complete)."""
    return _PROGRAM % (niceness, chunk)


def output(source: Path, encoding: str) -> Path:
    """Where the child writes ``source``'s copy in ``encoding``."""
    return Path(f"{source}.{SUFFIX[encoding]}")


class Encoder:
    """Runs the child over one batch at a time, and holds it while marimo (re)starts."""

    def __init__(self) -> None:
        self._child: subprocess.Popen[bytes] | None = None
        self._may_work = threading.Event()
        self._may_work.set()
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The child's pid while one runs."""
        child = self._child
        return child.pid if child is not None and child.returncode is None else None

    def hold(self) -> None:
        """A running child is stopped where it is; no new batch starts until :meth:`resume`."""
        self._may_work.clear()
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._may_work.set()
        self._signal(signal.SIGCONT)

    def close(self) -> None:
        """Ends a running child; a batch waiting to start does not start."""
        self._closed = True
        self._may_work.set()
        child = self._child
        if child is not None:
            with contextlib.suppress(OSError):
                child.kill()

    def _signal(self, signum: int) -> None:
        child = self._child
        if child is not None and child.returncode is None:
            with contextlib.suppress(OSError):
                child.send_signal(signum)

    def run(self, batch: list[tuple[Path, list[str]]]) -> None:
        """Blocking: once not held, the child over each ``(source, encodings)`` of ``batch``,
        waited for (its outputs: :func:`output`)."""
        self._may_work.wait()
        if self._closed:
            return
        argv = [sys.executable, "-c", program()]
        argv += [f"{source}:{','.join(encodings)}" for source, encodings in batch]
        try:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as error:
            log.warning("proxy.assets.no-encoder error=%s", error)
            return
        self._child = child
        if not self._may_work.is_set():  # marimo went down between the wait and the start
            self._signal(signal.SIGSTOP)
        _, errors = child.communicate()
        self._child = None
        if child.returncode != 0:
            tail = errors.decode("utf-8", "replace").strip().splitlines()[-1:]
            log.warning("proxy.assets.encoder-failed code=%s %s", child.returncode, tail)
