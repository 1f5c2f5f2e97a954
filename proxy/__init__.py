"""Reverse proxy from the public port to marimo: HTTP (streaming, keep-alive) and WebSockets.

This package is a leaf: it never imports ``orchestrator`` or ``jobs``. The wiring hands it a
callable that answers "where is marimo right now, or not ready" (:class:`proxy.upstream.Upstream`)
and a callable that renders the page shown while marimo is not ready.
"""
