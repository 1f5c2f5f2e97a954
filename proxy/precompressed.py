"""Compressed once: marimo's content-hashed assets, compressed at the best level, kept on disk.

:mod:`proxy.compression` gzips what marimo sends chunk by chunk at a middling level, on every
request. For the assets :mod:`proxy.caching` treats as immutable (``/assets/<name>-<hash>.<ext>``:
the name stands for the bytes), that work is done once here instead, at the best level, and the
result is served from the state volume.

Invariants:

* The key is the asset's file name (content-hashed, so one name is one content, whichever marimo
  version serves it; a marimo upgrade names new files). Only names of
  ``[A-Za-z0-9._-]`` with a type :func:`proxy.compression.compressible` accepts are kept.
* A copy starts from marimo's own complete ``200`` identity answer to a client's ``GET`` (no
  ``Content-Encoding``, no range, a ``Content-Length`` of at most :data:`MAX_ASSET`): its chunks
  are teed to a private file under ``incoming/`` as they pass (never held whole in memory), and
  kept only if exactly ``Content-Length`` bytes arrived. So copies are made only while marimo
  serves (never during its start), only for what browsers ask, at most once per name at a time.
* Compressing (brotli quality 11, gzip level 9) runs in a child process at a lowered CPU priority
  (:data:`NICENESS`), one batch of queued assets at a time, started and awaited by one worker
  thread, and only while marimo serves: while it (re)starts the child is stopped (``SIGSTOP``,
  :meth:`AssetStore.hold`) and no batch begins, so compressing never competes with marimo's
  start; never on the event loop, never in the orchestrator's memory (brotli 11 holds about
  60 MiB for marimo's largest bundle). :attr:`AssetStore.compressions` counts the encodings kept
  (and the log says ``proxy.assets.compressed``). Each is written atomically by the writer given
  (temp file, fsync, rename) as ``<asset name>.<sha256 of the encoded bytes, 16 hex>.<gz|br>``.
  An asset whose compressing failed is not tried again by this process (it keeps coming from
  marimo, gzipped on the way).
* Nothing corrupt is served: at :meth:`AssetStore.attach` every file is read and re-hashed in the
  worker, and one whose digest is not its name's is deleted; a file whose size on opening is not
  the recorded size is forgotten and the request goes to marimo.
* :meth:`AssetStore.find` offers a copy only for an HTTP/1.1 ``GET`` without a body or ``Range``
  whose ``Accept-Encoding`` admits the encoding (``br`` preferred, then ``gzip``). It is asked
  only for requests the guard admitted and while marimo is ready (the proxy's routes ask it where
  they would forward to marimo), so a client gets nothing it could not get from marimo.
* A served copy carries ``Content-Encoding``, its ``Content-Length``, a strong ``ETag`` (its
  digest, so a client holding it revalidates to ``304`` without a body), ``Vary:
  Accept-Encoding``, and :mod:`proxy.caching`'s immutable caching. Every other request (identity,
  ranges, ``HEAD``) still goes to marimo.
* The folder is bounded (:data:`MAX_FOLDER`): beyond it, the oldest copies are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tornado.httputil import HTTPHeaders, HTTPServerRequest

from proxy import caching
from proxy.compression import compressible, encoding_weights, media_type

log = logging.getLogger("proxy.assets")

MAX_ASSET = 32 * 1024 * 1024
"""Largest asset copied (marimo's largest, a plotting bundle, is under 5 MB)."""
MAX_FOLDER = 256 * 1024 * 1024
"""Bytes of copies kept; beyond, the oldest are removed (a few marimo versions' worth)."""
MAX_TEES = 1024
"""Assets being teed or waiting to be compressed at once (marimo has about 700); further answers
just pass (a later request copies them)."""
MAX_BATCH = 64
"""Assets one compressing child process takes."""
CHUNK = 256 * 1024
NICENESS = 10
"""Added to the compressing child's nice value: the editor's requests and marimo go first."""

ENCODINGS = ("br", "gzip")
"""Preference order when the client accepts several."""
_SUFFIX = {"br": "br", "gzip": "gz"}
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_FILE = re.compile(r"(?P<name>[A-Za-z0-9._-]+)\.(?P<digest>[0-9a-f]{16})\.(?P<suffix>gz|br)")
_TYPES = {
    ".js": "application/javascript",
    ".mjs": "application/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".map": "application/json",
}
"""The type each kept extension is served with (marimo's types for them)."""

Writer = Callable[[Path, bytes], None]
"""Replaces a file atomically (the orchestrator gives ``jobs.atomic.write_atomically``: this
package never imports :mod:`jobs`)."""


@dataclass(frozen=True)
class Copy:
    """One encoding of one asset on disk."""

    name: str
    encoding: str
    digest: str
    size: int
    path: Path

    @property
    def etag(self) -> str:
        return f'"{self.digest}.{_SUFFIX[self.encoding]}"'

    def headers(self) -> HTTPHeaders:
        headers = HTTPHeaders()
        headers["Content-Type"] = _TYPES[Path(self.name).suffix]
        headers["Content-Encoding"] = self.encoding
        headers["Content-Length"] = str(self.size)
        headers["ETag"] = self.etag
        headers["Cache-Control"] = caching.IMMUTABLE
        headers["Vary"] = "Accept-Encoding"
        return headers


def accepted(request_headers: HTTPHeaders) -> list[str]:
    """The encodings of :data:`ENCODINGS` the client admits with a non-zero weight, in order."""
    weights = encoding_weights(request_headers)
    star = weights.get("*", 0.0)
    return [e for e in ENCODINGS if weights.get(e, star) > 0]


def asset_name(request: HTTPServerRequest) -> str | None:
    """The file name of a content-hashed asset request, None for anything else."""
    path = request.path
    if caching.HASHED_ASSET.fullmatch(path) is None:
        return None
    name = path.rsplit("/", 1)[1]
    if _NAME.fullmatch(name) is None or Path(name).suffix not in _TYPES:
        return None
    return name


def not_modified(request: HTTPServerRequest, copy: Copy) -> bool:
    """Whether ``If-None-Match`` names this copy (compared weakly, as RFC 9110 says)."""
    for value in request.headers.get_list("If-None-Match"):
        for tag in value.split(","):
            tag = tag.strip().removeprefix("W/")
            if tag == "*" or tag == copy.etag:
                return True
    return False


_ENCODER = r"""
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


def _encoder(niceness: int, chunk: int) -> str:
    """The compressing child's program: each ``<file>:<encoding>,...`` argument's encodings
    written beside the file as ``<file>.<gz|br>`` (renamed into place once complete)."""
    return _ENCODER % (niceness, chunk)


class _CompressJob:
    """A queued compression: callable alone, or gathered into a batch by the worker."""

    def __init__(self, store: AssetStore, name: str, source: Path, encodings: list[str]) -> None:
        self.store = store
        self.compress_job = (name, source, encodings)

    def __call__(self) -> None:
        self.store._compress(*self.compress_job)


class Tee:
    """One asset answer being copied to ``incoming/`` as it passes to the client."""

    def __init__(
        self, store: AssetStore, name: str, length: int, handle: BinaryIO, path: Path
    ) -> None:
        self._store, self.name, self._length, self._handle = store, name, length, handle
        self._path = path
        self._written = 0
        self._failed = False

    def write(self, chunk: bytes) -> None:
        if self._failed:
            return
        try:
            self._handle.write(chunk)
            self._written += len(chunk)
        except OSError:
            self._failed = True  # a full or broken volume: the answer itself goes on

    def finish(self, complete: bool) -> None:
        """Ends the copy: compressed when the whole body arrived, else thrown away."""
        path = self._path
        with contextlib.suppress(OSError):
            self._handle.close()
        if complete and not self._failed and self._written == self._length:
            self._store.compress(self.name, path)
        else:
            self._store.abandon(self.name, path)


class AssetStore:
    """The compressed copies of one state volume (none until :meth:`attach`)."""

    def __init__(self, write: Writer, *, max_folder: int = MAX_FOLDER) -> None:
        self._write = write
        self._max_folder = max_folder
        self._folder: Path | None = None
        self._ready = False
        self._copies: dict[tuple[str, str], Copy] = {}
        self._busy: set[str] = set()
        self._failed: set[str] = set()  # not compressed once: not tried again by this process
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._may_work = threading.Event()
        self._may_work.set()
        self.compressions = 0
        """Encodings made by this process (each asset is compressed once per encoding)."""

    # -- set-up -------------------------------------------------------------------------------

    def attach(self, folder: Path) -> None:
        """Uses ``folder`` (on the state volume); its files are checked in the worker first."""
        if self._folder is not None:
            return
        self._folder = folder
        self._loop = asyncio.get_running_loop()
        # A daemon thread: the process never waits for a compression to end (every file is
        # written atomically, so one cut short leaves nothing behind but its temp file).
        self._worker = threading.Thread(target=self._work, name="asset-compress", daemon=True)
        self._worker.start()
        self._jobs.put(lambda: self._scan(folder))

    @property
    def ready(self) -> bool:
        """Whether the folder's copies have been checked and are offered."""
        return self._ready

    def hold(self) -> None:
        """marimo is (re)starting: no compressing competes with it. A running child is
        stopped where it is (``SIGSTOP``) and no new batch starts until :meth:`resume`."""
        self._may_work.clear()
        self._signal_child(signal.SIGSTOP)

    def resume(self) -> None:
        """marimo serves again: compressing goes on where it stopped."""
        self._may_work.set()
        self._signal_child(signal.SIGCONT)

    @property
    def encoder_pid(self) -> int | None:
        """The compressing child's pid while one runs (observability and tests)."""
        child = self._child
        return child.pid if child is not None and child.returncode is None else None

    def _signal_child(self, signum: int) -> None:
        child = self._child
        if child is not None and child.returncode is None:
            with contextlib.suppress(OSError):
                child.send_signal(signum)

    def close(self) -> None:
        """Stops the worker and its child (queued jobs are dropped; a child cut short leaves
        only files in ``incoming/``, emptied at the next :meth:`attach`)."""
        self._loop = None
        self._jobs.put(None)
        self._may_work.set()
        child = self._child
        if child is not None:
            with contextlib.suppress(OSError):
                child.kill()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._loop is None:
                continue  # closed: drain without working
            try:
                job()
            except Exception:
                log.exception("proxy.assets.error")

    def _scan(self, folder: Path) -> None:
        """Worker: keeps the files whose content matches their name, removes the rest."""
        found: list[Copy] = []
        try:
            incoming = folder / "incoming"
            if incoming.is_dir():
                for leftover in incoming.iterdir():
                    leftover.unlink(missing_ok=True)
            folder.mkdir(parents=True, exist_ok=True)
            for entry in os.scandir(folder):
                match = _FILE.fullmatch(entry.name)
                if match is None or not entry.is_file():
                    continue
                data = Path(entry.path).read_bytes()
                if hashlib.sha256(data).hexdigest()[:16] != match["digest"]:
                    log.warning("proxy.assets.corrupt file=%s (removed)", entry.name)
                    Path(entry.path).unlink(missing_ok=True)
                    continue
                encoding = "br" if match["suffix"] == "br" else "gzip"
                found.append(
                    Copy(match["name"], encoding, match["digest"], len(data), Path(entry.path))
                )
        except OSError as error:
            log.warning("proxy.assets.unusable folder=%s error=%s", folder, error)
            return
        self._call_soon(self._loaded, found)

    def _loaded(self, found: list[Copy]) -> None:
        for copy in found:
            self._copies[(copy.name, copy.encoding)] = copy
        self._ready = True

    def _call_soon(self, callback: Callable[..., None], *args: object) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(callback, *args)

    # -- serving (event loop) -----------------------------------------------------------------

    def find(self, request: HTTPServerRequest) -> Copy | None:
        """The copy to answer this request with, None when it goes to marimo."""
        if not self._ready or request.method != "GET" or request.version != "HTTP/1.1":
            return None
        headers = request.headers
        if "Range" in headers or "Transfer-Encoding" in headers:
            return None
        if headers.get("Content-Length", "0").strip() != "0":
            return None
        name = asset_name(request)
        if name is None:
            return None
        for encoding in accepted(headers):
            copy = self._copies.get((name, encoding))
            if copy is not None:
                return copy
        return None

    def forget(self, copy: Copy) -> None:
        """A copy that could not be served as recorded: never offered again."""
        self._copies.pop((copy.name, copy.encoding), None)
        with contextlib.suppress(OSError):
            copy.path.unlink(missing_ok=True)

    # -- copying (event loop, then worker) ----------------------------------------------------

    def tee(self, request: HTTPServerRequest, status: int, headers: HTTPHeaders) -> Tee | None:
        """A copy of marimo's answer to take as it passes, or None (see the invariants)."""
        if not self._ready or self._folder is None or status != 200:
            return None
        if request.method != "GET" or "Range" in request.headers:
            return None
        name = asset_name(request)
        if name is None or name in self._busy or name in self._failed:
            return None
        if len(self._busy) >= MAX_TEES:
            return None
        if all((name, e) in self._copies for e in ENCODINGS):
            return None
        if "Content-Encoding" in headers or "Content-Range" in headers:
            return None
        if not compressible(headers.get("Content-Type")):
            return None
        if media_type(headers.get("Content-Type")) != _TYPES[Path(name).suffix]:
            return None
        length = headers.get("Content-Length", "")
        if not length.isdigit() or not 0 < int(length) <= MAX_ASSET:
            return None
        try:
            incoming = self._folder / "incoming"
            incoming.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=".tee-", suffix=".tmp", dir=incoming)
        except OSError:
            return None
        self._busy.add(name)
        return Tee(self, name, int(length), os.fdopen(fd, "wb"), Path(path))

    def abandon(self, name: str, source: Path) -> None:
        self._busy.discard(name)
        with contextlib.suppress(OSError):
            source.unlink(missing_ok=True)

    def compress(self, name: str, source: Path) -> None:
        missing = [e for e in ENCODINGS if (name, e) not in self._copies]
        self._jobs.put(_CompressJob(self, name, source, missing))

    def _compress(self, name: str, source: Path, encodings: list[str]) -> None:
        """Worker: this job and every one queued behind it, compressed by one child process
        (brotli at quality 11 holds tens of MiB: never in the orchestrator's own memory)."""
        batch = [(name, source, encodings)]
        while len(batch) < MAX_BATCH:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._jobs.put(None)  # closing: seen by the loop once this batch is done
                break
            pending = getattr(job, "compress_job", None)
            if pending is None:
                job()  # not a compression (a scan): run it in order
                continue
            batch.append(pending)
        try:
            self._encode(batch)
        finally:
            for job_name, job_source, job_encodings in batch:
                self._keep(job_name, job_source, job_encodings)

    def _encode(self, batch: list[tuple[str, Path, list[str]]]) -> None:
        """Worker: runs the child over ``batch`` (once marimo serves) and waits for it."""
        self._may_work.wait()
        if self._loop is None:
            return  # closed meanwhile
        argv = [sys.executable, "-c", _encoder(NICENESS, CHUNK)]
        argv += [f"{source}:{','.join(encodings)}" for _, source, encodings in batch]
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
            self._signal_child(signal.SIGSTOP)
        _, errors = child.communicate()
        self._child = None
        if child.returncode != 0:
            tail = errors.decode("utf-8", "replace").strip().splitlines()[-1:]
            log.warning("proxy.assets.encoder-failed code=%s %s", child.returncode, tail)

    def _keep(self, name: str, source: Path, encodings: list[str]) -> None:
        """Worker: moves the child's complete outputs for ``source`` into the folder."""
        made: list[Copy] = []
        try:
            assert self._folder is not None
            raw = source.stat().st_size
            for encoding in encodings:
                output = Path(f"{source}.{_SUFFIX[encoding]}")
                if not output.exists():
                    continue
                data = output.read_bytes()
                output.unlink()
                digest = hashlib.sha256(data).hexdigest()[:16]
                path = self._folder / f"{name}.{digest}.{_SUFFIX[encoding]}"
                self._write(path, data)
                made.append(Copy(name, encoding, digest, len(data), path))
                log.info(
                    "proxy.assets.compressed name=%s encoding=%s bytes=%d from=%d",
                    name,
                    encoding,
                    len(data),
                    raw,
                )
            self._prune()
        except OSError as error:
            log.warning("proxy.assets.not-kept name=%s error=%s", name, error)
        finally:
            for leftover in (source, *source.parent.glob(f"{source.name}.*")):
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
            self._call_soon(self._published, name, made, len(made) == len(encodings))

    def _published(self, name: str, made: list[Copy], whole: bool) -> None:
        self._busy.discard(name)
        if not whole:
            self._failed.add(name)
        for copy in made:
            self._copies[(copy.name, copy.encoding)] = copy
            self.compressions += 1

    def _prune(self) -> None:
        """Worker: removes the oldest copies while the folder holds more than its bound."""
        assert self._folder is not None
        files = []
        for entry in os.scandir(self._folder):
            if _FILE.fullmatch(entry.name) and entry.is_file():
                stat = entry.stat()
                files.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self._max_folder:
                break
            path.unlink(missing_ok=True)
            total -= size
            match = _FILE.fullmatch(path.name)
            if match is not None:
                encoding = "br" if match["suffix"] == "br" else "gzip"
                self._call_soon(self._dropped, match["name"], encoding, path)

    def _dropped(self, name: str, encoding: str, path: Path) -> None:
        copy = self._copies.get((name, encoding))
        if copy is not None and copy.path == path:
            del self._copies[(name, encoding)]
