"""The full server on the already-bound public port, then the jobs; stop cleanly on
SIGTERM/SIGINT.

Invariants: the listening socket exists before the first job is scheduled (orchestrator/cli.py
binds it first, orchestrator/boot.py answers probes on it until this module has loaded), and
nothing on the way imports marimo, requests or other heavy modules; on exit every child process
tree we started is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import tornado.httputil
import tornado.routing
import tornado.web

from jobs.layout import StateLayout
from jobs.manifest import write_atomically
from jobs.redact import redact
from orchestrator.actions import Actions
from orchestrator.auth import Guard, Verifier, load_secret
from orchestrator.bounds import BoundedServer
from orchestrator.config import Config
from orchestrator.editors import WATCHED
from orchestrator.hosts import HostRule
from orchestrator.private import keep_private
from orchestrator.quix import QuixPortal
from orchestrator.secret_adoption import adopt_or_persist
from orchestrator.status import StatusBoard
from orchestrator.web.framing import framing_headers, framing_transform
from orchestrator.web.front_page import FrontPageVisit, OpenNotebookHandler
from orchestrator.web.handlers import (
    STATIC_DIR,
    EventsHandler,
    HealthyHandler,
    LoadingPage,
    LoadingPageHandler,
    ReadyHandler,
    StatusHandler,
)
from orchestrator.web.login import LoginHandler, LogoutHandler
from orchestrator.web.metrics_route import MetricsHandler
from orchestrator.web.panel import panel_transform
from orchestrator.web.restart import RestartHandler
from proxy.precompressed import AssetStore
from proxy.routes import proxy_rules

if TYPE_CHECKING:
    from jobs.head_start import HeadStart
    from orchestrator.early import EarlyResponder

log = logging.getLogger("orchestrator")
access = logging.getLogger("orchestrator.access")

SHUTDOWN_GRACE = 5.0


def make_guard(config: Config, portal: QuixPortal | None) -> Guard:
    """The sign-in cookie is a cross-site one (Secure, SameSite=None, Partitioned) wherever
    another site may frame our pages: in quix mode, and whenever ``--frame-ancestors`` names
    more than this origin (a Lax cookie would never reach us inside such a frame)."""
    verifier = Verifier(config.auth, config.token, portal)
    return Guard(
        config.auth,
        verifier,
        trust_proxy=config.trust_proxy,
        quix_recheck=config.quix_recheck,
        quix_grace=config.quix_grace,
        framed=config.frame_ancestors.strip().lower() not in ("'self'", "'none'"),
        token_generated=config.token_generated,
    )


def make_app(
    config: Config,
    board: StatusBoard,
    actions: Actions,
    guard: Guard,
    assets: AssetStore | None = None,
) -> tornado.web.Application:
    page = LoadingPage(board)
    own: dict[str, object] = {"board": board}
    own_rules: list[tornado.routing.Rule] = [
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/login"),
            LoginHandler,
            {"guard": guard, "portal_origins": ",".join(config.portal_origins)},
        ),
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/logout"), LogoutHandler, {"guard": guard}
        ),
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/restart"), RestartHandler, {"actions": actions}
        ),
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/metrics"),
            MetricsHandler,
            {"public": config.metrics_public},
        ),
        tornado.routing.Rule(tornado.routing.PathMatches(r"/-/healthy"), HealthyHandler, own),
        tornado.routing.Rule(tornado.routing.PathMatches(r"/-/ready"), ReadyHandler, own),
        tornado.routing.Rule(tornado.routing.PathMatches(r"/-/status"), StatusHandler, own),
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/events"),
            EventsHandler,
            {"board": board, "keepalive": config.sse_keepalive},
        ),
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/loading"),
            LoadingPageHandler,
            {"board": board, "page": page},
        ),
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/static/(.*)"),
            tornado.web.StaticFileHandler,
            {"path": str(STATIC_DIR)},
        ),
    ]
    rules: list[tornado.routing.Rule] = [
        # One pattern decides whether a path is ours: marimo's requests, nearly all of them,
        # are not tried against each of our routes. A /-/ path none of them takes falls
        # through to marimo, as before.
        tornado.routing.Rule(tornado.routing.PathMatches(r"/-/.*"), own_rules),
        tornado.routing.Rule(
            FrontPageVisit(config.jobs.notebook_dir, config.open_notebook), OpenNotebookHandler
        ),
        *proxy_rules(
            board.upstream,
            page,
            guard=guard.admit,
            admits_at_once=lambda request: guard.admits_at_once(
                request,
                app.settings["cookie_secret"],  # read at each request: it may be adopted
            ),
            finish_headers=framing_headers(config.frame_ancestors),
            on_finished=lambda request, status: record_request(app, request, status),
            require_server_token=True,  # marimo runs with --no-skew-protection (see there)
            html_transform=(
                panel_transform(config.jobs.marimo_mode) if config.environment_panel else None
            ),
            asset_store=assets,
        ),
    ]
    app = tornado.web.Application(
        rules,
        compress_response=False,
        cookie_secret=load_secret(
            StateLayout(config.jobs.state_dir).session_secret
            if config.jobs.state_dir.is_dir()
            else None
        ),
        guard=guard,
        board=board,
        user_token_of=guard.user_token,
        log_function=log_request,
    )
    app.add_transform(framing_transform(config.frame_ancestors))
    guard.secret = lambda: app.settings["cookie_secret"]  # read at each use: it may be adopted
    if config.jobs.state_dir.is_dir():
        guard.revocations.attach(StateLayout(config.jobs.state_dir).revoked_sessions)
    return app


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's per-request log hook (every request but the proxy's fast path's)."""
    record_request(handler.application, handler.request, handler.get_status())


def record_request(
    app: tornado.web.Application, request: tornado.httputil.HTTPServerRequest, status: int
) -> None:
    """Metrics and the access log, without secrets (a login URL carries a token) and without
    probe noise."""
    metrics = app.settings.get("metrics")
    if metrics is not None:
        metrics.observe_request(request, status)
    if request.path in WATCHED:  # who edits, for notebook sync
        board = app.settings.get("board")
        if board is not None:
            token = app.settings["guard"].token_of_request(request, app.settings["cookie_secret"])
            board.editors.saw(request.path, request.method or "", status, token)
    if request.path in ("/-/healthy", "/-/ready") and status in (200, 503):
        level = logging.DEBUG
    elif status in (401, 429):
        level = logging.DEBUG  # failed sign-ins are summarised by orchestrator/throttle.py
    elif status >= 500:
        level = logging.WARNING
    else:
        level = logging.DEBUG if status < 400 else logging.INFO
    if not access.isEnabledFor(level):
        return  # the hot path: no formatting, no redaction for a line nobody keeps
    access.log(
        level,
        "%d %s %s %.1fms",
        status,
        request.method,
        redact(request.uri or ""),
        1000 * request.request_time(),
    )


async def run(
    config: Config, early: EarlyResponder, head_start: HeadStart | None, boot_id: str
) -> int:
    """The full server on the port ``early`` has been answering probes on, then the jobs."""
    keep_private()  # before anyone can sign in and run code as this user
    board = StatusBoard(boot_id=boot_id)
    portal = QuixPortal(config.quix, yes_ttl=config.quix_recheck) if config.quix else None
    actions = Actions(board, portal)
    board.capabilities["restart_deployment"] = bool(portal and portal.settings.deployment_id)
    guard = make_guard(config, portal)
    assets = AssetStore(write_atomically)
    app = make_app(config, board, actions, guard, assets)
    # Copies live on the state volume (or this run's temporary state folder).
    board.on_state.append(lambda path, persistent: assets.attach(StateLayout(path).asset_cache))
    board.on_marimo.append(lambda serving: assets.resume() if serving else assets.hold())
    board.on_state.append(
        lambda path, persistent: adopt_or_persist(app, path) if persistent else None
    )
    board.on_state.append(
        lambda path, persistent: (
            guard.revocations.attach(StateLayout(path).revoked_sessions) if persistent else None
        )
    )
    server = BoundedServer(
        app,
        xheaders=False,
        max_buffer_size=64 * 1024 * 1024,
        hosts=HostRule(config.host, config.allowed_hosts),
    )
    guard.on_admit = server.trust
    early.hand_over(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    # Imported only now, and in a worker thread: the port is already answering, and the first
    # requests are served while the jobs' and the metrics' modules load.
    for module in ("jobs.runner", "orchestrator.metrics"):
        await loop.run_in_executor(None, importlib.import_module, module)
    from jobs.processes import live_children, terminate_tree_async
    from jobs.runner import Pipeline
    from orchestrator.metrics import Metrics
    from proxy.websocket import WebSocketRelay

    app.settings["metrics"] = Metrics(board, lambda: WebSocketRelay.open_relays)

    pipeline = Pipeline(config.jobs, board, head_start)
    actions.pipeline = pipeline
    background: set[asyncio.Task[None]] = set()
    if config.sync_to_quix and portal is not None:
        from orchestrator.sync import make_sync, run_sync

        def start_sync(path: Path, persistent: bool) -> None:
            actions.sync = make_sync(config, portal, guard, board, path, persistent)
            background.add(asyncio.create_task(run_sync(actions.sync)))

        board.on_state.append(start_sync)
    if config.auth != "none":
        background.add(asyncio.create_task(recheck_sockets(guard), name="recheck-sockets"))
    jobs = asyncio.create_task(pipeline.run(), name="pipeline")
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({jobs, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if jobs in done and jobs.exception() is not None:
        log.error("the startup jobs crashed: %r", jobs.exception())
    if not stop.is_set():
        # The jobs ended (marimo gave up for good): keep serving the status until told to stop.
        await stop.wait()

    log.info("stopping")
    if actions.sync is not None and actions.sync.state.pending:
        from orchestrator.sync import FLUSH_ON_SIGTERM

        left = await actions.sync.flush_now(FLUSH_ON_SIGTERM)
        if left:
            log.warning("not saved to Quix yet, kept on the state volume: %s", ", ".join(left))
    for task in background:
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
    log.info("stopped")
    return 0


async def recheck_sockets(guard: Guard) -> None:
    """Sessions holding WebSockets open (the terminal) end when they expire and, in quix mode,
    when the portal stops accepting their token, like any other."""
    interval = min(30.0, guard.quix_recheck)
    while True:
        await asyncio.sleep(interval)
        try:
            await guard.sweep()
        except Exception as error:  # never takes the server down
            log.error("re-checking open sessions failed: %r", error)
