"""Handlers for the orchestrator's own routes under ``/-/``: they read the board, nothing more."""
