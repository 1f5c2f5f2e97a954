"""Holding what would start a kernel until the Python environment is complete.

After a container replacement the environment is restored from the volume's snapshot while
marimo already serves its editor from the image (jobs/local_env.py, "serving while
restoring"). A kernel started then would import from a half-restored environment, and a package
operation would act on it. So the requests that start kernels or touch packages wait here until
the environment is complete: every WebSocket upgrade (a notebook's session, a terminal, the
language server) and marimo's package API (``/api/packages/…``). Everything else (the editor's
page, its assets, the file list) passes at once.

Invariants:
- open unless the pipeline closed it: an orchestrator that does not restore holds nothing;
- only requests past sign-in are held (the proxy's guard runs first), each at most ``limit``
  seconds, after which it gets the usual "not ready" answer (503 with ``Retry-After``): never
  a 502, never an unbounded wait.
"""

from __future__ import annotations

import asyncio

from tornado.httputil import HTTPServerRequest

HELD_PATHS = ("/api/packages/",)
"""marimo's HTTP routes that use the environment itself (listing, adding, removing packages)."""


class KernelHold:
    """Open (nothing held) or closed (kernel-starting requests wait until it opens)."""

    __slots__ = ("_open", "limit")

    def __init__(self, limit: float = 120.0) -> None:
        self.limit = limit
        self._open = asyncio.Event()
        self._open.set()

    @property
    def held(self) -> bool:
        return not self._open.is_set()

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    @staticmethod
    def holds_http(request: HTTPServerRequest) -> bool:
        """Does this plain HTTP request use the packages? (WebSocket upgrades all wait.)"""
        return request.path.startswith(HELD_PATHS)

    async def wait(self) -> bool:
        """True once open (at once when it is); False after ``limit`` seconds closed."""
        if self._open.is_set():
            return True
        try:
            await asyncio.wait_for(self._open.wait(), self.limit)
        except TimeoutError:
            return False
        return True
