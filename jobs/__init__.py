"""Background jobs that bring marimo up: state → venv → requirements → marimo.

This package is a leaf: it never imports ``orchestrator`` or ``proxy``. Jobs report through the
:class:`jobs.reporting.Reporter` protocol, which the orchestrator's status board implements.
"""
