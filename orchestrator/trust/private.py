"""Keep this process's memory and environment from other processes of its own user.

marimo, and so every notebook cell and terminal, runs as the orchestrator's user (in the image as
outside it). ``prctl(PR_SET_DUMPABLE, 0)`` is what ssh-agent and gpg-agent do for the same
reason: the kernel then refuses other processes without ``CAP_SYS_PTRACE`` access to
``/proc/<pid>/environ``, ``/proc/<pid>/mem``, ``ptrace`` and ``process_vm_readv`` on this
process. Children are unaffected (``execve`` makes them dumpable again).

Invariant: called before any user can sign in (the full server's start); a platform without
``prctl`` (not Linux) is left as it is, with one line in the log.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("orchestrator")

PR_SET_DUMPABLE = 4


def keep_private() -> bool:
    """True when the kernel now keeps this process's memory and environment to itself."""
    if not sys.platform.startswith("linux"):
        log.warning("cannot hide the orchestrator's memory from notebooks on %s", sys.platform)
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
    except (OSError, AttributeError) as error:
        log.warning("cannot hide the orchestrator's memory from notebooks: %s", error)
        return False
    return True
