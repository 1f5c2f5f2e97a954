"""Children that die with the orchestrator, even when it is SIGKILLed (Linux).

``die_with_parent`` runs in the child between fork and exec (``preexec_fn``). The kernel sends
the signal when the *thread* that forked the child exits, so children are only ever started from
the main thread (the event loop's, or before the loop exists).
"""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1
# Resolved once in the parent: the child, between fork and exec, only calls a function pointer
# (loading a library there could deadlock on a lock another thread held at fork time).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
