"""What the probes answer and the framing policy, spelled once.

Both the early responder (orchestrator/early.py, on the standard library while Tornado loads)
and the handlers (orchestrator/web/) answer ``/-/healthy`` and ``/-/ready`` and set the framing
policy; they take the bodies, the ``Retry-After`` and the policy from here, so a platform sees
the same answers before and after the hand-over. Standard library only: this is on the
start-up path.
"""

from __future__ import annotations

from typing import Any

NOT_READY_RETRY_AFTER = "2"
"""Seconds a probe is told to wait while marimo is not proxied yet."""


def healthy(boot_id: str) -> dict[str, Any]:
    """The liveness answer: the process serves requests (``boot_id`` changes on every start)."""
    return {"status": "alive", "boot_id": boot_id}


def readiness(ready: bool, phase: str) -> dict[str, Any]:
    """The readiness answer: 200 with it while marimo is proxied, else 503."""
    return {"ready": ready, "phase": phase}


def frame_policy(frame_ancestors: str) -> str:
    """The ``Content-Security-Policy`` directive saying who may frame our pages."""
    return f"frame-ancestors {frame_ancestors}"
