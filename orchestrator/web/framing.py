"""Who may embed our pages in a frame, applied to every response (ours and marimo's).

In ``quix`` mode the portal shows the deployment in an iframe, so framing is allowed (``*`` by
default, as Quix's own images do, or the configured ancestors); elsewhere only the same origin.
Responses made by Tornado's handlers get it from :func:`framing_transform`; those the proxy's
fast path writes itself (proxy/direct.py) from :func:`framing_headers`: the same edit.
"""

from __future__ import annotations

from collections.abc import Callable

import tornado.httputil
import tornado.web

from orchestrator.probes import frame_policy


def framing_headers(frame_ancestors: str) -> Callable[[tornado.httputil.HTTPHeaders], None]:
    """Edits a response's headers in place to carry the framing policy."""
    policy = frame_policy(frame_ancestors)

    def apply(headers: tornado.httputil.HTTPHeaders) -> None:
        existing = headers.get("Content-Security-Policy")
        if existing is None:
            headers["Content-Security-Policy"] = policy
        elif "frame-ancestors" not in existing:
            headers["Content-Security-Policy"] = f"{existing}; {policy}"
        # X-Frame-Options would contradict the policy (and cannot express a list).
        if "X-Frame-Options" in headers:
            del headers["X-Frame-Options"]
        headers.setdefault("X-Content-Type-Options", "nosniff")

    return apply


def framing_transform(frame_ancestors: str) -> type[tornado.web.OutputTransform]:
    apply = framing_headers(frame_ancestors)

    class FramingTransform(tornado.web.OutputTransform):
        def __init__(self, request: tornado.httputil.HTTPServerRequest) -> None:
            super().__init__(request)

        def transform_first_chunk(
            self,
            status_code: int,
            headers: tornado.httputil.HTTPHeaders,
            chunk: bytes,
            finishing: bool,
        ) -> tuple[int, tornado.httputil.HTTPHeaders, bytes]:
            apply(headers)
            return status_code, headers, chunk

    return FramingTransform
