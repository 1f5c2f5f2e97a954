"""The composition root: one orchestrator process from its public port to its exit, in the order
it happens (as uvicorn's ``Server``: startup, serve, shutdown).

:meth:`Server.run` reads top to bottom:

1. bind the public port with the standard library (orchestrator/listen.py);
2. on a warm state, start marimo at once (jobs/head_start.py);
3. on the event loop, answer the platform's probes (orchestrator/early.py) while Tornado and
   the web modules are imported in a worker thread;
4. build the board, the portal, the actions, the guard and the Tornado application, each given
   its collaborators at construction, and hand the port and every waiting connection to Tornado;
5. import the jobs' and the metrics' modules in a worker thread (requests are served meanwhile),
   then start the jobs;
6. serve until SIGTERM/SIGINT; 7. shut down.

The imports at module level are those the path before marimo's spawn already needs. Everything
else is imported by the stage that first needs it, at the top of that stage's method: asyncio,
the early responder and logging after marimo's spawn, Tornado and the web modules in a worker
thread, the jobs' modules once Tornado has the port. No import on the way to marimo's spawn
brings ``asyncio`` (and its ``inspect``) or ``dataclasses`` (tests/test_warm_start.py).

Invariants: the listening socket exists before the first job is scheduled; from then until the
process stops a liveness probe is answered and no accepted connection is dropped; on exit every
child process tree we started is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.layout import StateLayout
from orchestrator.config import Config
from orchestrator.listen import BindError, bind

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Coroutine
    from socket import socket

    from jobs.head_start import HeadStart
    from jobs.notebook_sync import NotebookSync
    from jobs.runner import Pipeline
    from orchestrator.early import EarlyResponder
    from orchestrator.metrics import Metrics
    from orchestrator.quix.portal import QuixPortal
    from orchestrator.status import StatusBoard
    from orchestrator.trust.auth import Guard
    from orchestrator.trust.bounds import BoundedServer
    from proxy.precompressed import AssetStore

log = logging.getLogger("orchestrator")

SHUTDOWN_GRACE = 5.0
"""Seconds each child process tree gets between SIGTERM and SIGKILL at shutdown."""


class Server:
    """One run of the orchestrator; :meth:`run` is the whole life of the process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.boot_id = os.urandom(16).hex()
        """Told by every probe answer, early or not: a new value means a new process."""
        self.sync: NotebookSync | None = None
        """Notebook sync, once a persistent state directory is known and sync is on."""
        self._background: set[asyncio.Task[None]] = set()

    def run(self) -> int:
        """Bind, head start marimo, then serve until told to stop; the process's exit code."""
        try:
            sockets = bind(self.config.host, self.config.port)
        except BindError as error:
            print(f"marimo-orchestrator: error: {error}", file=sys.stderr, flush=True)
            return 2
        head_start = self.head_start()
        import asyncio

        from orchestrator import logs

        logs.configure(self.config.log_level, self.config.log_format)
        return asyncio.run(self.serve(sockets, head_start))

    def head_start(self) -> HeadStart | None:
        """On a warm state marimo starts now, booting while the server's modules load and the
        jobs check that nothing changed; marimo's own start is most of a warm start. After a
        container replacement (a snapshot on the volume) it may start on a skeleton venv while
        the snapshot is restored (jobs/head_start.py)."""
        warm = StateLayout(self.config.jobs.state_dir)
        if not (warm.manifest.is_file() or warm.envs.is_dir() or warm.snapshot_record.is_file()):
            return None  # nothing warm: no need to import the head start's modules
        from jobs.head_start import begin

        return begin(self.config.jobs)

    async def serve(self, sockets: list[socket], head_start: HeadStart | None) -> int:
        """Everything on the event loop, from the first probe answered to the last child gone."""
        import asyncio

        from orchestrator.early import EarlyResponder

        early = EarlyResponder(sockets, self.boot_id, self.config.frame_ancestors)
        self.announce()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, import_web)
        pipeline: asyncio.Future[Pipeline] = loop.create_future()
        metrics: asyncio.Future[Metrics] = loop.create_future()
        board, server, assets = self.startup(early, pipeline, metrics)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        jobs = await self.start_jobs(board, head_start, pipeline, metrics)
        await self.main_loop(jobs, stop)
        await self.shutdown(board, pipeline.result(), jobs, server, assets)
        return 0

    def announce(self) -> None:
        """Where to go, once the port answers."""
        config = self.config
        # The address as given (a cookie set for 127.0.0.1 is not sent to localhost); only the
        # wildcard addresses, which no browser can open, become localhost.
        shown = "localhost" if config.host in ("0.0.0.0", "::") else config.host
        if ":" in shown:
            shown = f"[{shown}]"  # an IPv6 address in a URL
        log.info(
            "listening on http://%s:%s/ (notebooks in %s)",
            shown,
            config.port,
            config.jobs.notebook_dir,
        )
        print(f"marimo-orchestrator is serving http://{shown}:{config.port}/", flush=True)
        if config.auth == "token" and config.token_generated:
            # Printed once, to the terminal only (never through logging), as Jupyter does.
            print(
                f"Sign in with: http://{shown}:{config.port}/-/login?token={config.token}",
                flush=True,
            )
        if config.auth == "none" and config.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning(
                "--auth none on %s: anyone who can reach this port can use marimo", config.host
            )

    def startup(
        self,
        early: EarlyResponder,
        pipeline: asyncio.Future[Pipeline],
        metrics: asyncio.Future[Metrics],
    ) -> tuple[StatusBoard, BoundedServer, AssetStore]:
        """Build the objects (the web modules are loaded) and give Tornado the port.

        The pipeline and the metrics arrive once the jobs' modules have loaded: the objects that
        use them are given the futures."""
        from orchestrator.status import StatusBoard
        from orchestrator.trust.private import keep_private
        from orchestrator.web_side import build_web_side

        config = self.config
        keep_private()  # before anyone can sign in and run code as this user
        board = StatusBoard(boot_id=self.boot_id)
        portal, guard, _, server, assets = build_web_side(
            config, board, pipeline, metrics, lambda: self.sync
        )
        early.hand_over(server)
        if config.sync_to_quix and portal is not None:
            board.on_state.append(self._sync_starter(portal, guard, board))
        if config.auth != "none":
            self._in_background(recheck_sockets(guard), "recheck-sockets")
        return board, server, assets

    async def start_jobs(
        self,
        board: StatusBoard,
        head_start: HeadStart | None,
        pipeline: asyncio.Future[Pipeline],
        metrics: asyncio.Future[Metrics],
    ) -> asyncio.Task[None]:
        """Resolve ``pipeline`` and ``metrics`` and run the jobs. The port is Tornado's already:
        requests are served while the jobs' modules load."""
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, import_jobs)
        from jobs.runner import Pipeline
        from orchestrator.metrics import Metrics
        from proxy.websocket import WebSocketRelay

        metrics.set_result(Metrics(board, lambda: WebSocketRelay.open_relays))
        pipeline.set_result(Pipeline(self.config.jobs, board, head_start))
        return asyncio.create_task(pipeline.result().run(), name="pipeline")

    def _sync_starter(
        self, portal: QuixPortal, guard: Guard, board: StatusBoard
    ) -> Callable[[Path, bool], None]:
        """Notebook sync starts once the state directory (where its queue lives) is known."""
        from orchestrator.quix.sync import make_sync, run_sync

        def start_sync(path: Path, persistent: bool) -> None:
            self.sync = make_sync(self.config, portal, guard, board, path, persistent)
            self._in_background(run_sync(self.sync), "notebook-sync")

        return start_sync

    def _in_background(self, work: Coroutine[object, object, None], name: str) -> None:
        import asyncio

        self._background.add(asyncio.create_task(work, name=name))

    async def main_loop(self, jobs: asyncio.Task[None], stop: asyncio.Event) -> None:
        """Serve while the jobs run, and after they ended, until SIGTERM/SIGINT."""
        import asyncio

        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({jobs, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if jobs in done and jobs.exception() is not None:
            log.error("the startup jobs crashed: %r", jobs.exception())
        if not stop.is_set():
            # The jobs ended (marimo gave up for good): keep serving the status until told to stop.
            await stop.wait()

    async def shutdown(
        self,
        board: StatusBoard,
        pipeline: Pipeline,
        jobs: asyncio.Task[None],
        server: BoundedServer,
        assets: AssetStore,
    ) -> None:
        """Pending notebook edits first, then the jobs and every child process, then the
        connections."""
        import asyncio

        from jobs.processes import live_children, terminate_tree_async
        from orchestrator.quix.sync import FLUSH_ON_SIGTERM

        log.info("stopping")
        if self.sync is not None and self.sync.state.pending:
            left = await self.sync.flush_now(FLUSH_ON_SIGTERM)
            if left:
                log.warning("not saved to Quix yet, kept on the state volume: %s", ", ".join(left))
        for task in self._background:
            task.cancel()
        board.begin_stopping()
        server.stop()
        assets.close()
        await pipeline.stop()
        jobs.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await jobs
        await asyncio.gather(
            *(terminate_tree_async(child.pid, SHUTDOWN_GRACE) for child in live_children()),
            return_exceptions=True,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.close_all_connections(), timeout=1.0)
        await pipeline.remove_fallback()  # every writer into it has ended
        log.info("stopped")


def import_web() -> None:
    """Tornado and the web modules, all that :meth:`Server.startup` imports; run in a worker
    thread while the early responder answers."""
    from orchestrator import actions, app, status, web_side  # noqa: F401
    from orchestrator.quix import portal  # noqa: F401
    from orchestrator.trust import bounds, hosts, private, secret_adoption  # noqa: F401
    from proxy import precompressed  # noqa: F401


def import_jobs() -> None:
    """The jobs' and the metrics' modules; run in a worker thread once Tornado has the port."""
    from jobs import runner  # noqa: F401
    from orchestrator import metrics  # noqa: F401


async def recheck_sockets(guard: Guard) -> None:
    """Sessions holding WebSockets open (the terminal) end when they expire and, in quix mode,
    when the portal stops accepting their token, like any other."""
    import asyncio

    interval = min(30.0, guard.quix_recheck)
    while True:
        await asyncio.sleep(interval)
        try:
            await guard.sweep()
        except Exception as error:  # never takes the server down
            log.error("re-checking open sessions failed: %r", error)
