"""The web side of one orchestrator, wired: the portal client, the actions, the signing secret,
the guard, the Tornado application and the bounded server in front of it.

One function builds it for the process (orchestrator/server.py's ``Server.startup``) and for
the tests that serve the same application in-process (tests/support/in_process.py), so the two
can never be wired differently.

Invariants: every collaborator is given at construction (the one cycle, server → app → guard →
server, is closed by a closure read only by requests, so once the server exists); the secret,
the revocations and the asset cache follow the state folder once the board learns it; nothing
here binds a socket or starts a task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from jobs.layout import StateLayout

if TYPE_CHECKING:
    import asyncio

    import tornado.web

    from jobs.notebook_sync import NotebookSync
    from jobs.runner import Pipeline
    from orchestrator.config import Config
    from orchestrator.metrics import Metrics
    from orchestrator.quix.portal import QuixPortal
    from orchestrator.status import StatusBoard
    from orchestrator.trust.auth import Guard
    from orchestrator.trust.bounds import BoundedServer
    from proxy.precompressed import AssetStore


class WebSide(NamedTuple):
    portal: QuixPortal | None
    guard: Guard
    app: tornado.web.Application
    server: BoundedServer
    assets: AssetStore


def build_web_side(
    config: Config,
    board: StatusBoard,
    pipeline: asyncio.Future[Pipeline],
    metrics: asyncio.Future[Metrics],
    sync: Callable[[], NotebookSync | None],
) -> WebSide:
    """The objects of the web side, each given its collaborators; the pipeline and the metrics
    arrive later, through their futures (the jobs' modules load after Tornado has the port)."""
    from jobs.atomic import write_atomically
    from orchestrator.actions import Actions
    from orchestrator.app import make_app, make_guard
    from orchestrator.quix.portal import QuixPortal
    from orchestrator.trust.bounds import BoundedServer
    from orchestrator.trust.hosts import HostRule
    from orchestrator.trust.secret_adoption import adopt_or_persist
    from orchestrator.trust.secret_rotation import rotate
    from orchestrator.trust.signing import SigningSecret
    from proxy.precompressed import AssetStore

    portal = QuixPortal(config.quix, yes_ttl=config.quix_recheck) if config.quix else None
    board.capabilities["restart_deployment"] = bool(portal and portal.settings.deployment_id)
    actions = Actions(board, portal, pipeline, sync)
    layout = StateLayout(config.jobs.state_dir)
    secret = SigningSecret.load(layout.session_secret if config.jobs.state_dir.is_dir() else None)
    guard = make_guard(
        config,
        portal,
        # The signing secret in force: adopted from the state once it is known, rotated when a
        # logout cannot be recorded.
        secret=secret,
        # Read at each use, and only by requests, so once the server below exists: it counts
        # connections until one of their requests is admitted.
        on_admit=lambda request: server.trust(request),
        # A logout that cannot be recorded ends every session instead, for good.
        rotate=lambda: rotate(secret, layout.session_secret),
    )
    assets = AssetStore(write_atomically)
    app = make_app(config, board, actions, guard, metrics, assets)
    # Compressed copies of marimo's assets live on the state volume (or this run's temporary
    # state folder), and are made only while marimo serves.
    board.on_state.append(lambda path, persistent: assets.attach(StateLayout(path).asset_cache))
    board.on_marimo.append(lambda serving: assets.resume() if serving else assets.hold())
    board.on_state.append(
        lambda path, persistent: adopt_or_persist(secret, path) if persistent else None
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
    return WebSide(portal, guard, app, server, assets)
