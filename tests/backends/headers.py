"""Headers backend: responses whose headers the proxy must pass, or strip, exactly."""

from __future__ import annotations

import json

from tornado.web import Application, RequestHandler

COOKIES = (
    "a=1; Path=/",
    "b=2; HttpOnly; SameSite=Lax",
    "c=3; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/",
)
ETAG = '"v1-abc"'


class CookiesHandler(RequestHandler):
    def get(self) -> None:
        for cookie in COOKIES:
            self.add_header("Set-Cookie", cookie)
        self.finish("cookies")


class HopByHopHandler(RequestHandler):
    """Sends every kind of hop-by-hop header next to end-to-end ones."""

    def get(self) -> None:
        self.set_header("Connection", "X-Custom, X-Other")
        self.set_header("X-Custom", "must not cross")
        self.set_header("X-Other", "must not cross either")
        self.set_header("Keep-Alive", "timeout=99")
        self.set_header("Proxy-Authenticate", "Basic realm=upstream")
        self.set_header("Trailer", "X-Checksum")
        self.set_header("Upgrade", "h2c")
        self.set_header("X-Kept", "yes")
        self.set_header("Marimo-Server-Token", "skew-123")
        self.finish("hop")


class EtagHandler(RequestHandler):
    def get(self) -> None:
        self.set_header("ETag", ETAG)
        self.set_header("Content-Type", "text/javascript")
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        self.finish("console.log('versioned');")


class BareHandler(RequestHandler):
    """A response with no Content-Type and no Server header at all."""

    def get(self) -> None:
        self.clear_header("Content-Type")
        self.clear_header("Server")
        self.finish(b"\x00\x01bare")

    def compute_etag(self) -> None:
        return None


class AuthHandler(RequestHandler):
    """Says whether the expected Authorization arrived, without ever echoing it."""

    def initialize(self, expected: str) -> None:
        self.expected = expected

    def get(self) -> None:
        seen = self.request.headers.get_list("Authorization")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"authorized": seen == [self.expected], "count": len(seen)}))


class StatusHandler(RequestHandler):
    """Answers with the status in the path: marimo's own errors and redirects."""

    def get(self, code: str) -> None:
        self.set_status(int(code))
        if int(code) in (301, 302, 303, 307, 308):
            self.set_header("Location", "/auth/login?next=%2Fnb")
        if int(code) in (204, 304):
            self.finish()
            return
        self.finish(f"status {code}")


def make_app(expected_authorization: str = "") -> Application:
    return Application(
        [
            (r"/cookies", CookiesHandler),
            (r"/hop", HopByHopHandler),
            (r"/etag", EtagHandler),
            (r"/bare", BareHandler),
            (r"/auth", AuthHandler, {"expected": expected_authorization}),
            (r"/status/(\d+)", StatusHandler),
        ]
    )
