"""Children that die with the orchestrator, even when it is SIGKILLed (Linux), and inherit none
of its capabilities.

``die_with_parent`` runs in the child between fork and exec (``preexec_fn``), after any change
of user. It also clears the ambient capabilities: an orchestrator given CAP_SETUID to start
marimo as another user (see ``RunAs``) passes it to no child, installers and marimo included.
The kernel sends the signal when the *thread* that forked the child exits, so children are only
ever started from the main thread (the event loop's, or before the loop exists).
"""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
# Resolved once in the parent: the child, between fork and exec, only calls a function pointer
# (loading a library there could deadlock on a lock another thread held at fork time).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL before Linux 4.3
