"""Notebook sync wired to Quix: whose token a push carries, what is never watched.

A push carries the token of the person who edits (``board.editors``: the latest saver, else the
latest kernel WebSocket), else the latest person who signed in; the service's own
``Quix__Sdk__Token`` only while nobody has signed in since the start. A refused token is never
replaced by another person's: the edit stays pending until the editor signs in again.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.layout import StateLayout
from orchestrator.quix.editors import identity

if TYPE_CHECKING:
    from jobs.notebook_sync import NotebookSync
    from orchestrator.config import Config
    from orchestrator.quix.portal import QuixPortal
    from orchestrator.status import StatusBoard
    from orchestrator.trust.auth import Guard

log = logging.getLogger("orchestrator")

FLUSH_BEFORE_RESTART = 10.0
"""Seconds a deployment restart waits for pending edits to reach Quix."""
FLUSH_ON_SIGTERM = 3.0
"""Seconds of the 10 s SIGTERM budget spent pushing pending edits."""


def make_sync(
    config: Config,
    portal: QuixPortal,
    guard: Guard,
    board: StatusBoard,
    state: Path,
    persistent: bool,
) -> NotebookSync:
    from jobs.notebook_sync import CredentialRefused, FileRefused, NotebookSync
    from orchestrator.quix.portal import PortalRefused

    def token() -> str | None:
        return board.editors.token() or guard.latest_user_token or portal.settings.sdk_token

    async def push(path: str, text: str) -> None:
        credential = token()
        if not credential:
            raise CredentialRefused("nobody has signed in to Quix yet")
        try:
            await portal.push_file(credential, path, text)
        except PermissionError as error:
            raise CredentialRefused(str(error)) from None
        except PortalRefused as error:
            raise FileRefused(str(error)) from None

    async def delete(path: str) -> None:
        credential = token()
        if not credential:
            raise CredentialRefused("nobody has signed in to Quix yet")
        try:
            await portal.delete_file(credential, path)
        except PermissionError as error:
            raise CredentialRefused(str(error)) from None
        except PortalRefused as error:
            raise FileRefused(str(error)) from None

    layout = StateLayout(state)
    return NotebookSync(
        config.jobs.notebook_dir,
        layout.sync_state,
        layout.sync_blobs,
        push,
        board.sync_changed,
        delete=delete if portal.settings.delete_call else None,
        excluded=(config.jobs.state_dir, state),
        credential=lambda: identity(token()),
        durable=persistent,
        debounce=config.sync_debounce,
    )


async def run_sync(sync: NotebookSync) -> None:
    try:
        await sync.run()
    except asyncio.CancelledError:
        raise
    except Exception as error:  # never takes the server down
        log.error("saving notebooks to Quix stopped: %s", error)
