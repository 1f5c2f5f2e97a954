"""marimo-orchestrator: composes the jobs, the status board, the web routes and the proxy."""

__version__ = "0.1.0"
