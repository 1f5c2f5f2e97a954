"""Compressed once: marimo's content-hashed assets, compressed at the best level, kept on disk.

:mod:`proxy.compression` gzips what marimo sends chunk by chunk at a middling level, on every
request. For the assets :mod:`proxy.caching` treats as immutable (``/assets/<name>-<hash>.<ext>``:
the name stands for the bytes), that work is done once here instead, at the best level, and the
result is served from the state volume. This module is the store (the copies on disk, their
index, the tee and the worker); which requests and answers qualify and how a copy is served are
:mod:`proxy.asset_http`'s, the compressing child process is :mod:`proxy.asset_encoder`'s.

Invariants:

* The key is the asset's file name (content-hashed, so one name is one content, whichever marimo
  version serves it; a marimo upgrade names new files).
* A copy starts from marimo's own complete answer (:func:`proxy.asset_http.copyable`): its
  chunks are teed to a private file under ``incoming/`` as they pass (never held whole in
  memory), and kept only if exactly ``Content-Length`` bytes arrived. So copies are made only
  while marimo serves (never during its start), only for what browsers ask, at most once per
  name at a time, and at most :data:`MAX_TEES` at once.
* Compressing runs in the child (:mod:`proxy.asset_encoder`), one batch of queued assets at a
  time, started and awaited by one worker thread, and only while marimo serves (:meth:`AssetStore
  .hold`, :meth:`AssetStore.resume`); never on the event loop, never in the orchestrator's memory
  (brotli 11 holds about 60 MiB for marimo's largest bundle). :attr:`AssetStore.compressions`
  counts the encodings kept (and the log says ``proxy.assets.compressed``). Each is written
  atomically by the writer given (temp file, fsync, rename) as ``<asset name>.<sha256 of the
  encoded bytes, 16 hex>.<gz|br>``. An asset whose compressing failed is not tried again by this
  process (it keeps coming from marimo, gzipped on the way).
* Nothing corrupt is served: at :meth:`AssetStore.attach` every file is read and re-hashed in the
  worker, and one whose digest is not its name's is deleted; a file whose size on opening is not
  the recorded size is forgotten and the request goes to marimo.
* :meth:`AssetStore.find` is asked only for requests the guard admitted and while marimo is
  ready (the proxy's routes ask it where they would forward to marimo), so a client gets
  nothing it could not get from marimo.
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
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tornado.httputil import HTTPHeaders, HTTPServerRequest

from proxy.asset_encoder import Encoder, output
from proxy.asset_http import ENCODINGS, SUFFIX, Copy, accepted, copyable, servable

log = logging.getLogger("proxy.assets")

MAX_FOLDER = 256 * 1024 * 1024
"""Bytes of copies kept; beyond, the oldest are removed (a few marimo versions' worth)."""
MAX_TEES = 1024
"""Assets being teed or waiting to be compressed at once (marimo has about 700); further answers
just pass (a later request copies them)."""
MAX_BATCH = 64
"""Assets one compressing child process takes."""
COPY_NAME = re.compile(r"(?P<name>[A-Za-z0-9._-]+)\.(?P<digest>[0-9a-f]{16})\.(?P<suffix>gz|br)")
"""A copy's file name: ``<asset name>.<16 hex of the SHA-256 of its bytes>.<gz|br>``."""

Writer = Callable[[Path, bytes], None]
"""Replaces a file atomically (the orchestrator gives ``jobs.atomic.write_atomically``: this
package never imports :mod:`jobs`)."""


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
        self._encoder = Encoder()
        self._loop: asyncio.AbstractEventLoop | None = None
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
        self._encoder.hold()

    def resume(self) -> None:
        """marimo serves again: compressing goes on where it stopped."""
        self._encoder.resume()

    @property
    def encoder_pid(self) -> int | None:
        """The compressing child's pid while one runs (observability and tests)."""
        return self._encoder.pid

    def close(self) -> None:
        """Stops the worker and its child (queued jobs are dropped; a child cut short leaves
        only files in ``incoming/``, emptied at the next :meth:`attach`)."""
        self._loop = None
        self._jobs.put(None)
        self._encoder.close()

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
                match = COPY_NAME.fullmatch(entry.name)
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
        if not self._ready:
            return None
        name = servable(request)
        if name is None:
            return None
        for encoding in accepted(request.headers):
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
        if not self._ready or self._folder is None or len(self._busy) >= MAX_TEES:
            return None
        copied = copyable(request, status, headers)
        if copied is None or copied[0] in self._busy or copied[0] in self._failed:
            return None
        name, length = copied
        if all((name, e) in self._copies for e in ENCODINGS):
            return None
        try:
            incoming = self._folder / "incoming"
            incoming.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=".tee-", suffix=".tmp", dir=incoming)
        except OSError:
            return None
        self._busy.add(name)
        return Tee(self, name, length, os.fdopen(fd, "wb"), Path(path))

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
        if self._loop is not None:  # else closed meanwhile
            self._encoder.run([(source, encodings) for _, source, encodings in batch])

    def _keep(self, name: str, source: Path, encodings: list[str]) -> None:
        """Worker: moves the child's complete outputs for ``source`` into the folder."""
        made: list[Copy] = []
        try:
            assert self._folder is not None
            raw = source.stat().st_size
            for encoding in encodings:
                made_by_child = output(source, encoding)
                if not made_by_child.exists():
                    continue
                data = made_by_child.read_bytes()
                made_by_child.unlink()
                digest = hashlib.sha256(data).hexdigest()[:16]
                path = self._folder / f"{name}.{digest}.{SUFFIX[encoding]}"
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
            if COPY_NAME.fullmatch(entry.name) and entry.is_file():
                stat = entry.stat()
                files.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self._max_folder:
                break
            path.unlink(missing_ok=True)
            total -= size
            match = COPY_NAME.fullmatch(path.name)
            if match is not None:
                encoding = "br" if match["suffix"] == "br" else "gzip"
                self._call_soon(self._dropped, match["name"], encoding, path)

    def _dropped(self, name: str, encoding: str, path: Path) -> None:
        copy = self._copies.get((name, encoding))
        if copy is not None and copy.path == path:
            del self._copies[(name, encoding)]
