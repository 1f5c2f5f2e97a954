"""The two kinds of failure every job distinguishes."""


class JobError(Exception):
    """A job failed; ``str(error)`` is a message for users and must hold no secret."""


class TransientError(JobError):
    """Worth another attempt: connection resets, timeouts, HTTP 5xx, a port race."""


class PermanentError(JobError):
    """Retrying cannot help: a missing package, a bad file, a read-only volume."""
