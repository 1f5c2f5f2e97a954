"""Who may embed our pages in a frame, applied to every response (ours and marimo's).

In ``quix`` mode the portal shows the deployment in an iframe, so framing is allowed (``*`` by
default, as Quix's own images do, or the configured ancestors); elsewhere only the same origin.
"""

from __future__ import annotations

import tornado.httputil
import tornado.web


def framing_transform(frame_ancestors: str) -> type[tornado.web.OutputTransform]:
    policy = f"frame-ancestors {frame_ancestors}"

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
            existing = headers.get("Content-Security-Policy")
            if existing is None:
                headers["Content-Security-Policy"] = policy
            elif "frame-ancestors" not in existing:
                headers["Content-Security-Policy"] = f"{existing}; {policy}"
            # X-Frame-Options would contradict the policy (and cannot express a list).
            if "X-Frame-Options" in headers:
                del headers["X-Frame-Options"]
            headers.setdefault("X-Content-Type-Options", "nosniff")
            return status_code, headers, chunk

    return FramingTransform
