"""The orchestrator's web side in this process, in front of a stand-in marimo.

:class:`InProcess` builds the web side with the function ``Server.startup`` builds it with
(``orchestrator.web_side.build_web_side``), from the same command line and environment
(``orchestrator.cli.parse``): the Quix portal client, the actions, the signing secret, the
guard, the Tornado application (every real handler and the proxy), the secret adoption and
revocations on the state folder, and ``BoundedServer`` with its Host rule, limits and
deadlines, serving a real socket on
127.0.0.1 from an event loop in a thread of its own. It then plays the startup jobs' part on the
board, as the pipeline would: the state folder is resolved (persistent), and marimo is up,
where the stand-in (tests/backends/marimo_standin.py) listens.

What it leaves out: the jobs (no venv, no uv, no marimo), the early responder, notebook sync,
``keep_private`` (the test process stays dumpable) and the process's own signal handling. A
test of any of those, or of marimo itself, starts a real orchestrator (tests/conftest.py's
``orchestrator`` fixture) instead.

Invariant: :meth:`InProcess.terminate` leaves nothing behind (sockets, tasks, threads, log
handlers); the fixture calls it at teardown whatever the test did.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.netutil

from jobs.redact import redact
from jobs.reporting import STEP_NAMES
from tests.backends import marimo_standin
from tests.support.orchestrator import StatusClient, free_port

LOGGERS = ("orchestrator", "proxy", "jobs", "tornado")
"""The loggers whose lines make :meth:`InProcess.log_text` (the orchestrator's own log)."""

_LEVELS_LOCK = threading.Lock()
_SAVED_LEVELS: dict[str, int] = {}
_RUNNING: set[InProcess] = set()


_SERVER_THREADS: set[int] = set()
"""The threads running an instance's event loop."""


class _Lines(logging.Handler):
    """Keeps the lines of :data:`LOGGERS`, formatted and redacted as orchestrator/logs.py does:
    those of its instance's thread and of threads no other instance runs (the portal's calls)."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.lines: list[str] = []
        self.thread: int | None = None
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s [%(name)s] %(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] not in LOGGERS:
            return False
        if record.thread != self.thread and record.thread in _SERVER_THREADS:
            return False  # another instance's
        return bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(redact(self.format(record)))


class InProcess(StatusClient):
    """One orchestrator's web side; the observation methods match
    :class:`tests.support.orchestrator.Orchestrator`'s (``port``, ``base``, ``token``, ``auth``,
    ``get``, ``status``, ``wait_for``, ``log_text``, ``terminate``)."""

    wait_timeout = 30.0

    def __init__(
        self,
        notebook_dir: Path,
        state_dir: Path,
        env: Mapping[str, str],
        args: tuple[str, ...] = (),
        port: int | None = None,
        token: str | None = None,
    ) -> None:
        """As :class:`~tests.support.orchestrator.Orchestrator`: ``--token`` is ``token`` (a
        fresh one if None) unless ``args`` choose the sign-in; ``--host 127.0.0.1`` unless
        ``args`` name another."""
        from orchestrator.cli import parse

        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = token or "test-token-" + secrets.token_hex(8)
        if not any(arg.startswith("--auth") or arg == "--token" for arg in args):
            args = ("--token", self.token, *args)
        argv = [str(notebook_dir), "--host", "127.0.0.1", "--port", str(self.port)]
        self.config = parse([*argv, "--state-dir", str(state_dir), *args], dict(env))
        self.state_dir = self.config.jobs.state_dir
        self.marimo_token = secrets.token_hex(16)
        """What the stand-in marimo accepts: only the proxy knows it, as only it knows marimo's."""
        self._log = _Lines(logging.getLevelName(self.config.log_level.upper()))
        self._hook_logging()
        self._printed = io.StringIO()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ended = False
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"in-process-{self.port}")
        self._thread.start()
        if not self._started.wait(30) or self._error is not None:
            self.terminate()
            raise AssertionError("the in-process server did not start") from self._error

    # -- the server's thread ---------------------------------------------------------------------

    def _hook_logging(self) -> None:
        """Lines reach :attr:`_log` at the configured level; the loggers' levels are the
        process's own again once the last running instance ends (two may overlap)."""
        with _LEVELS_LOCK:
            if not _SAVED_LEVELS:
                for name in (*LOGGERS, "tornado.access"):
                    _SAVED_LEVELS[name] = logging.getLogger(name).level
            _RUNNING.add(self)
            for name in LOGGERS:
                logger = logging.getLogger(name)
                logger.setLevel(min(logger.level or logging.CRITICAL, self._log.level))
            logging.getLogger("tornado.access").setLevel(logging.WARNING)  # orchestrator/logs.py
        logging.getLogger().addHandler(self._log)

    def _unhook_logging(self) -> None:
        logging.getLogger().removeHandler(self._log)
        with _LEVELS_LOCK:
            _RUNNING.discard(self)
            if not _RUNNING:
                for name, level in _SAVED_LEVELS.items():
                    logging.getLogger(name).setLevel(level)
                _SAVED_LEVELS.clear()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported by __init__ or terminate
            self._error = error
            self._started.set()
        finally:
            _SERVER_THREADS.discard(threading.get_ident())

    async def _main(self) -> None:
        from orchestrator.server import Server

        self._log.thread = threading.get_ident()
        _SERVER_THREADS.add(threading.get_ident())
        # What the process prints on its terminal once the port answers (the sign-in URL); the
        # test's thread waits meanwhile, so taking stdout over is safe.
        with contextlib.redirect_stdout(self._printed):
            Server(self.config).announce()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        background: set[asyncio.Task[None]] = set()
        server, assets, upstream = self._startup(background)
        self._started.set()
        await self._stop.wait()
        # As Server.shutdown, without the jobs.
        for task in background:
            task.cancel()
        self.board.begin_stopping()
        server.stop()
        upstream.stop()
        assets.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.close_all_connections(), timeout=1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(upstream.close_all_connections(), timeout=1.0)

    def _startup(self, background: set[asyncio.Task[None]]) -> tuple[Any, Any, Any]:
        """``Server.startup``'s web side, then the jobs' reports of a ready marimo."""
        from orchestrator.metrics import Metrics
        from orchestrator.server import recheck_sockets
        from orchestrator.status import StatusBoard
        from orchestrator.web_side import build_web_side
        from proxy.websocket import WebSocketRelay

        config = self.config
        loop = asyncio.get_running_loop()
        board = StatusBoard(boot_id=os.urandom(16).hex())
        self.board = board
        pipeline: asyncio.Future[Any] = loop.create_future()  # no jobs: never resolved
        metrics: asyncio.Future[Metrics] = loop.create_future()
        metrics.set_result(Metrics(board, lambda: WebSocketRelay.open_relays))
        _, guard, _, server, assets = build_web_side(config, board, pipeline, metrics, lambda: None)
        server.add_sockets(
            tornado.netutil.bind_sockets(config.port, config.host, family=socket.AF_INET)
        )
        if config.auth != "none":
            self._in_background(background, recheck_sockets(guard))
        # The jobs' part: the state folder (made, as the state step makes a missing one), then
        # marimo, the stand-in, up.
        upstream_sockets = tornado.netutil.bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
        upstream = tornado.httpserver.HTTPServer(marimo_standin.make_app(self.marimo_token))
        upstream.add_sockets(upstream_sockets)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        board.state_resolved(self.state_dir, True, None)
        for step in STEP_NAMES:
            board.step_running(step, "stand-in")
            if step != "marimo":
                board.step_finished(step, "done", "stand-in")
        marimo_port = upstream_sockets[0].getsockname()[1]
        board.marimo_up(os.getpid(), "127.0.0.1", marimo_port, self.marimo_token)
        board.step_finished("marimo", "done", f"serving on port {marimo_port}")
        return server, assets, upstream

    @staticmethod
    def _in_background(
        tasks: set[asyncio.Task[None]], work: Coroutine[object, object, None]
    ) -> None:
        tasks.add(asyncio.get_running_loop().create_task(work))

    # -- observation -----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The process serving: this one."""
        return os.getpid()

    def log_text(self) -> str:
        """What the process printed, then its log lines (a real one's log file has both)."""
        return self._printed.getvalue() + "".join(line + "\n" for line in list(self._log.lines))

    def wait_listening(self, timeout: float = 10) -> float:
        """Listening since construction; the seconds that took."""
        return time.monotonic() - self.started_at

    # -- ending ----------------------------------------------------------------------------------

    def terminate(self) -> int:
        """Stops serving (the port is closed when this returns); 0, as a clean exit."""
        if not self._ended:
            self._ended = True
            if self._loop is not None and self._stop is not None:
                with contextlib.suppress(RuntimeError):  # the loop already ended
                    self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
            self._unhook_logging()
        assert not self._thread.is_alive(), "the in-process server did not stop"
        return 0


InProcessFactory = Callable[..., InProcess]
"""The ``in_process`` fixture (tests/conftest.py): same arguments as ``orchestrator``."""


@contextlib.contextmanager
def serving(*args: Any, **kwargs: Any) -> Iterator[InProcess]:
    """An :class:`InProcess` for the block."""
    run = InProcess(*args, **kwargs)
    try:
        yield run
    finally:
        run.terminate()
