"""The two kinds of failure every job distinguishes."""


class JobError(Exception):
    """A job failed; ``str(error)`` is a message for users and must hold no secret."""


class TransientError(JobError):
    """Worth another attempt: connection resets, timeouts, HTTP 5xx, a port race."""


class PermanentError(JobError):
    """Retrying cannot help: a missing package, a bad file, a read-only volume."""


class DiskFullError(PermanentError):
    """The disk filled up (ENOSPC, a quota): retrying at once cannot help, and nothing else is
    wrong. The pipeline installs again by itself once space is free (jobs/free_space.py)."""
