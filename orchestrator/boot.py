"""From a bound port to the full server: probes are answered at once (orchestrator/early.py)
while Tornado and the web modules load in a worker thread; then Tornado takes the port over.

Invariant: from the moment the port is bound until the process stops, a liveness probe is
answered; no connection accepted before the hand-over is dropped.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from socket import socket
from typing import TYPE_CHECKING

from orchestrator import logs
from orchestrator.config import Config
from orchestrator.early import EarlyResponder

if TYPE_CHECKING:
    from jobs.head_start import HeadStart

log = logging.getLogger("orchestrator")


def serve(config: Config, sockets: list[socket], head_start: HeadStart | None) -> int:
    """Serve on ``sockets`` (already listening, see orchestrator/listen.py) until told to stop."""
    logs.configure(config.log_level, config.log_format)
    return asyncio.run(_serve(config, sockets, head_start))


def announce(config: Config) -> None:
    """Where to go, once the port answers."""
    # The address as given (a cookie set for 127.0.0.1 is not sent to localhost); only the
    # wildcard addresses, which no browser can open, become localhost.
    shown = "localhost" if config.host in ("0.0.0.0", "::") else config.host
    if ":" in shown:
        shown = f"[{shown}]"  # an IPv6 address in a URL
    log.info(
        "listening on http://%s:%s/ (notebooks in %s)", shown, config.port, config.jobs.notebook_dir
    )
    print(f"marimo-orchestrator is serving http://{shown}:{config.port}/", flush=True)
    if config.auth == "token" and config.token_generated:
        # Printed once, to the terminal only (never through logging), as Jupyter does.
        print(
            f"Sign in with: http://{shown}:{config.port}/-/login?token={config.token}", flush=True
        )
    if config.auth == "none" and config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("--auth none on %s: anyone who can reach this port can use marimo", config.host)


async def _serve(config: Config, sockets: list[socket], head_start: HeadStart | None) -> int:
    boot_id = os.urandom(16).hex()
    early = EarlyResponder(sockets, boot_id, config.frame_ancestors)
    announce(config)
    loop = asyncio.get_running_loop()
    app = await loop.run_in_executor(None, importlib.import_module, "orchestrator.app")
    result: int = await app.run(config, early, head_start, boot_id)
    return result
