"""Pauses between tries for loops that are not one call retried (a supervisor counting crashes,
a sync deferring its next push, a replica waiting for a lock or for another's environment),
computed by tenacity's wait strategies: the same arithmetic as the steps' retry policies
(jobs/retry.py) and the portal's calls (orchestrator/quix/portal.py).
"""

from __future__ import annotations

from tenacity import RetryCallState, Retrying
from tenacity.wait import wait_base


def pause(wait: wait_base, attempt: int) -> float:
    """The pause ``wait`` gives after the failed try number ``attempt`` (1 for the first)."""
    state = RetryCallState(Retrying(wait=wait), None, (), {})
    state.attempt_number = attempt
    return wait(state)
