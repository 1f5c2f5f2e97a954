"""The two kinds of failure every job distinguishes.

Every error carries a message for users (``str(error)``: what failed, where, what to do) and,
apart, ``detail``: the tool's own words (an installer's error lines), which pages fold under
"details" instead of repeating them. Neither holds a secret.
"""

from __future__ import annotations


class JobError(Exception):
    """A job failed; ``str(error)`` is a message for users and must hold no secret."""

    def __init__(self, message: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail
        """The failing tool's own words (empty when there are none): shown folded, once."""

    def renamed(self, old: str, new: str) -> JobError:
        """The same error (same class, same detail) with ``old`` replaced by ``new`` in both
        texts (users know their files, not our combined copy of them)."""
        return type(self)(str(self).replace(old, new), self.detail.replace(old, new))


class TransientError(JobError):
    """Worth another attempt: connection resets, timeouts, HTTP 5xx, a port race."""


class PermanentError(JobError):
    """Retrying cannot help: a missing package, a bad file, a read-only volume."""


class DiskFullError(PermanentError):
    """The disk filled up (ENOSPC, a quota): retrying at once cannot help, and nothing else is
    wrong. The pipeline installs again by itself once space is free (jobs/free_space.py)."""
