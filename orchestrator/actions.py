"""What users can ask for (restarts): validated here, then *enqueued* as jobs, never run inline.

The web handler answers 202 at once; progress shows in /-/status and /-/events like any job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from orchestrator.status import StatusBoard

if TYPE_CHECKING:
    from jobs.notebook_sync import NotebookSync
    from jobs.runner import Pipeline
    from orchestrator.quix.portal import QuixPortal

log = logging.getLogger("orchestrator")

Scope = Literal["marimo", "install", "deployment"]
SCOPES: tuple[Scope, ...] = ("marimo", "install", "deployment")


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


class Actions:
    """Every action is a background task.

    ``pipeline`` resolves once the jobs' modules have loaded (a restart asked before is refused);
    ``sync`` gives notebook sync when it is on: a deployment restart pushes its pending edits
    first."""

    def __init__(
        self,
        board: StatusBoard,
        portal: QuixPortal | None,
        pipeline: asyncio.Future[Pipeline],
        sync: Callable[[], NotebookSync | None],
    ) -> None:
        self.board = board
        self.portal = portal
        self._pipeline = pipeline
        self._sync = sync
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pipeline(self) -> Pipeline | None:
        """The jobs' pipeline once its modules have loaded, else None."""
        return self._pipeline.result() if self._pipeline.done() else None

    def _enqueue(
        self, name: str, work: Any, until_ready: bool = False, withdraw: bool = True
    ) -> None:
        """Run ``work``; the notice it announced is withdrawn once it is over (and, with
        ``until_ready``, once marimo answers again)."""

        async def guarded() -> None:
            try:
                await work
                while until_ready and not self.board.ready and not self.board.stopping:
                    if self.board.steps["marimo"].status == "failed":
                        raise RuntimeError(self.board.steps["marimo"].message)
                    await asyncio.sleep(0.2)
                if withdraw:
                    self.board.withdraw_notice()
            except Exception as error:  # reported, never raised into the loop
                self.board.announce(f"{name} failed: {error}")
                log.error("%s failed: %s", name, error)

        task = asyncio.create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def restart(self, scope: str, rebuild: bool, token: str | None) -> Answer:
        if scope not in SCOPES:
            return Answer(
                400, {"error": f"scope must be one of {', '.join(SCOPES)}; got {scope!r}"}
            )
        if scope == "deployment":
            return self._restart_deployment(token)
        pipeline = self._pipeline.result() if self._pipeline.done() else None
        if scope == "marimo":
            if pipeline is None or not pipeline.can_restart_marimo:
                return Answer(409, {"error": "marimo has not been started yet"})
            self.board.announce("Restarting marimo (requested)")
            self._enqueue("restarting marimo", pipeline.restart_marimo(), until_ready=True)
            return Answer(202, {"accepted": True, "scope": scope})
        if pipeline is None or pipeline.layout is None:
            return Answer(409, {"error": "the environment is still being prepared"})
        what = "Rebuilding the venv and reinstalling" if rebuild else "Reinstalling requirements"
        self.board.announce(f"{what} (requested)")
        self._enqueue("reinstall", pipeline.reinstall(rebuild=rebuild))
        return Answer(202, {"accepted": True, "scope": scope, "rebuild": rebuild})

    def _restart_deployment(self, token: str | None) -> Answer:
        portal = self.portal
        if portal is None:
            return Answer(
                409,
                {
                    "error": "restarting the deployment needs Quix: Quix__Portal__Api and "
                    "Quix__Workspace__Id are not set"
                },
            )
        credential = token or portal.settings.sdk_token
        if not credential:
            return Answer(409, {"error": "no Quix token to restart the deployment with"})
        if not portal.settings.deployment_id:
            return Answer(409, {"error": "Quix__Deployment__Id is not set: nothing to restart"})

        async def restart() -> None:
            sync = self._sync()
            if sync is not None and sync.state.pending:
                from orchestrator.quix.sync import FLUSH_BEFORE_RESTART

                self.board.announce(
                    "Saving notebook edits to Quix before the restart "
                    f"(waiting up to {FLUSH_BEFORE_RESTART:.0f} s)"
                )
                left = await sync.flush_now(FLUSH_BEFORE_RESTART)
                if left:
                    log.warning("restarting with edits not yet in Quix: %s", ", ".join(left))
            message = await portal.restart_deployment(credential)
            self.board.announce(f"{message}; this page reloads when the new container is up")

        self.board.announce("Asking Quix to restart this deployment")
        # The notice stays: this container is about to be replaced.
        self._enqueue("restarting the deployment", restart(), withdraw=False)
        return Answer(202, {"accepted": True, "scope": "deployment"})
